import itertools

import numpy as np
import pytest

from ccdseg.calib.background import robust_sigma
from ccdseg.classes import GLOWING
from ccdseg.errors import ConfigError, InputError
from ccdseg.nn import dataset
from ccdseg.nn.normalize import normalization_stats, normalize
from ccdseg.sim.config import load_config
from ccdseg.sim.simulate import simulate_image
from ccdseg.sim.truth import write_simulation


def take(stream, n):
    return list(itertools.islice(stream, n))


def test_simulated_tiles_same_seed_same_tiles():
    first = take(dataset.simulated_tiles(size=32, seed=5, image_size=64), 6)
    again = take(dataset.simulated_tiles(size=32, seed=5, image_size=64), 6)
    other = take(dataset.simulated_tiles(size=32, seed=6, image_size=64), 6)
    for (image, labels, _), (image2, labels2, _) in zip(first, again, strict=True):
        assert image.shape == labels.shape == (32, 32)
        assert image.dtype == np.float32 and labels.dtype == np.uint8
        np.testing.assert_array_equal(image, image2)
        np.testing.assert_array_equal(labels, labels2)
    assert not np.array_equal(first[0][0], other[0][0])
    # a 64 px image gives 4 different tiles of 32 px before the next image
    assert len({tile.tobytes() for tile, _, _ in first[:4]}) == 4


def test_tile_statistics_come_from_the_whole_image():
    # strong edge glow over the left half: a tile's own row medians would sit on the glow,
    # the whole image's sit on the pedestal, as prediction measures them on the whole frame
    sim = simulate_image(load_config("damic", overrides={
        "detector.height": 128, "detector.width": 128, "glow.probability": 1.0, "glow.shapes": ["edge"],
        "glow.amplitude_e": [300, 300], "glow.length_px": [40, 40], "glow.warm_columns": [0, 0]}), seed=3)
    tiles = dataset.image_tiles(sim.image, sim.labels, 64)
    whole = normalization_stats(sim.image)
    assert dataset.prepared(sim.image)[0] is sim.image  # one amplifier, no baseline: the frame as it is
    for (image, _labels, stats), (y, x) in zip(tiles, dataset.grid_positions(sim.image.shape, 64), strict=True):
        np.testing.assert_array_equal(image, sim.image[y:y + 64, x:x + 64])
        np.testing.assert_array_equal(stats.pedestal, whole.pedestal[y:y + 64])
        assert stats.sigma == whole.sigma
    glowing_tile = next(image for image, labels, _ in tiles if (labels == GLOWING).mean() > 0.9)
    own = normalization_stats(glowing_tile)
    assert np.median(own.pedestal - whole.pedestal[:64]) > 20 * 10  # > 20 e- of glow at 10 ADU/e-
    # pooled images: the same tiles, in a shuffled order that mixes the images
    single = take(dataset.simulated_tiles(size=32, seed=5, image_size=64), 8)
    pooled = take(dataset.simulated_tiles(size=32, seed=5, image_size=64, pool=2), 8)
    assert sorted(t.tobytes() for t, _, _ in single) == sorted(t.tobytes() for t, _, _ in pooled)
    assert [t.tobytes() for t, _, _ in single] != [t.tobytes() for t, _, _ in pooled]


def test_simulated_tiles_follow_the_preset_mix():
    # thesis images have a noise of 12 ADU, skipper ones of 0.16 ADU (more where glow covers much of the image)
    tiles = take(dataset.simulated_tiles({"thesis": 1.0, "skipper": 3.0}, size=32, seed=0, image_size=128), 800)
    noise = np.array([stats.sigma for _, _, stats in tiles[::16]])  # one per image
    share_thesis = np.mean(noise > 5)
    assert 0.15 < share_thesis < 0.35  # expected 0.25, binomial sd 0.03
    with pytest.raises(ConfigError, match="image_size"):
        next(dataset.simulated_tiles(size=32, image_size=48))
    with pytest.raises(ConfigError, match="presets"):
        next(dataset.simulated_tiles({"damic": 0.0}, size=32))


def test_flip_rotate_keeps_image_and_labels_aligned():
    rng = np.random.default_rng(1)
    image = rng.random((16, 16))
    labels = np.digitize(image, [0.25, 0.5, 0.75]).astype(np.uint8)  # a known function of the image
    seen = set()
    for _ in range(64):
        out_image, out_labels = dataset.flip_rotate(image, labels, rng)
        np.testing.assert_array_equal(out_labels, np.digitize(out_image, [0.25, 0.5, 0.75]))
        assert out_image.flags.c_contiguous and out_labels.dtype == np.uint8
        seen.add(out_image.tobytes())
    assert len(seen) == 8  # all flips and rotations of an asymmetric image occur


def test_jitter_changes_readout_not_structure():
    rng = np.random.default_rng(2)
    image = (1000.0 + rng.normal(0.0, 10.0, (128, 128))).astype(np.float32)
    image[60:64, 60:64] += 500.0  # a "cluster": its pixels stay where they are and stay bright
    labels = np.zeros(image.shape, np.uint8)
    labels[60:64, 60:64] = 3
    stats = normalization_stats(image)
    out, out_stats = dataset.jitter(image, stats, rng, gain_scale=(2.0, 2.0), pedestal_shift_adu=(5.0, 5.0),
                                    extra_noise=(0.0, 0.0))
    assert out.dtype == np.float32 and out.shape == image.shape
    assert abs(np.median(out) - 1005.0) < 1.0
    assert robust_sigma(out) == pytest.approx(2 * robust_sigma(image), rel=1e-3)
    assert np.all(out[labels == 3] > np.median(out) + 800)
    # the changed statistics are those of the changed image, so the network input is unchanged
    measured = normalization_stats(out)
    np.testing.assert_allclose(out_stats.pedestal, measured.pedestal, atol=1e-3)
    assert out_stats.sigma == pytest.approx(measured.sigma, rel=1e-3)
    np.testing.assert_allclose(normalize(out, stats=out_stats), normalize(image, stats=stats), atol=1e-5)
    noisy, noisy_stats = dataset.jitter(image, stats, rng, gain_scale=(1.0, 1.0), pedestal_shift_adu=(0.0, 0.0),
                                        extra_noise=(1.0, 1.0))
    assert robust_sigma(noisy) == pytest.approx(np.sqrt(2) * 10.0, rel=0.05)
    assert noisy_stats.sigma == pytest.approx(robust_sigma(noisy), rel=0.05)
    assert np.all(noisy[labels == 3] > np.median(noisy) + 400)


def test_file_tiles_read_simulations_and_split_021(tmp_path):
    config = load_config("thesis", overrides={"detector.height": 64, "detector.width": 64})
    sims = [simulate_image(config, seed=i) for i in range(5)]
    for i, sim in enumerate(sims):
        write_simulation(sim, tmp_path / f"sim_{i:05d}.fits")
    pairs = dataset.read_simulated_dir(tmp_path)
    assert [name for name, _, _ in pairs] == [f"sim_{i:05d}.fits" for i in range(5)]
    for (_, image, labels), sim in zip(pairs, sims, strict=True):
        np.testing.assert_array_equal(image, sim.image)
        np.testing.assert_array_equal(labels, sim.labels)

    train, val = dataset.split_tiles(pairs, 32, seed=3)
    assert len(train) + len(val) == 20 and len(val) == round(0.21 * 20) == 4
    assert not set(train) & set(val)

    val_tiles = list(dataset.file_tiles(tmp_path, 32, "val", seed=3))
    assert len(val_tiles) == 4
    for (index, y, x), (image, labels, stats) in zip(val, val_tiles, strict=True):
        np.testing.assert_array_equal(image, dataset.prepared(sims[index].image)[0][y:y + 32, x:x + 32])
        np.testing.assert_array_equal(labels, sims[index].labels[y:y + 32, x:x + 32])
        np.testing.assert_array_equal(stats.pedestal, dataset.prepared(sims[index].image)[1].pedestal[y:y + 32])
    # one pass of the endless training stream is exactly the training tiles, none of validation
    first_pass = take(dataset.file_tiles(pairs, 32, "train", seed=3), 16)
    expected = {dataset.prepared(sims[i].image)[0][y:y + 32, x:x + 32].tobytes() for i, y, x in train}
    assert {image.tobytes() for image, _, _ in first_pass} == expected
    assert len(take(dataset.file_tiles(pairs, 32, "train", seed=3), 40)) == 40


def test_read_simulated_dir_rejects_empty_directory(tmp_path):
    with pytest.raises(InputError, match="no simulated images"):
        dataset.read_simulated_dir(tmp_path)
