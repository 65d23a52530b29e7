"""Search products: each mask bit, the dark-charge fit, low-energy events, run masks, pipeline outputs."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from ccdseg.calib.electrons import to_electrons
from ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL
from ccdseg.cli import main
from ccdseg.measure.dark import _edges, _row_histograms, fit_dark, fit_dark_by_rows
from ccdseg.measure.low_energy import expected_dark_events, find_low_energy_events
from ccdseg.measure.mask import BIT, MASK_BITS, MaskOptions, build_mask, mask_hdu
from ccdseg.measure.run_mask import (
    COLUMN_DEFECT,
    PIXEL_DEFECT,
    apply_run_mask,
    defect_map,
    read_run_mask,
    write_run_mask,
)
from ccdseg.measure.summary import SUMMARY_COLUMNS, search_products
from ccdseg.pipeline.job import process_file
from ccdseg.sim.config import load_config
from ccdseg.sim.run import simulate_run
from ccdseg.sim.truth import write_simulation


def _quiet(shape=(60, 80), seed=0, noise=0.05):
    return np.random.default_rng(seed).normal(0.0, noise, shape)


def _has(mask, name):
    return (mask & BIT[name]) > 0


def test_cluster_halo_grows_with_charge():
    electrons, labels = _quiet(), np.zeros((60, 80), np.uint8)
    labels[10, 10] = labels[40, 60] = CLUSTER
    electrons[10, 10], electrons[40, 60] = 3.0, 800.0
    mask = build_mask(electrons, labels, options=MaskOptions(halo_px=1, halo_px_per_decade=1.5))
    assert _has(mask, "cluster")[10, 10] and _has(mask, "cluster").sum() == 2
    halo = _has(mask, "halo")
    # radius round(1 + 1.5 log10(3)) = 2 and round(1 + 1.5 log10(800)) = 5
    assert halo[10, 12] and not halo[10, 13] and halo[40, 65] and not halo[40, 66]
    assert not halo[10, 10]
    # resolving frames: a 3 e- cluster is low-energy signal and stays exposed, the 800 e- one is masked
    exposed = build_mask(electrons, labels, low_energy_e=4.5)
    assert exposed[10, 10] == 0 and exposed[10, 12] == 0 and _has(exposed, "cluster")[40, 60]


def test_bleed_runs_along_the_column():
    electrons, labels = _quiet(), np.zeros((60, 80), np.uint8)
    electrons[30, 20] = 5000.0
    labels[30, 20] = CLUSTER
    bleed = _has(build_mask(electrons, labels, options=MaskOptions(bleed_e=1000, bleed_px=10)), "bleed")
    assert bleed[20:41, 20].all() and not bleed[19, 20] and not bleed[41, 20] and bleed.sum() == 21


def test_hot_pixel_hot_column_serial_glow_edge():
    electrons, labels = _quiet(seed=1), np.zeros((60, 80), np.uint8)
    labels[5, 5] = HOT_PIXEL
    electrons[:, 30] += 1.0          # a column of 1 e- more: hot column (not labelled)
    labels[20, 40:50] = HOT_PIXEL    # a one-row streak: serial-register event
    labels[50:, 70:] = GLOWING
    electrons[0, :] = np.nan         # outside DATASEC
    segments = [(slice(None), slice(0, 40)), (slice(None), slice(40, 80))]
    mask = build_mask(electrons, labels, segments=segments, options=MaskOptions(edge_px=1))
    assert _has(mask, "hot_pixel")[5, 5] and _has(mask, "hot_pixel").sum() == 1
    assert np.flatnonzero(_has(mask, "hot_column").all(axis=0)).tolist() == [30]
    serial = _has(mask, "serial")
    assert serial[20, 40:].all() and not serial[20, :40].any() and serial.sum() == 40
    assert _has(mask, "glow")[50:, 70:].all() and _has(mask, "glow").sum() == 100
    edge = _has(mask, "edge")
    assert edge[0].all() and edge[:, [0, 39, 40, 79]].all() and edge[-1].all() and not edge[1:-1, 1:39].any()


def test_crosstalk_mirrors_into_the_other_amplifier():
    electrons, labels = _quiet(seed=2), np.zeros((60, 80), np.uint8)
    electrons[10, 5] = 2000.0
    # the right amplifier is read from the far (right) end: column 5 of the left is column 74 of the right
    segments = [(slice(None), slice(0, 40)), (slice(None), slice(79, 39, -1))]
    crosstalk = _has(build_mask(electrons, labels, segments=segments), "crosstalk")
    assert crosstalk[9:12, 73:76].all() and crosstalk.sum() == 9
    assert not _has(build_mask(electrons, labels), "crosstalk").any()


def test_run_defect_bit_and_header_names():
    electrons, labels = _quiet(), np.zeros((60, 80), np.uint8)
    defects = np.zeros((60, 80), bool)
    defects[7, 9] = True
    mask = build_mask(electrons, labels, run_defects=defects)
    assert np.argwhere(_has(mask, "run_defect")).tolist() == [[7, 9]]
    hdu = mask_hdu(mask, "MASK_CCD_A")
    assert hdu.data.dtype == np.uint16 and [hdu.header[f"MASKB{bit}"] for bit in MASK_BITS] == [
        name for name, _ in MASK_BITS.values()]


@pytest.mark.parametrize("dark", [1e-3, 0.05, 0.9])
def test_dark_fit_is_unbiased_with_honest_errors(dark):
    rng = np.random.default_rng(3)
    pulls = []
    for _ in range(20):
        values = rng.poisson(dark, 40_000) + rng.normal(0.0, 0.15, 40_000)
        fit = fit_dark(values)
        pulls.append((fit.dark_e - dark) / fit.dark_e_err)
        assert abs(fit.noise_e - 0.15) < 0.01 and abs(fit.gain_scale - 1) < 4 * fit.gain_scale_err
    pulls = np.array(pulls)
    assert abs(pulls.mean()) < 0.6 and 0.6 < pulls.std() < 1.5 and np.mean(np.abs(pulls) < 2) >= 0.85


def test_dark_fit_ignores_event_charge_that_biases_the_mean():
    rng = np.random.default_rng(4)
    values = rng.poisson(0.1, 50_000) + rng.normal(0.0, 0.15, 50_000)
    values[:500] += rng.uniform(5, 500, 500)  # 1 % unmasked event charge
    fit = fit_dark(values)
    assert abs(fit.dark_e - 0.1) < 3 * fit.dark_e_err and values.mean() > 0.1 + 50 * fit.dark_e_err


def test_dark_e_leaves_out_low_energy_events_beyond_dark_coincidences():
    # 60 two-electron events (two neighbouring 1 e- pixels) on 0.002 e-/pix of dark: 120 e- in 65536 px, a
    # bias of 0.0018 e-/pix (10 sigma) if counted as dark charge
    rng = np.random.default_rng(5)
    electrons = rng.poisson(0.002, (256, 256)) + rng.normal(0.0, 0.15, (256, 256))
    ys, xs = rng.choice(120, 60, replace=False) * 2 + 8, rng.integers(8, 240, 60)
    electrons[ys, xs] += 1.0
    electrons[ys, xs + 1] += 1.0
    labels = np.zeros(electrons.shape, np.uint8)
    products = search_products(electrons * 1.5 + 100.0, labels, Table(), gain=1.5)
    summary = products.summary
    assert summary["n_low_energy"] >= 55 and summary["n_low_energy_dark"] < 10
    assert abs(summary["dark_e"] - 0.002) < 2 * summary["dark_e_err"]
    assert summary["dark_e_lo"] < 0.002 < summary["dark_e_hi"]
    assert np.isclose(summary["dark_e_hi"] - summary["dark_e"], 1.6449 * summary["dark_e_err"])
    assert fit_dark_by_rows(electrons - np.median(electrons)).dark_e > 0.002 + 5 * summary["dark_e_err"]


def test_row_histograms_bin_as_numpy_does():
    rng = np.random.default_rng(8)
    electrons = (rng.poisson(0.5, (300, 40)) + rng.normal(0.0, 0.2, (300, 40))).astype(np.float32)
    edges = _edges(2)
    electrons[0, :3] = [edges[0], edges[-1], edges[7]]  # the range's ends and an inner edge
    electrons[1, :2] = np.nan
    mask = np.zeros(electrons.shape, np.uint16)
    mask[5:9] = BIT["halo"]
    counts, kept = _row_histograms(electrons, mask, edges)
    keep = np.isfinite(electrons) & (mask == 0)
    assert np.array_equal(counts.sum(axis=0), np.histogram(electrons[keep], bins=edges)[0])
    assert np.array_equal(counts[299], np.histogram(electrons[299], bins=edges)[0])
    assert np.array_equal(kept, keep.sum(axis=1)) and kept[1] == 38 and kept[6] == 0


def test_summary_counts_and_moments_of_the_exposed_pixels():
    rng = np.random.default_rng(9)
    electrons = (rng.poisson(0.3, (600, 50)) + rng.normal(0.0, 0.12, (600, 50))).astype(np.float32)
    electrons[10:14, 20] = [5.0, 9.0, 1.0, 2.0]
    products = search_products(electrons * 2.0 + 50.0, np.zeros(electrons.shape, np.uint8), Table(), gain=2.0)
    exposed = products.mask == 0
    rounded = np.round(to_electrons(electrons * 2.0 + 50.0, 2.0)[0][exposed])
    assert [products.summary[f"n_{k}e"] for k in range(5)] == [int(np.count_nonzero(rounded == k)) for k in range(5)]
    assert products.summary["exposed_pix"] == rounded.size == 598 * 48  # all but the 1 px edge


def test_dark_by_rows_follows_a_ramp():
    rng = np.random.default_rng(5)
    ramp = np.linspace(0.2, 1.6, 200)[:, None] * np.ones((1, 300))
    electrons = rng.poisson(ramp) + rng.normal(0.0, 0.15, ramp.shape)
    banded, whole = fit_dark_by_rows(electrons), fit_dark(electrons)
    assert abs(banded.dark_e - ramp.mean()) < 3 * banded.dark_e_err
    assert whole.dark_e < ramp.mean() - 10 * whole.dark_e_err  # one Poisson fit of a mixture lands low


def test_to_electrons_counts_whole_electrons_when_rows_straddle_peaks():
    rng = np.random.default_rng(6)
    charge = rng.poisson(0.9, (120, 200))
    pedestal = -40.0 + np.cumsum(rng.normal(0.0, 0.02, 120))
    image = pedestal[:, None] + 1.3 * (charge + rng.normal(0.0, 0.15, charge.shape))
    electrons, resolved = to_electrons(image, 1.3)
    assert resolved and np.mean(np.round(electrons) == charge) > 0.998
    assert not to_electrons(image + rng.normal(0.0, 2.0, image.shape), 1.3)[1]


def test_low_energy_events_exact():
    electrons = _quiet((40, 40), seed=7)
    mask = np.zeros((40, 40), np.uint16)
    electrons[5, 5] = 2          # 2 e- in one pixel: found
    electrons[10, 10] = electrons[11, 11] = 1        # 1 + 1 e- diagonal: found
    electrons[20, 20:22] = 2     # 4 e- in 1 x 2: found
    electrons[30, 30] = 3
    electrons[30, 31] = 2        # 5 e-: too much
    electrons[5, 30] = 1         # 1 e-: too little
    electrons[15:19, 35] = 1     # 4 e- along 4 rows: does not fit in 3 x 3
    electrons[35, 5] = 2
    mask[35, 5] = BIT["hot_pixel"]  # masked: not counted
    events = find_low_energy_events(electrons, mask)
    assert events.max() == 3
    assert {tuple(p) for p in np.argwhere(events > 0)} == {(5, 5), (10, 10), (11, 11), (20, 20), (20, 21)}
    assert find_low_energy_events(electrons, mask, box=2).max() == 3
    assert find_low_energy_events(electrons, mask, max_e=5).max() == 4


def test_expected_dark_events_matches_dark_only_frames():
    mask = np.zeros((200, 200), np.uint16)
    mask[:, :50] = BIT["glow"]
    rng = np.random.default_rng(8)
    found = [find_low_energy_events(rng.poisson(0.05, mask.shape) + rng.normal(0, 0.15, mask.shape), mask).max()
             for _ in range(20)]
    expected = expected_dark_events(mask, 0.05, 0.15, seed=1)
    assert expected > 20 and abs(expected - np.mean(found)) < 0.2 * np.mean(found)
    # a frame above 4 Mpix: bands of rows, scaled to the frame's exposed pixels (and memory bounded)
    large = np.zeros((2600, 2000), np.uint16)
    large[:, :500] = BIT["glow"]
    whole = find_low_energy_events(rng.poisson(0.05, large.shape) + rng.normal(0, 0.15, large.shape), large).max()
    assert abs(expected_dark_events(large, 0.05, 0.15, seed=1) - whole) < 0.05 * whole


def _run(dark=0.01, n_frames=20, seed=2, size=128):
    config = load_config("skipper", overrides={
        "detector.height": size, "detector.width": size, "detector.dark_current_e_per_day": 0.0,
        "detector.dark_charge_e": [dark, dark], "detector.spurious_charge_e": 0.0, "hot.columns": [1, 1],
        "glow.probability": 0.0})
    return config, simulate_run(config, n_frames, seed=seed)


def test_run_mask_holds_defects_and_no_events():
    config, frames = _run()
    assert all(np.array_equal(f.charge["hot_expected"], frames[0].charge["hot_expected"]) for f in frames)
    defects = frames[0].charge["hot_expected"] > 0
    electrons = [to_electrons(f.image, config.detector.gain_adu_per_e) for f in frames]
    found = defect_map(electrons)
    assert np.mean(found[defects] > 0) >= 0.99
    events = np.stack([f.labels == CLUSTER for f in frames]) & ~defects[None]
    assert np.mean(np.broadcast_to(found > 0, events.shape)[events]) < 1e-3
    assert (found & PIXEL_DEFECT).any() and set(np.unique(found)) <= {0, PIXEL_DEFECT, COLUMN_DEFECT, 3}


def test_apply_run_mask_relabels():
    labels = np.zeros((20, 20), np.uint8)
    labels[2, 2] = HOT_PIXEL      # bright once, not a run defect: an event
    labels[5, 5] = CLUSTER        # on a run defect: a defect
    labels[8:18, 10] = HOT_PIXEL  # a long hot line stays hot
    defects = np.zeros((20, 20), bool)
    defects[5, 5] = True
    relabelled = apply_run_mask(labels, defects)
    assert relabelled[2, 2] == CLUSTER and relabelled[5, 5] == HOT_PIXEL and (relabelled[8:18, 10] == HOT_PIXEL).all()
    assert relabelled[0, 0] == BACKGROUND and labels[2, 2] == HOT_PIXEL  # input untouched


def test_mask_cli_and_predict_with_run_mask(tmp_path):
    config, frames = _run(n_frames=12, size=96)
    paths = []
    for number, frame in enumerate(frames):
        paths.append(tmp_path / f"frame{number}.fits")
        write_simulation(frame, paths[-1])
    assert main(["mask", *map(str, paths), "--out-dir", str(tmp_path / "run")]) == 0
    run_mask = tmp_path / "run" / "run_mask.fits"
    defects = read_run_mask(run_mask, "0", (96, 96))
    truth = frames[0].charge["hot_expected"] > 0
    assert np.mean(defects[truth]) >= 0.99 and np.mean(defects[~truth]) < 0.01
    result = process_file(paths[0], tmp_path / "out", method="classical", run_mask=run_mask)
    assert "frame0_summary.csv" in [path.name for path in result.outputs]
    with fits.open(tmp_path / "out" / "frame0_seg.fits") as hdul:
        mask = hdul["MASK"].data
        assert hdul["MASK"].header["MASKB9"] == "run_defect"
        assert np.array_equal((mask & BIT["run_defect"]) > 0, defects)
        assert np.all(hdul["LABELS"].data[defects] != CLUSTER)
        summary = Table(hdul["SUMMARY"].data)
        clusters = Table(hdul["CLUSTERS"].data)
    assert list(summary.colnames) == list(SUMMARY_COLUMNS) and len(summary) == 1
    assert summary["resolved"][0] and summary["exposure_s"][0] == config.detector.exposure_s
    assert abs(summary["dark_e"][0] - 0.01) < 4 * summary["dark_e_err"][0] + 0.002
    assert summary["exposed_pix"][0] == np.count_nonzero(mask == 0)
    assert summary["n_low_energy"][0] == np.count_nonzero(clusters["low_energy"])
    csv = Table.read(tmp_path / "out" / "frame0_summary.csv", format="ascii.csv")
    assert np.isclose(csv["dark_e"][0], summary["dark_e"][0])
    with pytest.raises(Exception, match="no such file"):
        process_file(paths[1], tmp_path / "out2", method="classical", run_mask=tmp_path / "missing.fits")


def test_write_run_mask_is_atomic_and_refuses_overwrite(tmp_path):
    maps = {"CCD_A": np.zeros((4, 5), np.uint8)}
    write_run_mask(maps, tmp_path / "run_mask.fits", n_frames=3)
    with pytest.raises(Exception, match="exists"):
        write_run_mask(maps, tmp_path / "run_mask.fits", n_frames=3)
    assert read_run_mask(tmp_path / "run_mask.fits", "CCD_A", (4, 5)).shape == (4, 5)
    assert list(tmp_path.iterdir()) == [tmp_path / "run_mask.fits"]


@pytest.mark.slow
def test_damicm_sample_mask_per_ccd_and_dark(damicm_sample, tmp_path):
    process_file(damicm_sample, tmp_path, method="classical")
    with fits.open(tmp_path / "damicm_module_test_seg.fits") as hdul:
        summary = Table(hdul["SUMMARY"].data)
        assert [hdu.name for hdu in hdul if hdu.name.startswith("MASK")] == [
            f"MASK_CCD_{name}" for name in "ABDC"]
    assert np.all((summary["dark_e"] > 0.7) & (summary["dark_e"] < 1.0))
    assert np.all(summary["exposure_s"] == 500.0) and np.all(summary["readout_s"] > 3000)
