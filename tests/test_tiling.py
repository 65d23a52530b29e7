import itertools

import numpy as np
import pytest

from ccdseg.errors import ConfigError
from ccdseg.infer.tiling import blend, gaussian_weights, pad_image, tile_grid


def _identity_outputs(image, grid):
    """Tile outputs of an 'identity network': two channels, the tile itself and its negative."""
    padded = pad_image(image, grid)
    th, tw = grid.tile_shape
    for y0, x0 in grid.starts:
        tile = padded[y0:y0 + th, x0:x0 + tw]
        yield (y0, x0), np.stack([tile, -tile])


@pytest.mark.parametrize("shape", [(5, 7), (1, 1), (300, 517), (64, 64), (65, 200), (600, 131)])
def test_identity_network_is_reassembled_exactly(shape):
    rng = np.random.default_rng(1)
    image = rng.normal(100.0, 5.0, shape).astype(np.float32)
    grid = tile_grid(shape, tile_size=64, overlap=16, multiple=8)
    out = blend(_identity_outputs(image, grid), grid, channels=2)
    assert out.shape == (2, *shape) and out.dtype == np.float32
    # a weighted mean of identical values: equal up to float32 rounding of the weights
    np.testing.assert_allclose(out[0], image, rtol=2e-6, atol=0)
    np.testing.assert_allclose(out[1], -image, rtol=2e-6, atol=0)


@pytest.mark.parametrize("shape", [(5, 7), (300, 517)])
def test_one_hot_identity_gives_exact_labels(shape):
    labels = np.random.default_rng(2).integers(0, 4, shape).astype(np.uint8)
    grid = tile_grid(shape, tile_size=64, overlap=16, multiple=8)
    padded = pad_image(labels, grid)
    th, tw = grid.tile_shape
    outputs = (((y0, x0), np.eye(4, dtype=np.float32)[padded[y0:y0 + th, x0:x0 + tw]].transpose(2, 0, 1))
               for y0, x0 in grid.starts)
    probabilities = blend(outputs, grid, channels=4)
    np.testing.assert_array_equal(np.argmax(probabilities, axis=0), labels)
    np.testing.assert_allclose(probabilities.max(axis=0), 1.0, rtol=2e-6)


def test_grid_covers_the_image_with_the_requested_overlap():
    grid = tile_grid((300, 517), tile_size=60, overlap=16, multiple=8)
    assert grid.tile_shape == (64, 64)  # rounded up to the multiple
    assert grid.padded_shape == (300, 517)
    for starts, n in ((grid.rows, 300), (grid.cols, 517)):
        assert starts[0] == 0 and starts[-1] == n - 64
        assert all(0 < b - a <= 64 - 16 for a, b in itertools.pairwise(starts))
    assert grid.rows[:3] == (0, 48, 96)
    assert len(grid) == len(grid.rows) * len(grid.cols) == len(grid.starts)


def test_small_images_get_one_padded_tile():
    grid = tile_grid((5, 7), tile_size=256, overlap=64, multiple=8)
    assert grid.tile_shape == (8, 8) and grid.padded_shape == (8, 8) and grid.starts == [(0, 0)]
    image = np.arange(35, dtype=np.float32).reshape(5, 7)
    padded = pad_image(image, grid)
    np.testing.assert_array_equal(padded[:5, :7], image)
    np.testing.assert_array_equal(padded[5:8, :7], image[4:1:-1])  # mirror including the edge row
    tiny = tile_grid((1, 1), tile_size=256, overlap=0, multiple=16)
    np.testing.assert_array_equal(pad_image(np.array([[3.0]]), tiny), np.full((16, 16), 3.0))
    assert pad_image(image, tile_grid((5, 7), tile_size=4, overlap=1)) is image


def test_gaussian_weights():
    w = gaussian_weights(256)
    assert w.dtype == np.float32 and w.shape == (256,)
    np.testing.assert_allclose(w, w[::-1])
    assert w[127] == w[128] == w.max() and w.max() == pytest.approx(1.0, abs=2e-4)
    assert w[0] == pytest.approx(np.exp(-0.5 * (127.5 / 32) ** 2), rel=1e-5)


def test_nearer_tile_centre_dominates():
    grid = tile_grid((1, 112), tile_size=64, overlap=16, multiple=1)
    assert grid.cols == (0, 48)
    outputs = [((0, x0), np.full((1, 1, 64), float(i), dtype=np.float32)) for i, (_, x0) in enumerate(grid.starts)]
    blended = blend(outputs, grid, channels=1)[0, 0]
    assert blended[20] < 1e-3 and blended[90] > 1 - 1e-3  # inside one tile only or far from the other's centre
    # the tile centres are 31.5 and 79.5: pixels 55 and 56 are mirror images about the middle
    assert blended[55] < 0.5 < blended[56] and blended[55] + blended[56] == pytest.approx(1.0, abs=1e-6)
    assert np.all(np.diff(blended[48:64]) > 0)


@pytest.mark.parametrize("kwargs", [{"overlap": 64}, {"overlap": -1}, {"tile_size": 0}])
def test_invalid_grid_options(kwargs):
    with pytest.raises(ConfigError):
        tile_grid((100, 100), **{"tile_size": 64, "overlap": 8, **kwargs})
    with pytest.raises(ConfigError):
        tile_grid((0, 10))
