import os

import numpy as np
import pytest
import torch

from ccdseg.classes import BACKGROUND, CLUSTER, N_CLASSES
from ccdseg.errors import ConfigError, ModelFileError
from ccdseg.infer import predict
from ccdseg.infer.predict import get_model, segment
from ccdseg.nn.normalize import NormalizationStats


def _frame(shape, seed=0):
    """Noise around a pedestal of 1000 ADU, with bright blobs the network reacts to."""
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 3.0, shape)
    ys, xs = rng.integers(0, shape[0], 40), rng.integers(0, shape[1], 40)
    image[ys, xs] += rng.uniform(20, 500, 40)
    return image.astype(np.float32)


@pytest.mark.parametrize("shape", [(5, 7), (300, 517), (64, 64)])
def test_labels_have_the_input_shape(tiny_model, shape):
    labels, probabilities = segment(_frame(shape), tiny_model, tile_size=64, overlap=16)
    assert labels.shape == shape and labels.dtype == np.uint8
    assert probabilities.shape == (N_CLASSES, *shape) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(labels, np.argmax(probabilities, axis=0))
    if shape == (5, 7):
        assert segment(_frame(shape), tiny_model, tile_size=64, return_probabilities=False)[1] is None


def test_integer_big_endian_input_equals_float(tiny_model):
    image = np.round(_frame((80, 90))).astype(">i2")
    a = segment(image, tiny_model, tile_size=64, precision="fp32")
    b = segment(image.astype(np.float32), tiny_model, tile_size=64, precision="fp32")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_non_finite_pixels_are_background(tiny_model):
    image = _frame((100, 120))
    image[10:20, 30:40] = np.nan
    image[50, :] = np.inf
    labels, probabilities = segment(image, tiny_model, tile_size=64)
    bad = ~np.isfinite(image)
    assert np.all(labels[bad] == BACKGROUND)
    np.testing.assert_array_equal(probabilities[:, bad], np.eye(N_CLASSES)[BACKGROUND][:, None].repeat(bad.sum(), 1))
    assert np.all(np.isfinite(probabilities))


def test_shift_by_tile_strides_gives_the_shifted_prediction(tiny_model, monkeypatch):
    # with the whole-image statistics held fixed, tiles of the cropped image are tiles of the
    # full image: away from the new top-left border (one tile) the outputs are identical
    monkeypatch.setattr(predict, "normalization_stats",
                        lambda image, params: NormalizationStats(np.full(image.shape[0], 1000.0), 3.0))
    image = _frame((300, 340), seed=3)
    stride, k = 64 - 16, 2
    full = segment(image, tiny_model, tile_size=64, overlap=16, batch_size=1, precision="fp32")
    shifted = segment(image[k * stride:, k * stride:], tiny_model, tile_size=64, overlap=16, batch_size=1,
                      precision="fp32")
    inner = (slice(64, None), slice(64, None))
    np.testing.assert_array_equal(shifted[1][(slice(None), *inner)],
                                  full[1][:, k * stride:, k * stride:][(slice(None), *inner)])
    np.testing.assert_array_equal(shifted[0][inner], full[0][k * stride:, k * stride:][inner])


def test_arbitrary_shift_changes_little(tiny_model):
    image = _frame((300, 340), seed=4)
    dy, dx = 13, 29
    full = segment(image, tiny_model, tile_size=64, overlap=16, precision="fp32")
    shifted = segment(image[dy:, dx:], tiny_model, tile_size=64, overlap=16, precision="fp32")
    inner = (slice(32, -32), slice(32, -32))
    a, b = full[1][:, dy:, dx:][(slice(None), *inner)], shifted[1][(slice(None), *inner)]
    assert np.abs(a - b).max() < 0.05
    assert np.mean(full[0][dy:, dx:][inner] == shifted[0][inner]) > 0.99


def test_bf16_keeps_the_labels(tiny_model):
    image = _frame((200, 200), seed=5)
    fp32 = segment(image, tiny_model, tile_size=64, precision="fp32")
    bf16 = segment(image, tiny_model, tile_size=64, precision="bf16")
    assert np.mean(fp32[0] == bf16[0]) > 0.99
    assert np.abs(fp32[1] - bf16[1]).max() < 0.05


def test_models_are_loaded_once_per_file_version(tiny_model, tmp_path):
    assert get_model(tiny_model) is get_model(str(tiny_model))
    copy = tmp_path / "copy.pt"
    copy.write_bytes(tiny_model.read_bytes())
    first = get_model(copy)
    os.utime(copy, ns=(1, 1))
    assert get_model(copy) is not first
    loaded = get_model(tiny_model)
    assert get_model(loaded) is loaded
    assert loaded.net.encoder[0][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_errors(tiny_model, tmp_path):
    with pytest.raises(ModelFileError, match="missing.pt"):
        segment(np.zeros((8, 8)), tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="precision"):
        segment(np.zeros((8, 8)), tiny_model, precision="fp16")
    with pytest.raises(ConfigError, match="2-D"):
        segment(np.zeros((2, 8, 8)), tiny_model)
    with pytest.raises(ConfigError, match="overlap"):
        segment(np.zeros((8, 8)), tiny_model, tile_size=32, overlap=32)


def test_cluster_threshold_sets_the_operating_point(tiny_model):
    image = _frame((128, 128), seed=4)
    labels, probabilities = segment(image, tiny_model, tile_size=64)
    p_cluster = probabilities[CLUSTER]
    threshold = float(np.quantile(p_cluster, 0.9))  # a tenth of the pixels reach it
    low, _ = segment(image, tiny_model, tile_size=64, cluster_threshold=threshold)
    np.testing.assert_array_equal(low == CLUSTER, (p_cluster >= threshold) | (labels == CLUSTER))
    np.testing.assert_array_equal(low[low != CLUSTER], labels[low != CLUSTER])  # other classes stay argmax
    np.testing.assert_array_equal(predict.decide(probabilities, threshold), low)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ConfigError, match="cluster_threshold"):
            segment(image, tiny_model, tile_size=64, cluster_threshold=bad)


def test_banded_blend_equals_one_accumulator_over_the_frame(tiny_model):
    # several rows of tiles, a row of NaN across a band boundary: bands must agree with a whole-frame blend
    from ccdseg.infer.tiling import blend, pad_image, tile_grid
    from ccdseg.nn.normalize import normalization_stats, normalize

    image = _frame((300, 170), seed=3)
    image[110:114] = np.nan
    labels, probabilities = segment(image, tiny_model, tile_size=64, overlap=16, precision="fp32")
    model = get_model(tiny_model)
    grid = tile_grid(image.shape, 64, 16, multiple=4)
    network_input = pad_image(normalize(image, model.normalization, normalization_stats(image, model.normalization)),
                              grid)
    run = predict._torch_engine(model.net, "cpu", "fp32")
    th, tw = grid.tile_shape
    outputs = [((y0, x0), run(network_input[None, None, y0:y0 + th, x0:x0 + tw])[0]) for y0, x0 in grid.starts]
    whole = blend(outputs, grid, N_CLASSES)
    valid = np.isfinite(image)
    np.testing.assert_allclose(probabilities[:, valid], whole[:, valid], rtol=1e-6, atol=1e-7)
    background = np.eye(N_CLASSES, dtype=np.float32)[BACKGROUND][:, None]
    np.testing.assert_array_equal(probabilities[:, ~valid], np.broadcast_to(background, (N_CLASSES, (~valid).sum())))


def test_cluster_plane_alone_is_the_float16_cluster_probability(tiny_model):
    image = _frame((200, 230), seed=4)
    image[5, :] = np.nan
    labels, probabilities = segment(image, tiny_model, tile_size=64, overlap=16, precision="fp32")
    labels_c, plane = segment(image, tiny_model, tile_size=64, overlap=16, precision="fp32",
                              return_probabilities="cluster")
    np.testing.assert_array_equal(labels_c, labels)
    assert plane.dtype == np.float16 and plane.shape == image.shape
    np.testing.assert_array_equal(plane, probabilities[CLUSTER].astype(np.float16))
    assert not plane[5].any()
    with pytest.raises(ConfigError, match="return_probabilities"):
        segment(image, tiny_model, return_probabilities="all")
