import numpy as np
import pytest

from ccdseg.errors import ConfigError
from ccdseg.nn.normalize import DEFAULT_PARAMS, normalization_stats, normalize, validate_params


def raw_image(seed=0, shape=(120, 160), noise=2.0):
    """Image in electrons-ish units: Gaussian noise plus a few bright blobs."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, noise, shape)
    for y, x in rng.integers(5, min(shape) - 5, size=(10, 2)):
        image[y - 1:y + 2, x - 1:x + 2] += rng.uniform(20, 500)
    return image


def test_offset_and_gain_invariance():
    image = raw_image()
    reference = normalize(image)
    assert reference.dtype == np.float32 and reference.shape == image.shape
    np.testing.assert_allclose(normalize(image + 4.0e4), reference, atol=1e-4)
    np.testing.assert_allclose(normalize(image * 7.3 - 38.0), reference, atol=1e-4)
    np.testing.assert_allclose(normalize((image * 250.0 + 1.2e5).astype(np.float32)), reference, atol=2e-3)


def test_noise_maps_to_unit_scale():
    image = raw_image(noise=5.0) + 1000.0
    pedestal, sigma = normalization_stats(image)
    np.testing.assert_allclose(pedestal, 1000.0, atol=1.5)
    assert sigma == pytest.approx(5.0, rel=0.05)
    out = normalize(image, stats=(pedestal, sigma))
    # noise pixels stay in the linear part: their spread is 1 / asinh_scale
    assert np.median(np.abs(out)) * 1.4826 == pytest.approx(1.0 / DEFAULT_PARAMS["asinh_scale"], rel=0.06)


def test_drifting_pedestal_is_removed():
    image = raw_image(seed=1)
    rows = np.arange(image.shape[0])
    drift = 50.0 + 0.8 * rows + 10.0 * np.sin(rows / 40.0)
    out = normalize(image + drift[:, None])
    row_means = np.median(out, axis=1)
    assert np.max(np.abs(row_means)) < 0.1
    np.testing.assert_allclose(out, normalize(image), atol=0.1)


def test_full_hot_row_stays_visible():
    image = raw_image(seed=2)
    image[60] += 30.0  # 15 sigma along the whole row
    out = normalize(image)
    expected = np.arcsinh(15.0 / DEFAULT_PARAMS["asinh_scale"])
    assert np.median(out[60]) == pytest.approx(expected, rel=0.1)
    assert np.max(np.abs(np.median(out[55:60], axis=1))) < 0.1


def test_nonfinite_pixels_are_zero_and_do_not_move_stats():
    image = raw_image(seed=3)
    bad = image.copy()
    bad[10, 10:20] = np.nan
    bad[50, 5] = np.inf
    bad[70, 7] = -np.inf
    out = normalize(bad)
    assert np.all(np.isfinite(out))
    assert out[10, 10:20].tolist() == [0.0] * 10 and out[50, 5] == 0 and out[70, 7] == 0
    ped_ref, sigma_ref = normalization_stats(image)
    ped, sigma = normalization_stats(bad)
    np.testing.assert_allclose(ped, ped_ref, atol=0.1)
    assert sigma == pytest.approx(sigma_ref, rel=0.01)
    good = np.isfinite(bad)
    np.testing.assert_allclose(out[good], normalize(image)[good], atol=0.03)


def test_constant_and_empty_noise_images_are_finite():
    for value in (0.0, -38.0, 65535.0):
        out = normalize(np.full((32, 40), value))
        assert np.all(out == 0.0)
    spike = np.full((32, 40), 100.0)
    spike[5, 5] = 200.0
    out = normalize(spike)
    assert np.all(np.isfinite(out)) and out[5, 5] > 2 and np.count_nonzero(out) == 1
    assert np.all(normalize(np.full((8, 8), np.nan)) == 0.0)


def test_tile_with_whole_image_stats_matches_whole_image():
    image = raw_image(seed=4) + np.linspace(0, 40, 120)[:, None]
    stats = normalization_stats(image)
    whole = normalize(image, stats=stats)
    tile = normalize(image[32:96, 64:128], stats=(stats.pedestal[32:96], stats.sigma))
    np.testing.assert_array_equal(tile, whole[32:96, 64:128])
    with pytest.raises(ValueError, match="one value per image row"):
        normalize(image[:10], stats=stats)


def test_params_are_validated():
    assert validate_params() == DEFAULT_PARAMS
    assert validate_params({"asinh_scale": 1})["asinh_scale"] == 1.0
    with pytest.raises(ConfigError, match="asinh_scale"):
        validate_params({"asinh_scale": 0})
    with pytest.raises(ConfigError, match="row_window"):
        validate_params({"row_window": 2.5})
    with pytest.raises(ConfigError, match="'rows'"):
        validate_params({"rows": 3})
    # asinh_scale only rescales the argument of the asinh
    image = raw_image(seed=5)
    linear = np.sinh(normalize(image).astype(np.float64)) * DEFAULT_PARAMS["asinh_scale"]
    np.testing.assert_allclose(normalize(image, {"asinh_scale": 1.0}), np.arcsinh(linear), rtol=1e-5, atol=1e-5)
