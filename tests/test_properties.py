"""Properties that hold for any input: tiling, normalisation, catalogue charge, label shapes."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from ccdseg.calib.background import row_pedestal
from ccdseg.classes import CLUSTER, N_CLASSES
from ccdseg.infer.predict import segment
from ccdseg.infer.tiling import blend, pad_image, tile_grid
from ccdseg.measure.catalog import find_clusters
from ccdseg.nn.model import build_model, save_model
from ccdseg.nn.normalize import normalize

FAST = settings(max_examples=30, deadline=None)
shapes = st.tuples(st.integers(1, 90), st.integers(1, 90))
seeds = st.integers(0, 2**32 - 1)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    torch.manual_seed(5)
    tiny = {"depth": 2, "base_width": 4, "max_width": 8}
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(path, build_model(tiny), tiny, None)
    return path


def _noise_image(shape, seed, pedestal=1000.0, noise=3.0):
    rng = np.random.default_rng(seed)
    image = rng.normal(pedestal, noise, shape)
    image[rng.random(shape) < 0.02] += rng.uniform(20, 5000)
    return image


@FAST
@given(shape=shapes, tile=st.sampled_from([4, 8, 16, 32]), overlap_share=st.floats(0, 0.9),
       multiple=st.sampled_from([1, 2, 4]), seed=seeds)
def test_tiling_then_blending_is_the_identity(shape, tile, overlap_share, multiple, seed):
    image = np.random.default_rng(seed).normal(0.0, 1.0, shape).astype(np.float32)
    size = -(-tile // multiple) * multiple
    grid = tile_grid(shape, tile, int(overlap_share * size), multiple)
    th, tw = grid.tile_shape
    assert th % multiple == 0 and tw % multiple == 0
    padded = pad_image(image, grid)
    assert padded.shape == grid.padded_shape and np.array_equal(padded[:shape[0], :shape[1]], image)
    # every pixel of the padded image lies in a tile, and every tile lies inside it
    covered = np.zeros(grid.padded_shape, dtype=bool)
    for y0, x0 in grid.starts:
        assert y0 + th <= grid.padded_shape[0] and x0 + tw <= grid.padded_shape[1]
        covered[y0:y0 + th, x0:x0 + tw] = True
    assert covered.all()
    tiles = ((start, padded[None, start[0]:start[0] + th, start[1]:start[1] + tw]) for start in grid.starts)
    np.testing.assert_allclose(blend(tiles, grid, 1)[0], image, rtol=1e-5, atol=1e-5)


@FAST
@given(shape=st.tuples(st.integers(2, 60), st.integers(2, 60)), seed=seeds,
       offset=st.floats(-2e4, 2e4), gain=st.floats(0.05, 200.0))
def test_normalisation_ignores_pedestal_and_gain(shape, seed, offset, gain):
    image = _noise_image(shape, seed)
    reference = normalize(image)
    np.testing.assert_allclose(normalize(image + offset), reference, atol=2e-4)
    np.testing.assert_allclose(normalize(image * gain), reference, atol=2e-4)
    np.testing.assert_allclose(normalize((image + offset) * gain), reference, atol=2e-4)


@FAST
@given(shape=st.tuples(st.integers(1, 40), st.integers(1, 40)), seed=seeds, connectivity=st.sampled_from([1, 2]),
       scalar_pedestal=st.booleans())
def test_catalogue_conserves_charge(shape, seed, connectivity, scalar_pedestal):
    rng = np.random.default_rng(seed)
    image = _noise_image(shape, seed)
    image[rng.random(shape) < 0.05] = np.nan  # NaN pixels count as zero charge
    labels = rng.integers(0, N_CLASSES, shape).astype(np.uint8)
    pedestal = 990.0 if scalar_pedestal else None
    table = find_clusters(image, labels, gain=1.7, pedestal=pedestal, connectivity=connectivity)
    residual = image - (pedestal if scalar_pedestal else row_pedestal(image)[:, None])
    # a component whose total charge is not positive is not a cluster
    components, n = ndimage.label(labels == CLUSTER, structure=ndimage.generate_binary_structure(2, connectivity))
    charges = ndimage.sum_labels(np.nan_to_num(residual), components, np.arange(1, n + 1))
    sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
    assert table["charge_adu"].sum() == pytest.approx(charges[charges > 0].sum(), rel=1e-9, abs=1e-6)
    assert table["npix"].sum() == sizes[charges > 0].sum()
    np.testing.assert_allclose(table["charge_e"], table["charge_adu"] / 1.7)


@settings(max_examples=20, deadline=None)
@given(shape=st.tuples(st.integers(1, 70), st.integers(1, 70)), seed=seeds,
       precision=st.sampled_from(["fp32", "bf16"]), nan_share=st.sampled_from([0.0, 0.1, 1.0]))
def test_segment_labels_have_the_input_shape(model_path, shape, seed, precision, nan_share):
    image = _noise_image(shape, seed)
    image[np.random.default_rng(seed).random(shape) < nan_share] = np.nan
    labels, probabilities = segment(image, model=model_path, tile_size=32, precision=precision)
    assert labels.shape == shape and labels.dtype == np.uint8
    assert set(np.unique(labels)) <= set(range(N_CLASSES))
    assert probabilities.shape == (N_CLASSES, *shape)
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-4)

