import numpy as np
import pytest
from scipy import stats

from ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL
from ccdseg.sim.config import load_config
from ccdseg.sim.events import diffusion_sigma_um
from ccdseg.sim.simulate import iter_simulations, label_thresholds, simulate_image

NOTHING = {"glow.probability": 0.0, "hot.pixels_per_mpix": [0, 0], "hot.columns": [0, 0], "hot.rows": [0, 0],
           "hot.streaks_per_mpix": [0, 0], "clusters.points_per_mpix": [0, 0], "clusters.worms_per_mpix": [0, 0],
           "clusters.muons_per_mpix": [0, 0], "clusters.alphas_per_mpix": [0, 0]}


def config(preset="damic", **overrides):
    return load_config(preset, overrides={**NOTHING, **{k.replace("__", "."): v for k, v in overrides.items()}})


def test_noise_and_pedestal_recovered_within_statistical_error():
    cfg = config(detector__height=512, detector__width=512, detector__dark_current_e_per_day=0.0,
                 detector__spurious_charge_e=0.0, detector__read_noise_e=2.5, detector__gain_adu_per_e=7.0,
                 detector__pedestal_adu=1234.0)
    image = simulate_image(cfg, seed=1).image.astype(np.float64)
    n, sigma_adu = image.size, 2.5 * 7.0
    assert abs(image.mean() - 1234.0) < 4 * sigma_adu / np.sqrt(n)
    assert abs(image.std() - sigma_adu) < 4 * sigma_adu / np.sqrt(2 * n)


def test_dark_current_is_poisson_with_the_readout_ramp():
    # 0.5 e-/pix/day over a 1 day exposure, rows read 100 s apart: the last rows collect more
    cfg = config("skipper", detector__height=400, detector__width=400, detector__dark_current_e_per_day=0.5,
                 detector__exposure_s=86400.0, detector__row_readout_s=86.4, detector__spurious_charge_e=0.0)
    sim = simulate_image(cfg, seed=3)
    dark = sim.charge["dark"]
    expected_first = 0.5 * (1 + 86.4 * 0.5 / 86400)
    expected_last = 0.5 * (1 + 86.4 * 399.5 / 86400)
    first, last = dark[:50].mean(), dark[-50:].mean()
    assert first == pytest.approx(0.5 * (1 + 86.4 * 25 / 86400), abs=4 * np.sqrt(expected_first / 20000))
    assert last > first
    assert last == pytest.approx(0.5 * (1 + 86.4 * 375 / 86400), abs=4 * np.sqrt(expected_last / 20000))
    assert dark[:50].var() == pytest.approx(dark[:50].mean(), rel=0.05)  # Poisson: variance = mean
    assert np.all(dark == np.round(dark))  # whole electrons


def test_skipper_images_show_single_electron_peaks():
    cfg = config("skipper", detector__height=300, detector__width=300, detector__dark_current_e_per_day=5.0)
    sim = simulate_image(cfg, seed=4)
    # the pedestal drifts from row to row; most pixels hold 0 e-, so the row median is the pedestal
    pedestal = np.median(sim.image, axis=1, keepdims=True)
    electrons = (sim.image - pedestal) / cfg.detector.gain_adu_per_e
    distance = np.abs(electrons - np.round(electrons))
    # noise 0.12 e-: nearly every pixel lies within 0.4 e- of a whole number of electrons
    assert np.mean(distance < 0.4) > 0.99
    assert np.mean(np.round(electrons) == 1) > 0.05  # dark current puts single electrons in many pixels


def test_point_cluster_charge_follows_energy_with_fano_fluctuations():
    cfg = config(detector__height=1000, detector__width=1000, clusters__points_per_mpix=[400, 400],
                 clusters__point_energy_ev=[2000.0, 20000.0], clusters__xray_fraction=0.0)
    truth = simulate_image(cfg, seed=5).truth
    inside = (truth["x"] > 5) & (truth["x"] < 994) & (truth["y"] > 5) & (truth["y"] < 994)
    truth = truth[inside]
    assert len(truth) > 300
    mean_e = truth["energy_ev"] / 3.77
    pull = (truth["charge_e"] - mean_e) / np.sqrt(0.13 * mean_e)
    assert abs(pull.mean()) < 4 / np.sqrt(len(truth))
    assert pull.std() == pytest.approx(1.0, abs=0.15)


def test_image_charge_equals_the_sum_of_cluster_charges():
    cfg = config(detector__height=300, detector__width=300, clusters__points_per_mpix=[500, 500],
                 clusters__worms_per_mpix=[50, 50], clusters__muons_per_mpix=[20, 20])
    sim = simulate_image(cfg, seed=6)
    total = sim.charge["cluster"].sum()
    assert total == pytest.approx(sim.truth["charge_e"].sum(), abs=4 * np.sqrt(sim.labels.size))
    assert set(sim.truth["kind"]) == {"point", "worm", "muon"}


def test_point_cluster_width_follows_the_diffusion_law():
    cfg = config(detector__height=1200, detector__width=1200, clusters__points_per_mpix=[150, 150],
                 clusters__xray_fraction=1.0, clusters__xray_lines_ev=[8046.0])
    sim = simulate_image(cfg, seed=7)
    truth, charge, ids = sim.truth, sim.charge["cluster"], sim.ids
    rows, cols = np.indices(ids.shape)
    w = np.bincount(ids.ravel(), weights=charge.ravel())
    owned = w > 0  # ids without a labelled pixel have no width to measure
    mx = np.bincount(ids.ravel(), weights=(charge * cols).ravel())[owned] / w[owned]
    var = np.zeros_like(w)
    var[owned] = np.bincount(ids.ravel(), weights=(charge * cols ** 2).ravel())[owned] / w[owned] - mx ** 2
    measured = var[truth["id"]]
    # isolated clusters only: the bounding box must not touch another cluster or the border
    expected = (diffusion_sigma_um(truth["depth_um"], 216.2, 8.86e-4) / 15.0) ** 2 + 1 / 12
    ok = (truth["xmin"] > 3) & (truth["xmax"] < 1196) & (truth["ymin"] > 3) & (truth["ymax"] < 1196)
    assert ok.sum() > 100
    deep = truth["depth_um"][ok] > 400
    shallow = truth["depth_um"][ok] < 150
    # pixels below the 1 e- label threshold are cut, so the measured variance is a little smaller
    assert np.median(measured[ok][deep] / expected[ok][deep]) == pytest.approx(1.0, abs=0.15)
    assert np.median(measured[ok][deep]) > 2 * np.median(measured[ok][shallow])
    assert stats.spearmanr(truth["depth_um"][ok], measured[ok]).statistic > 0.8


def test_every_label_is_traceable_to_a_component():
    for preset in ("damic", "skipper", "damicm", "thesis"):
        sim = simulate_image(load_config(preset, overrides={"detector.height": 256, "detector.width": 256,
                                                              "clusters.alphas_per_mpix": [20, 20],
                                                              "glow.probability": 1.0}), seed=8)
        cluster_min, glow_min = label_thresholds(sim.config, sim.charge["dark_expected"])
        c, labels = sim.charge, sim.labels
        is_cluster, is_glow = c["cluster"] >= cluster_min, c["glow_expected"] >= glow_min
        assert set(np.unique(labels)) <= {BACKGROUND, GLOWING, HOT_PIXEL, CLUSTER}
        assert np.all(is_cluster[labels == CLUSTER])
        is_hot = labels == HOT_PIXEL
        assert np.all(((c["hot_expected"] > 0) | (c["hot"] >= cluster_min))[is_hot])
        assert np.all(is_glow[labels == GLOWING])
        background = labels == BACKGROUND
        assert not np.any(is_cluster[background])
        assert np.all(c["hot_expected"][background] == 0)
        assert not np.any(is_glow[background])
        # overlaps resolved cluster > hot pixel > glowing
        assert np.all(labels[is_cluster] == CLUSTER)
        assert np.all(labels[(c["hot_expected"] > 0) & ~is_cluster] == HOT_PIXEL)
        # every cluster pixel belongs to a truth cluster, and the truth pixel counts add up
        assert np.all(sim.ids[labels == CLUSTER] > 0) and np.all(sim.ids[labels != CLUSTER] == 0)
        assert sim.truth["npix"].sum() == (labels == CLUSTER).sum()


def test_alphas_saturate_and_bleed_along_the_column():
    # compact alphas (little plasma spread) hold far more than the full well in their core
    cfg = config(detector__height=400, detector__width=200, clusters__alphas_per_mpix=[25, 25],
                 clusters__alpha_sigma_px=[0.3, 0.3], detector__adc_max_adu=None)
    sim = simulate_image(cfg, seed=9)
    cluster, full_well = sim.charge["cluster"], cfg.detector.full_well_e
    assert np.all(cluster <= full_well + 1e-2)
    assert np.all(sim.truth["charge_e"] > 1e6)
    for alpha in sim.truth:
        box = cluster[alpha["ymin"]:alpha["ymax"] + 1, alpha["xmin"]:alpha["xmax"] + 1]
        rows, cols = np.nonzero(box >= full_well * 0.999)
        # the charge above the full well has spread into a vertical streak of full pixels
        assert np.ptp(rows) > np.ptp(cols) + 2
        # and none of it was lost: the streak holds what the blob could not
        assert box.sum() == pytest.approx(alpha["charge_e"], rel=0.01)


def test_same_seed_same_image_and_stream():
    cfg = load_config("damic", overrides={"detector.height": 128, "detector.width": 160})
    a, b, c = simulate_image(cfg, seed=11), simulate_image(cfg, seed=11), simulate_image(cfg, seed=12)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)
    first = [next(iter_simulations(cfg, seed=5)).image for _ in range(2)]
    assert np.array_equal(first[0], first[1])
    stream = iter_simulations(cfg, seed=5)
    assert not np.array_equal(next(stream).image, next(stream).image)


def test_prescan_and_overscan_hold_only_noise():
    cfg = load_config("damic", overrides={"detector.height": 100, "detector.width": 120,
                                          "detector.prescan_columns": 8, "detector.overscan_columns": 10,
                                          "glow.probability": 1.0})
    sim = simulate_image(cfg, seed=13)
    assert sim.image.shape == (100, 120)
    for columns in (slice(None, 8), slice(-10, None)):  # prescan, overscan
        assert np.all(sim.labels[:, columns] == BACKGROUND)
        assert abs(sim.image[:, columns].std() - 20.0) < 3.0  # 2 e- x 10 ADU/e-, nothing else
    assert np.all((sim.truth["x"] >= 8) & (sim.truth["x"] < 110))


def test_four_megapixel_frame_has_every_kind_of_signal():
    cfg = load_config("damic", overrides={"detector.height": 2048, "detector.width": 2048,
                                          "clusters.alphas_per_mpix": [1, 1], "glow.probability": 1.0,
                                          "hot.columns": [2, 2]})
    sim = simulate_image(cfg, seed=14)
    counts = np.bincount(sim.labels.ravel(), minlength=4)
    assert np.all(counts > 0)
    assert set(sim.truth["kind"]) == {"point", "worm", "muon", "alpha"}
    assert sim.image.dtype == np.float32 and sim.image.max() <= 65535
