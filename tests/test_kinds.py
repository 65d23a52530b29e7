"""Shape features of the kind classifier: exact values on drawn shapes, and per-cluster grouping."""

import numpy as np
import pytest

from ccdseg.measure.kinds import FEATURES, cluster_features, shape_features


def _named(values):
    return dict(zip(FEATURES, values, strict=True))


def test_features_of_a_uniform_straight_track():
    length = 20
    cols = np.arange(length)
    features = _named(shape_features(np.full(length, 100.0), np.zeros(length), cols))
    assert features["log_effective_pixels"] == pytest.approx(np.log10(length))
    assert features["log_charge"] == pytest.approx(np.log10(100.0 * length))
    assert features["peak_share"] == pytest.approx(1 / length)
    # a uniform run of L pixels has variance (L^2 - 1) / 12 along it, none across
    assert features["log_sigma_major"] == pytest.approx(np.log10(np.sqrt((length ** 2 - 1) / 12) + 0.05))
    assert features["log_sigma_minor"] == pytest.approx(np.log10(0.05))
    assert features["log_length"] == pytest.approx(np.log10(np.sqrt(length ** 2 - 1) + 1))
    assert features["line_share"] == pytest.approx(1.0)
    assert features["log_width_ratio"] == pytest.approx(0.0)
    assert features["charge_variation"] == pytest.approx(0.0, abs=1e-12)
    assert features["top4_share"] == pytest.approx(4 / length)


def test_a_cone_widens_and_a_round_blob_does_not():
    rows, cols = np.mgrid[-6:7, 0:30]
    sigma = 0.3 + 0.05 * cols                      # width grows along the track, as with depth
    cone = np.exp(-rows ** 2 / (2 * sigma ** 2)) / sigma
    features = _named(shape_features(cone.ravel(), rows.ravel(), cols.ravel()))
    assert features["log_width_ratio"] > np.log10(2.0)
    rows, cols = np.mgrid[-8:9, -8:9]
    blob = np.exp(-(rows ** 2 + cols ** 2) / (2 * 2.0 ** 2))
    features = _named(shape_features(blob.ravel(), rows.ravel(), cols.ravel()))
    assert features["log_sigma_major"] == pytest.approx(features["log_sigma_minor"], abs=1e-6)
    assert features["log_sigma_major"] == pytest.approx(np.log10(2.0 + 0.05), abs=0.01)
    assert features["log_width_ratio"] == pytest.approx(0.0, abs=1e-6)


def test_cluster_features_are_each_clusters_own():
    rng = np.random.default_rng(5)
    image = rng.normal(0.0, 2.0, (40, 60))
    components = np.zeros(image.shape, int)
    components[5, 3:25] = 1                               # a track
    components[20:26, 30:35] = 3                          # a blob; number 2 has no pixels
    components[30:38, 40:58][rng.random((8, 18)) < 0.5] = 4   # a scattered worm-like set
    image[components > 0] += rng.uniform(10.0, 900.0, np.count_nonzero(components))
    features = cluster_features(image, components)
    assert features.shape == (4, len(FEATURES))
    assert np.all(features[1] == 0.0)
    for number in (1, 3, 4):
        rows, cols = np.nonzero(components == number)
        np.testing.assert_allclose(features[number - 1], shape_features(image[rows, cols], rows, cols),
                                   rtol=1e-12, atol=1e-12)
        # the features do not depend on where the cluster lies
        np.testing.assert_allclose(features[number - 1], shape_features(image[rows, cols], rows + 7, cols - 3),
                                   rtol=1e-9, atol=1e-9)
