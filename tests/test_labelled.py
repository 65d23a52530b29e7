import numpy as np
import pytest
from astropy.io import fits
from matplotlib import pyplot as plt

from ccdseg.classes import CLUSTER, HOT_PIXEL, IGNORE, rgb_table
from ccdseg.errors import InputError
from ccdseg.nn.labelled import find_labelled_pairs
from ccdseg.nn.train import read_sources, training_tiles
from ccdseg.nn.train_config import load_train_config


def write_image(path, shape, value=0.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(np.full(shape, value, np.float32)).writeto(path)


def class_map(shape):
    labels = np.zeros(shape, np.uint8)
    labels[2:5, 3:6] = CLUSTER
    labels[:, 10] = HOT_PIXEL
    labels[0, 0] = IGNORE
    return labels


@pytest.fixture
def labelled_dir(tmp_path):
    """Three good pairs (FITS, colour PNG, NPY in labels/) and one of each problem."""
    labels = class_map((40, 48))
    write_image(tmp_path / "good_fits.fits", (40, 48))
    fits.PrimaryHDU(labels).writeto(tmp_path / "good_fits_labels.fits")
    write_image(tmp_path / "good_png.fits", (40, 48), 1.0)
    rgb = rgb_table()[np.where(labels == IGNORE, 0, labels)]
    rgba = np.dstack([rgb, np.where(labels == IGNORE, 0, 255).astype(np.uint8)])
    plt.imsave(tmp_path / "good_png_labels.png", rgba)
    write_image(tmp_path / "images" / "good_npy.fits", (40, 48), 2.0)
    (tmp_path / "labels").mkdir()
    np.save(tmp_path / "labels" / "good_npy.npy", labels)
    write_image(tmp_path / "lonely.fits", (40, 48))                      # no labels
    np.save(tmp_path / "orphan_labels.npy", labels)                      # no image
    write_image(tmp_path / "wrong_shape.fits", (40, 40))
    np.save(tmp_path / "wrong_shape_labels.npy", labels)
    write_image(tmp_path / "bad_values.fits", (40, 48))
    np.save(tmp_path / "bad_values_labels.npy", np.where(labels == CLUSTER, 7, labels))
    return tmp_path, labels


def test_pairs_are_matched_by_name_and_each_problem_reported(labelled_dir):
    directory, labels = labelled_dir
    pairs, problems = find_labelled_pairs(directory)
    assert [name for name, _, _ in pairs] == ["good_fits", "good_npy", "good_png"]
    for (_, image, read), value in zip(pairs, (0.0, 2.0, 1.0), strict=True):
        np.testing.assert_array_equal(read, labels)  # ids, colours and transparency decode alike
        assert read.dtype == np.uint8 and np.all(image == value)
    assert len(problems) == 4
    text = "\n".join(problems)
    assert "lonely.fits: no label file" in text
    assert "orphan_labels.npy: no image orphan.fits" in text
    assert "labels of shape (40, 48) but image wrong_shape.fits[0] has shape (40, 40)" in text
    assert "bad_values_labels.npy: unknown class values 7" in text


def test_unknown_png_colour_is_reported(tmp_path):
    write_image(tmp_path / "a.fits", (8, 8))
    plt.imsave(tmp_path / "a_labels.png", np.full((8, 8, 3), 200, np.uint8))
    pairs, problems = find_labelled_pairs(tmp_path)
    assert pairs == [] and problems == [f"{tmp_path / 'a_labels.png'}: unknown class colours #c8c8c8 "
                                        "(expected the colours of ccdseg.classes.COLORS)"]


def test_training_refuses_bad_pairs_unless_told_to_skip(labelled_dir):
    directory, labels = labelled_dir
    config = load_train_config(None, labelled_dir=str(directory), tile_size=16, sim_size=32,
                               arch={"preset": "default", "depth": 2})
    with pytest.raises(InputError, match="4 labelled file"):
        read_sources(config)
    config.skip_bad_pairs = True
    pairs, skipped = read_sources(config)
    assert len(pairs["labelled"]) == 3 and len(skipped) == 4
    # a half-and-half mix with simulation: about half the tiles come from the labelled images
    config.sources = {"simulation": 0.5, "labelled": 0.5}
    tiles = training_tiles(config, np.random.SeedSequence(0), pairs)
    from_files = [np.isin(image, (0.0, 1.0, 2.0)).all() for image, _, _ in (next(tiles) for _ in range(60))]
    assert 15 <= sum(from_files) <= 45
