import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from ccdseg.calib.gain import estimate_gain
from ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL
from ccdseg.errors import ConfigError
from ccdseg.io.regions import region_file_text
from ccdseg.measure.catalog import CATALOG_COLUMNS, find_clusters
from ccdseg.measure.sections import component_sums, find_sections, neighbourhoods
from conftest import DAMICM_SAMPLE


@pytest.fixture
def scene():
    """40 x 60 image: pedestal 100 + 0.5 * row ADU, noise 1 ADU, four clusters, a hot pixel and a glow patch."""
    rng = np.random.default_rng(3)
    pedestal = 100.0 + 0.5 * np.arange(40)
    image = rng.normal(0.0, 1.0, (40, 60)) + pedestal[:, None]
    labels = np.full((40, 60), BACKGROUND, dtype=np.uint8)
    # 3 x 3 cluster, symmetric charge: centroid (x, y) = (11, 21)
    image[20:23, 10:13] += np.array([[10, 20, 10], [20, 80, 20], [10, 20, 10]])
    labels[20:23, 10:13] = CLUSTER
    # two pixels touching by a corner: one cluster with 8-connectivity, two with 4
    image[5, 30] += 50
    image[6, 31] += 30
    labels[5, 30] = labels[6, 31] = CLUSTER
    # horizontal track on the left border next to a hot pixel
    image[35, 0:6] += 40
    labels[35, 0:6] = CLUSTER
    labels[36, 6] = HOT_PIXEL
    # blob beside a glow patch
    image[10:12, 50:52] += 25
    labels[10:12, 50:52] = CLUSTER
    labels[12:16, 52:56] = GLOWING
    return image, labels, pedestal


def test_schema_charges_and_flags(scene):
    image, labels, pedestal = scene
    table = find_clusters(image, labels, gain=2.0, pedestal=pedestal, hdu="CCD_A")
    assert table.colnames == list(CATALOG_COLUMNS)
    assert len(table) == 4 and list(table["id"]) == [1, 2, 3, 4]
    assert set(table["hdu"]) == {"CCD_A"}
    # total charge equals the pedestal-subtracted pixel sum under the cluster labels
    residual = image - pedestal[:, None]
    assert table["charge_adu"].sum() == pytest.approx(residual[labels == CLUSTER].sum(), rel=1e-12)
    square = table[(table["xmin"] == 10) & (table["ymin"] == 20)][0]
    assert (square["xmax"], square["ymax"], square["npix"]) == (12, 22, 9)
    assert square["x"] == pytest.approx(11.0, abs=0.05) and square["y"] == pytest.approx(21.0, abs=0.05)
    assert square["charge_adu"] == pytest.approx(residual[20:23, 10:13].sum())
    assert square["peak_adu"] == pytest.approx(residual[21, 11])
    assert square["charge_e"] == pytest.approx(square["charge_adu"] / 2.0)
    assert square["energy_ev"] == pytest.approx(square["charge_e"] * 3.77)
    assert square["peak_e"] == pytest.approx(square["peak_adu"] / 2.0)
    assert square["sigma_x"] == pytest.approx(square["sigma_y"], rel=0.1)
    assert 1.0 <= square["elongation"] < 1.1
    assert not (square["edge"] or square["near_hot"] or square["near_glow"])
    track = table[table["ymin"] == 35][0]
    assert track["edge"] and track["near_hot"] and not track["near_glow"]
    assert track["sigma_y"] == pytest.approx(0.0, abs=1e-9) and track["elongation"] > 5
    blob = table[table["xmin"] == 50][0]
    assert blob["near_glow"] and not blob["near_hot"] and not blob["edge"]
    assert np.isnan(table["mean_prob"]).all()
    assert table["x"].unit == "pix" and table["charge_adu"].unit == "adu" and table["energy_ev"].unit == "eV"


def test_connectivity_and_default_pedestal(scene):
    image, labels, _ = scene
    assert len(find_clusters(image, labels, connectivity=1)) == 5
    table = find_clusters(image, labels)
    assert len(table) == 4
    assert np.isnan(table["charge_e"]).all() and np.isnan(table["energy_ev"]).all()
    # the per-row median pedestal sees through the clusters: charges within noise of the truth
    square = table[table["xmin"] == 10][0]
    assert square["charge_adu"] == pytest.approx(200.0, abs=12.0)
    with pytest.raises(ConfigError, match="connectivity"):
        find_clusters(image, labels, connectivity=3)
    with pytest.raises(ConfigError, match="pedestal"):
        find_clusters(image, labels, pedestal=np.zeros(7))


def test_probabilities_nan_pixels_and_scalar_pedestal():
    image = np.zeros((8, 8))
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[2:4, 2:4] = CLUSTER
    image[2:4, 2:4] = [[15.0, np.nan], [np.inf, 25.0]]
    probabilities = np.zeros((4, 8, 8))
    probabilities[CLUSTER, 2:4, 2:4] = [[0.9, 0.7], [0.8, 0.6]]
    (row,) = find_clusters(image, labels, probabilities=probabilities, pedestal=5.0)
    assert row["charge_adu"] == pytest.approx(10.0 + 20.0)
    assert row["peak_adu"] == pytest.approx(20.0)
    assert row["mean_prob"] == pytest.approx(0.75)
    assert row["x"] == pytest.approx((2 * 10 + 3 * 20) / 30) and row["y"] == pytest.approx((2 * 10 + 3 * 20) / 30)


def test_empty_catalog_keeps_schema_and_round_trips(tmp_path, scene):
    image, labels, pedestal = scene
    empty = find_clusters(image, np.zeros_like(labels), gain=1.3)
    assert len(empty) == 0 and empty.colnames == list(CATALOG_COLUMNS)
    for table in (empty, find_clusters(image, labels, gain=2.0, pedestal=pedestal, hdu="CCD_B")):
        table.write(tmp_path / "c.csv", overwrite=True)
        table.write(tmp_path / "c.fits", overwrite=True)
        from_csv = Table.read(tmp_path / "c.csv")
        from_fits = Table.read(tmp_path / "c.fits")
        assert from_csv.colnames == from_fits.colnames == list(CATALOG_COLUMNS)
        assert len(from_csv) == len(from_fits) == len(table)
        for name in ("charge_adu", "x", "elongation", "npix"):
            np.testing.assert_allclose(from_csv[name], table[name], rtol=1e-12)
            np.testing.assert_allclose(from_fits[name], table[name], rtol=0)
        for name in ("edge", "near_hot"):
            assert list(from_fits[name]) == list(table[name]) == [str(v) == "True" for v in from_csv[name]]
        assert list(from_fits["hdu"]) == list(table["hdu"])
        assert from_fits["charge_adu"].unit == "adu" and from_fits["x"].unit == "pix"


def test_speed_and_consistency_on_a_large_frame():
    rng = np.random.default_rng(0)
    labels = np.zeros((2048, 2048), dtype=np.uint8)
    labels[rng.integers(0, 2048, 3000), rng.integers(0, 2048, 3000)] = CLUSTER
    image = rng.normal(0.0, 1.0, labels.shape) + 30.0 * (labels == CLUSTER)
    table = find_clusters(image, labels, gain=1.0, pedestal=0.0)
    assert table["npix"].sum() == (labels == CLUSTER).sum()
    assert table["charge_adu"].sum() == pytest.approx(image[labels == CLUSTER].sum())


def skipper_image(rng, noise_e, gain=1.3, mean_e=0.5, shape=(300, 600)):
    electrons = rng.poisson(mean_e, shape)
    return (electrons + rng.normal(0.0, noise_e, shape)) * gain - 38.0


def test_estimate_gain_resolved_and_unresolved():
    rng = np.random.default_rng(7)
    assert estimate_gain(skipper_image(rng, 0.15)).value == pytest.approx(1.3, rel=0.02)
    large = estimate_gain(skipper_image(rng, 0.15, gain=250.0, mean_e=0.05))
    assert large.value == pytest.approx(250.0, rel=0.02)
    assert estimate_gain(skipper_image(rng, 2.0)) is None
    assert estimate_gain(np.full((50, 50), 7.0)) is None


def test_estimate_gain_on_the_damicm_sample():
    with fits.open(DAMICM_SAMPLE) as hdus:
        images = [hdu.data.astype(np.float64) for hdu in hdus[1:]]
    for image in images:
        gain = estimate_gain(image).value
        assert 1.25 < gain < 1.45
        # the two halves of the CCD give the same gain
        assert estimate_gain(image[:, :320]).value == pytest.approx(gain, rel=0.01)
        assert estimate_gain(image[:, 320:]).value == pytest.approx(gain, rel=0.01)


def test_find_sections():
    labels = np.zeros((20, 30), dtype=np.uint8)
    labels[2:5, 3:6] = HOT_PIXEL
    labels[10:12, 20:29] = HOT_PIXEL
    labels[15, 0] = HOT_PIXEL
    labels[0:3, 25:28] = CLUSTER
    sections = find_sections(labels, "hot pixel")
    assert sections == [(10, 11, 20, 28, 18), (2, 4, 3, 5, 9), (15, 15, 0, 0, 1)]
    assert find_sections(labels, HOT_PIXEL, min_pixels=2, margin=2) == [(8, 13, 18, 29, 18), (0, 6, 1, 7, 9)]
    assert find_sections(labels, "cluster") == [(0, 2, 25, 27, 9)]
    assert find_sections(labels, GLOWING) == []


def test_region_file_is_one_based():
    labels = np.zeros((10, 10), dtype=np.uint8)
    labels[0, 0] = CLUSTER
    labels[4:6, 6:9] = CLUSTER
    text = region_file_text(find_clusters(np.ones((10, 10)), labels, pedestal=0.0))
    lines = text.splitlines()
    assert lines[0].startswith("# Region file format: DS9") and lines[3] == "image"
    assert lines[4] == "box(1,1,1,1,0) # color=yellow text={#1}"  # on the border: flagged edge
    assert lines[5] == "box(8,5.5,3,2,0) # color=green text={#2}"
    assert region_file_text(find_clusters(np.ones((4, 4)), np.zeros((4, 4)))).count("box") == 0


def test_component_sums_count_and_sum_over_the_components_only():
    rng = np.random.default_rng(2)
    components = np.zeros((50, 60), np.int32)
    components[5:8, 5:9], components[20, 10:30], components[40:42, 50] = 1, 2, 3
    values = rng.normal(0.0, 1.0, components.shape)
    values[20, 12] = np.nan  # counted as 0
    assert component_sums(components, 3).tolist() == [0, 12, 20, 2]
    sums = component_sums(components, 3, values)
    expected = [np.nansum(values[components == k]) for k in (1, 2, 3)]
    assert sums[0] == 0 and np.allclose(sums[1:], expected)


def test_neighbourhoods_are_the_3x3_windows_with_zeros_beyond_the_border():
    image = np.arange(1, 21).reshape(4, 5)
    windows = neighbourhoods(image, np.array([0, 2, 3]), np.array([0, 2, 4]))
    assert windows.shape == (9, 3)
    assert windows[:, 0].tolist() == [0, 0, 0, 0, 1, 2, 0, 6, 7]         # top-left corner
    assert windows[:, 1].tolist() == [7, 8, 9, 12, 13, 14, 17, 18, 19]   # inside: the window itself
    assert windows[:, 2].tolist() == [14, 15, 0, 19, 20, 0, 0, 0, 0]     # bottom-right corner


def test_point_depth_follows_the_detectors_diffusion_law():
    from ccdseg.measure.psf_fit import integrated_gaussian
    from ccdseg.sim.events import diffusion_sigma_um

    law = (530.0, 8.86e-4)  # the damicm preset's: wider than DAMIC's at the same depth
    rng = np.random.default_rng(2)
    depths = np.array([50.0, 200.0, 350.0, 500.0, 650.0])
    image = np.zeros((40, 200))
    for k, depth in enumerate(depths):
        sigma = diffusion_sigma_um(depth, *law) / 15.0
        image[10:31, 40 * k:40 * k + 21] += integrated_gaussian((21, 21), 1567.0, 10.3, 9.8, sigma, sigma)
    image = rng.poisson(image) + rng.normal(0, 0.2, image.shape)
    labels = np.where(image > 3, CLUSTER, BACKGROUND).astype(np.uint8)
    table = find_clusters(image, labels, gain=1.0, pedestal=0.0, diffusion=law)
    default = find_clusters(image, labels, gain=1.0, pedestal=0.0)
    order = np.argsort(table["x"])
    assert list(table["kind"][order]) == ["point"] * 5
    depth, error = np.asarray(table["depth_um"][order]), np.asarray(table["depth_err_um"][order])
    print(f"depth {np.round(depth)} +- {np.round(error)} um for {depths}")
    assert np.all(np.abs(depth - depths) < 3 * error + 20)
    # DAMIC's law puts every deposit deeper than it is, the back ones beyond the CCD
    assert np.all(np.asarray(default["depth_um"][order])[1:] > depths[1:] + 50)
