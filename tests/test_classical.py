import numpy as np
import pytest
from scipy import ndimage
from scipy.special import erfc

from ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL
from ccdseg.measure.classical import segment_classical

NOISE_E = 2.0
GAIN = 10.0          # ADU/e-
PEDESTAL = 9000.0    # ADU
GLOW_E, GLOW_LENGTH = 100.0, 10.0   # e- at the edge, e-folding length (px)
HOT_COLUMN, HOT_ROW = 200, 150


def _scene(seed=0, height=512, width=512):
    """Noise + pedestal + 20 diffusion-limited blobs + a hot column + a hot row + left-edge glow, in ADU."""
    rng = np.random.default_rng(seed)
    charge = rng.normal(0.0, NOISE_E, (height, width))
    yy, xx = np.mgrid[0:height, 0:width]
    centres = []
    while len(centres) < 20:
        y, x = int(rng.integers(40, height - 40)), int(rng.integers(80, width - 40))
        if abs(x - HOT_COLUMN) < 6 or abs(y - HOT_ROW) < 6:
            continue
        q, s = rng.uniform(200.0, 2000.0), rng.uniform(0.4, 1.2)
        charge += q * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s * s)) / (2 * np.pi * s * s)
        centres.append((y, x))
    charge[:, HOT_COLUMN] += 15.0
    charge[HOT_ROW, :] += 12.0
    charge += GLOW_E * np.exp(-xx / GLOW_LENGTH)
    return (charge * GAIN + PEDESTAL).astype(np.float32), centres


@pytest.fixture(scope="module")
def scene():
    image, centres = _scene()
    return image, centres, segment_classical(image)


def test_every_bright_cluster_is_found(scene):
    image, centres, labels = scene
    assert labels.dtype == np.uint8 and labels.shape == image.shape
    assert [labels[c] for c in centres] == [CLUSTER] * len(centres)
    components, n = ndimage.label(labels == CLUSTER, structure=np.ones((3, 3)))
    # the 20 blobs, plus at most a few noise seeds (expected 512² · P(>4σ) ≈ 8)
    assert 20 <= n <= 20 + 8 + 5 * np.sqrt(8)


def test_hot_column_and_row_are_hot_not_cluster(scene):
    _, _, labels = scene
    interior = slice(60, None)   # outside the glow
    assert np.all(labels[:, HOT_COLUMN] == HOT_PIXEL)
    assert np.all(labels[HOT_ROW, interior] == HOT_PIXEL)
    # no other line is flagged
    hot = labels == HOT_PIXEL
    hot[:, HOT_COLUMN] = False
    hot[HOT_ROW, :] = False
    assert hot.sum() == 0


def test_edge_glow_is_glowing_and_stops_where_it_fades(scene):
    _, _, labels = scene
    # excess above 3σ per pixel (columns < 35) is glowing everywhere
    assert np.all(labels[:, :35] == GLOWING)
    # the labelled extent ends where the excess reaches ~1σ (column 39), give or take a block's noise
    glowing_columns = np.flatnonzero((labels == GLOWING).mean(axis=0) > 0.5)
    assert glowing_columns.max() in range(33, 42)
    assert not np.any(labels[:, 45:] == GLOWING)


def test_partial_hot_column_is_flagged_only_where_it_is_hot():
    rng = np.random.default_rng(3)
    image = rng.normal(0.0, 1.0, (512, 256))
    image[384:, 100] += 4.0      # from a defect at row 384 to the end: a quarter of the column
    labels = segment_classical(image)
    assert np.all(labels[384:, 100] == HOT_PIXEL)
    assert np.all(labels[:384, 100] != HOT_PIXEL)
    assert np.count_nonzero(labels == HOT_PIXEL) == 128


def test_false_clusters_on_pure_noise_match_the_gaussian_tail():
    rng = np.random.default_rng(7)
    shape = (1024, 1024)
    image = rng.normal(PEDESTAL, NOISE_E * GAIN, shape).astype(np.float32)
    labels = segment_classical(image, seed_sigma=4.0)
    n_clusters = ndimage.label(labels == CLUSTER, structure=np.ones((3, 3)))[1]
    expected = shape[0] * shape[1] * 0.5 * erfc(4.0 / np.sqrt(2))   # ≈ 33 seeds above 4σ
    assert expected / 3 < n_clusters < expected + 5 * np.sqrt(expected) + 1
    # hot-line and glow false positives: at most a few blocks of 64 px
    assert np.count_nonzero(labels == GLOWING) == 0
    assert np.count_nonzero(labels == HOT_PIXEL) <= 4 * 64


def test_non_finite_pixels_are_background_and_do_not_disturb_statistics():
    image, centres = _scene(seed=1, height=256, width=256)
    image[10:20, 100:200] = np.nan
    image[50, 50] = np.inf
    labels = segment_classical(image)
    assert np.all(labels[10:20, 100:200] == BACKGROUND) and labels[50, 50] == BACKGROUND
    assert [labels[c] for c in centres] == [CLUSTER] * len(centres)
    assert np.all(labels[:, HOT_COLUMN] == HOT_PIXEL)
    assert np.all(labels[:, :30] == GLOWING)


def test_min_cluster_pixels_and_known_defects():
    rng = np.random.default_rng(5)
    image = rng.normal(0.0, 1.0, (128, 128))
    image[30, 30] = 50.0                       # one-pixel "cluster" (or a hot pixel)
    image[80, 80:83] = 50.0                    # three-pixel cluster
    labels = segment_classical(image)
    assert labels[30, 30] == CLUSTER and labels[80, 81] == CLUSTER
    labels = segment_classical(image, min_cluster_pixels=2)
    assert labels[30, 30] == BACKGROUND and labels[80, 81] == CLUSTER
    defects = np.zeros(image.shape, dtype=bool)
    defects[30, 30] = True
    labels = segment_classical(image, hot_mask=defects)
    assert labels[30, 30] == HOT_PIXEL and labels[80, 81] == CLUSTER


def test_given_noise_sets_the_thresholds():
    image = np.zeros((64, 64))
    image[20, 20] = 5.0
    image[20, 21] = 3.5
    image[40, 40] = 3.5
    labels = segment_classical(image, noise=1.0)
    assert labels[20, 20] == labels[20, 21] == CLUSTER    # seed 5σ grows into its 3.5σ neighbour
    assert labels[40, 40] == BACKGROUND                   # 3.5σ alone is no seed
    with pytest.raises(ValueError, match="grow_sigma"):
        segment_classical(image, seed_sigma=3.0, grow_sigma=4.0)
