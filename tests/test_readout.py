"""Real readouts: amplifier segments, the baseline along the row, honest gains, the readout simulator."""

import numpy as np
import pytest
from astropy.io import fits

from ccdseg.calib.amplifiers import (
    data_section,
    find_segments,
    header_sections,
    parse_layout,
    parse_section,
    step_boundaries,
)
from ccdseg.calib.background import robust_sigma, row_pedestal
from ccdseg.calib.baseline import column_baseline, subtract_zero
from ccdseg.calib.gain import estimate_gain, resolve_gain
from ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL
from ccdseg.errors import ConfigError
from ccdseg.measure.catalog import find_clusters, saturated_pixels
from ccdseg.nn.dataset import simulated_tiles
from ccdseg.nn.normalize import equalize_noise, network_input, normalize
from ccdseg.pipeline.options import ProcessOptions
from ccdseg.sim.config import PRESETS, load_config
from ccdseg.sim.readout import random_readout
from ccdseg.sim.simulate import simulate_image
from conftest import DAMICM_SAMPLE

#: Gains of the bundled sample's CCDs from a fit of the 0-5 e- peak spacing (ADU/e-), issue 14.
SAMPLE_GAINS = {"CCD_A": 1.353, "CCD_B": 1.401, "CCD_D": 1.328, "CCD_C": 1.346}
#: Pedestal offsets (ADU) of the CCDs stitched into one 2 x 2 image.
STITCH_OFFSETS = {"CCD_A": -400.0, "CCD_B": 0.0, "CCD_D": 300.0, "CCD_C": 700.0}


def stitched_sample(rows=slice(None), cols=slice(None)):
    """The sample's CCDs (cropped) as one 2 x 2 image [[A, B], [D, C]] with pedestal offsets, and the CCDs."""
    with fits.open(DAMICM_SAMPLE) as hdus:
        ccds = {hdu.name: hdu.data[rows, cols].astype(np.float32) + STITCH_OFFSETS[hdu.name] for hdu in hdus[1:]}
    image = np.vstack([np.hstack([ccds["CCD_A"], ccds["CCD_B"]]), np.hstack([ccds["CCD_D"], ccds["CCD_C"]])])
    return image, ccds


def readout_config(preset, **readout):
    overrides = {"detector.height": 192, "detector.width": 256, **{f"readout.{k}": v for k, v in readout.items()}}
    return load_config(preset, overrides=overrides)


def test_sections_and_layouts_parse_or_fail_naming_the_key():
    assert parse_section("[3:10,2:5]", (8, 12)) == (slice(1, 5), slice(2, 10))
    assert data_section(fits.Header({"DATASEC": "[1:4,1:2]"}), (8, 12)) == (slice(0, 2), slice(0, 4))
    assert data_section(fits.Header(), (8, 12)) is None
    with pytest.raises(ConfigError, match="BIASSEC"):
        parse_section("[0:10,1:5]", (8, 12), "BIASSEC")
    assert parse_layout("2x2") == (2, 2) and parse_layout("auto") == "auto"
    for bad in ("2y2", "0x2", 4):
        with pytest.raises(ConfigError, match="amplifiers"):
            ProcessOptions(amplifiers=bad)


def test_header_sections_of_noao_lta_and_damicm_headers():
    shape = (40, 100)
    two = fits.Header({"DATASECA": "[1:50,1:40]", "DATASECB": "[51:100,1:40]"})
    assert header_sections([two], shape) == [(slice(0, 40), slice(0, 50)), (slice(0, 40), slice(50, 100))]
    lta = fits.Header({"CCDNCOL": 120, "CCDNPRES": 7, "NCOL": 100, "NSAMP": 300})
    assert header_sections([lta], shape) == [(slice(0, 40), slice(7, 67))]  # 7 prescan, 33 overscan columns
    with fits.open(DAMICM_SAMPLE) as hdus:  # partial readout from column 3900: every column read is active
        assert header_sections([hdus[1].header, hdus[0].header], (320, 640)) == [(slice(0, 320), slice(0, 640))]
    assert header_sections([fits.Header()], shape) is None


def test_pedestal_steps_between_amplifiers_are_found_and_glow_steps_are_not():
    rng = np.random.default_rng(0)
    image = rng.normal(1000.0, 3.0, (200, 300))
    image[:, 150:] += 40.0
    image[100:, :] -= 25.0
    assert step_boundaries(image) == [150]
    assert step_boundaries(image.T) == [100]
    assert step_boundaries(rng.normal(1000.0, 3.0, (200, 300))) == []
    # glow: a band of charge (Poisson, gain 1) on one half brings its shot noise
    glow = rng.normal(1000.0, 3.0, (200, 300))
    glow[:, 150:] += rng.poisson(40.0, (200, 150))
    assert step_boundaries(glow) == []


def test_find_segments_of_the_stitched_sample_measure_each_ccd():
    image, _ = stitched_sample()
    segments = find_segments(image)
    assert [s.section for s in segments] == ["[1:640,1:320]", "[641:1280,1:320]", "[1:640,321:640]",
                                             "[641:1280,321:640]"]
    for segment, (name, gain) in zip(segments, SAMPLE_GAINS.items(), strict=True):
        assert segment.gain.value == pytest.approx(gain, rel=0.02), name
        assert segment.pedestal == pytest.approx(np.median(image[segment.rows, segment.cols]))
    assert [s.section for s in find_segments(image, layout="none", gain=False)] == ["[1:1280,1:640]"]
    assert len(find_segments(image, layout="4x1", gain=False)) == 4


def test_sample_gain_per_ccd_within_two_per_cent_with_uncertainty():
    with fits.open(DAMICM_SAMPLE) as hdus:
        for hdu in hdus[1:]:
            estimate = estimate_gain(hdu.data.astype(np.float64))
            assert estimate.value == pytest.approx(SAMPLE_GAINS[hdu.name], rel=0.02)
            assert 0 < estimate.error < 0.005 * estimate.value
            assert estimate.n_peaks >= 3 and estimate.quality > 5


@pytest.mark.parametrize("gain", [200.0, 350.0, 600.0])
def test_gain_is_unknown_on_lta_like_frames_with_noise_of_0p9_electrons(gain):
    """15-sample LTA frames (noise 0.9 e-), large gains and pedestals, saw-tooth baseline, odd columns."""
    rng = np.random.default_rng(int(gain))
    electrons = rng.poisson(0.3, (40, 5000)) + rng.normal(0.0, 0.9, (40, 5000))
    columns = np.arange(5000)
    image = np.round(gain * (electrons + 3.0 * np.exp(-(columns % 250) / 40.0)) + 3e5)
    image[:, rng.integers(0, 5000, 4)] = 3e5 + 6000.0
    image[:, :8] = rng.normal(3e5, 0.05 * gain, (40, 8))
    assert estimate_gain(image) is None
    assert resolve_gain(image) == (None, "none")
    noisier = np.round(gain * (rng.poisson(0.3, (300, 600)) + rng.normal(0.0, 0.5, (300, 600))) - 1e4)
    assert estimate_gain(noisier) is None


@pytest.mark.parametrize(("preset", "seed", "fake"), [("thesis", 1, 1450.0), ("thesis", 2, 1491.0),
                                                     ("damic", 2, 1247.0), ("damic", 4, 248.0)])
def test_gain_is_unknown_where_glow_or_a_hot_column_mimics_a_second_peak(preset, seed, fake):
    """Conventional frames whose glow band or hot column sits one "gain" above the background.

    Before the peak widths were compared, these gave the ``fake`` gain (ADU/e-) with a 0.1-2 % error; the
    upper level is 3-16 times wider than the 0 e- peak, by its shot noise.
    """
    sim = simulate_image(load_config(preset, overrides={"detector.height": 256, "detector.width": 512}), seed=seed)
    assert estimate_gain(sim.image) is None
    assert resolve_gain(sim.image, segments=find_segments(sim.image)) == (None, "none")


def test_skipper_comb_places_the_zero_under_glow_where_quiet_columns_cannot():
    noise = load_config("skipper").detector.noise_e
    overrides = {"detector.height": 256, "detector.width": 512}
    sawtooth = {"readout.sawtooth_e": [3 * noise, 8 * noise], "readout.sawtooth_period_px": [60, 200],
                "readout.sawtooth_decay_px": [20.0, 80.0], "readout.baseline_jumps": [1, 3],
                "readout.jump_e": [2 * noise, 5 * noise]}
    for seed in (0, 1, 3):  # edge or corner glow over 88-128 columns
        plain = simulate_image(load_config("skipper", overrides=overrides), seed=seed)
        sim = simulate_image(load_config("skipper", overrides=overrides | sawtooth), seed=seed)
        gain = sim.config.detector.gain_adu_per_e
        truth = np.median(sim.image - plain.image, axis=0) / gain  # the same charge: only the baseline differs
        glow = plain.charge["glow_expected"].mean(axis=0)
        assert np.ptp(truth[glow > 0.3]) > 0.5  # the saw-tooth under the glow: no quiet column shows it
        _, _, baselines = subtract_zero(sim.image, find_segments(sim.image, gain=False))
        error = baselines[0] / gain - truth
        error -= np.median(error)
        # to 0.05 e- wherever the zero decides the label: brighter glow is glow at any zero
        assert np.abs(error[glow < 2]).max() < 0.05


def test_common_gain_of_segments_only_when_all_resolved_and_alike():
    image, _ = stitched_sample()
    segments = find_segments(image)
    # the CCDs differ by up to 5 %: one gain for the whole catalogue would be a guess
    assert resolve_gain(image, segments=segments) == (None, "none")
    alike = find_segments(image[:320, :640], layout="2x1")
    value, source = resolve_gain(image[:320, :640], segments=alike)
    assert source == "estimated" and value == pytest.approx(SAMPLE_GAINS["CCD_A"], rel=0.01)


def test_sawtooth_baseline_is_removed_and_glow_is_not():
    clean = simulate_image("damic", seed=0)  # a glow-free frame
    assert not (clean.labels == GLOWING).any()
    noise_adu = clean.config.detector.noise_e * clean.config.detector.gain_adu_per_e
    columns = np.arange(clean.image.shape[1])
    sawtooth = 5 * noise_adu * np.exp(-(columns % 100) / 30.0)
    residual = clean.image + sawtooth - row_pedestal(clean.image + sawtooth)[:, None]
    baseline = column_baseline(residual, robust_sigma(residual))
    assert np.abs(baseline - (sawtooth - np.median(sawtooth))).max() < 0.6 * noise_adu
    # a frame with strong glow and no baseline: nothing to remove, the glow stays
    glowing = simulate_image(load_config("damic", overrides={"glow.probability": 1.0, "glow.shapes": ["edge"],
                                                              "glow.amplitude_e": [100.0, 200.0]}), seed=2)
    segments = find_segments(glowing.image, gain=False)
    zeroed, _, baselines = subtract_zero(glowing.image, segments)
    assert baselines[0] is None
    np.testing.assert_allclose(zeroed, glowing.image - row_pedestal(glowing.image)[:, None], atol=0.01)


def test_baseline_under_corner_glow_is_measured_in_the_rows_the_glow_leaves_quiet():
    # glow in the top rows of the last 112 columns, and a baseline jump of 5 sigma under it at column 460: the
    # columns are quiet further down, where the jump shows; glow along whole columns stays glow
    rng = np.random.default_rng(8)
    noise = 2.0
    image = rng.normal(0.0, noise, (256, 512))
    baseline = np.where(np.arange(512) >= 460, 5 * noise, 0.0)
    glow = np.zeros(image.shape)
    glow[:100, 400:] = 6.0
    corner = image + rng.poisson(glow) + baseline
    residual = corner - row_pedestal(corner)[:, None]
    found = column_baseline(residual, robust_sigma(residual))
    error = found - (baseline - np.median(baseline))
    assert np.abs(error - np.median(error)).max() < 0.4 * noise  # a jump missed would be off by 5 sigma
    edge = np.zeros(image.shape)
    edge[:, 400:] = 6.0
    whole = image + rng.poisson(edge) + baseline
    residual = whole - row_pedestal(whole)[:, None]
    # no row shows those columns' zero: nothing is removed, and the glow is not taken for a baseline
    assert column_baseline(residual, robust_sigma(residual)) is None


def test_noise_is_measured_after_the_baseline_is_removed():
    # a saw-tooth of 3-8 noise sigma widens the spread of the rows four times; the network's unit is the noise
    config = load_config("damic", overrides={"glow.probability": 0.0, "readout.sawtooth_e": [6.0, 16.0],
                                             "readout.sawtooth_period_px": [60, 200]})
    noise_adu = config.detector.noise_e * config.detector.gain_adu_per_e
    sim = simulate_image(config, seed=0)
    _, noise, baselines = subtract_zero(sim.image, find_segments(sim.image, gain=False))
    assert baselines[0] is not None
    assert noise[0] == pytest.approx(noise_adu, rel=0.05)


def test_network_input_is_the_raw_frame_or_the_zeroed_segments():
    plain = simulate_image(readout_config("damic"), seed=1).image
    image, stats, noise = network_input(plain, find_segments(plain, gain=False))
    assert image is plain and noise is None
    np.testing.assert_allclose(stats.pedestal, row_pedestal(plain, 15))
    amplifiers = simulate_image(readout_config("damic", amplifier_cols=2, pedestal_offset_adu=[300.0, 300.0]),
                                seed=1).image
    segments = find_segments(amplifiers, gain=False)
    image, stats, noise = network_input(amplifiers, segments)
    assert len(segments) == len(noise) == 2 and not stats.pedestal.any()
    # each half zeroed on its own: no step of 300 ADU left at the boundary
    assert abs(np.median(image[:, :128]) - np.median(image[:, 128:])) < 0.3 * stats.sigma


def test_training_mix_draws_real_readout_effects():
    config = load_config("skipper")
    rng = np.random.default_rng(0)
    drawn = [random_readout(config, rng) for _ in range(40)]
    assert config.readout == load_config("skipper").readout  # the given config is left alone
    assert all(c.readout.enabled for c in drawn if c.readout.amplifier_cols * c.readout.amplifier_rows > 1)
    assert {(c.readout.amplifier_cols, c.readout.amplifier_rows) for c in drawn} == {(1, 1), (2, 1), (1, 2), (2, 2)}
    teeth = [c.readout.sawtooth_e[1] / config.detector.noise_e for c in drawn]
    assert 0.3 < np.mean(np.array(teeth) > 0) < 0.7 and max(teeth) == pytest.approx(8.0)
    with pytest.raises(ConfigError, match="readout_share"):
        next(simulated_tiles(readout_share=1.5))


def test_pipeline_removes_a_sawtooth_and_keeps_the_glow_labelled(tmp_path):
    from ccdseg.pipeline.job import process_file

    config = load_config("damic", overrides={"glow.probability": 1.0, "glow.shapes": ["edge"],
                                             "readout.sawtooth_e": [8.0, 12.0], "readout.sawtooth_period_px": [60, 90]})
    sim = simulate_image(config, seed=3)
    fits.PrimaryHDU(sim.image).writeto(tmp_path / "saw.fits")
    process_file(tmp_path / "saw.fits", tmp_path / "out")
    labels = fits.getdata(tmp_path / "out" / "saw_seg.fits", "LABELS")
    glow, bright = sim.labels == GLOWING, sim.charge["glow_expected"] >= 5 * config.detector.noise_e
    assert np.mean(labels[glow & bright] == GLOWING) > 0.9
    # measured 1.3 % next to the glow, where the baseline under it is interpolated (0.5 % with amplifiers="none")
    assert np.mean(labels[sim.labels == BACKGROUND] == GLOWING) < 0.02


def test_equalized_segments_are_normalised_each_on_its_own():
    image, _ = stitched_sample(slice(0, 160), slice(0, 320))
    segments = find_segments(image, layout="2x2", gain=False)
    zeroed, noise, _ = subtract_zero(image, segments)
    before = zeroed.copy()
    stats = equalize_noise(zeroed, segments, noise)
    network_input = normalize(zeroed, stats=stats)
    for segment, sigma in zip(segments, noise, strict=True):
        expected = np.arcsinh(before[segment.rows, segment.cols] / (3.0 * sigma))
        np.testing.assert_allclose(network_input[segment.rows, segment.cols], expected, atol=1e-5)
    equalize_noise(zeroed, segments, noise, undo=True)
    np.testing.assert_allclose(zeroed, before, rtol=1e-6, atol=1e-6)


def test_catalogue_flags_saturation_and_drops_clusters_without_charge():
    image = np.zeros((20, 20))
    labels = np.zeros((20, 20), np.uint8)
    image[2:4, 2:4], labels[2:4, 2:4] = 50.0, CLUSTER
    image[:, 10], labels[:, 10] = 65535.0, CLUSTER      # a full-height saturated column
    image[15, 15], labels[15, 15] = -3.0, CLUSTER       # a negative component: no charge, no cluster
    saturated = saturated_pixels(image)
    table = find_clusters(image, labels, pedestal=0.0, saturated=saturated)
    assert list(table["id"]) == [1, 2] and list(table["saturated"]) == [True, False]
    assert saturated_pixels(image, fits.Header({"SATURATE": 40.0})).sum() == 4 + 20
    assert saturated_pixels(np.full((3, 3), 1000.0)) is None


def test_presets_keep_the_readout_off():
    for preset in PRESETS:
        assert not load_config(preset).readout.enabled


def test_readout_simulation_labels_are_exact():
    config = readout_config("damic", amplifier_cols=2, amplifier_rows=2, dead_columns=[2, 2],
                            negative_columns=[1, 1], saturated_columns=[1, 1], sawtooth_e=[3.0, 6.0])
    config.detector.rice_q = 4.0
    sim = simulate_image(config, seed=4)
    assert sim.image.shape == sim.labels.shape == (192, 256)
    # a saturated column in each amplifier's part, over its full height: at the ADC limit, labelled hot pixel
    for rows in (slice(0, 96), slice(96, 192)):
        for cols in (slice(0, 128), slice(128, 256)):
            full = np.flatnonzero((sim.image[rows, cols] == 65535.0).all(axis=0))
            assert full.size == 1 and np.all(sim.labels[rows, cols][:, full] == HOT_PIXEL)
    # each amplifier has its own pedestal
    quadrants = [np.median(sim.image[r, c]) for r in (slice(0, 96), slice(96, 192)) for c in (slice(0, 128),
                                                                                              slice(128, 256))]
    assert np.ptp(quadrants) > 50.0
    # every truth id marks its own pixels, within its bounding box
    for row in sim.truth[sim.truth["npix"] > 0]:
        ys, xs = np.nonzero(sim.ids == row["id"])
        if ys.size:
            assert row["xmin"] <= xs.min() and xs.max() <= row["xmax"]
            assert row["ymin"] <= ys.min() and ys.max() <= row["ymax"]
    assert np.all(sim.labels[sim.ids > 0] == CLUSTER)
    # the same seed gives the same image; the baseline is electronic: the same labels as without it
    np.testing.assert_array_equal(simulate_image(config, seed=4).image, sim.image)
    plain = readout_config("damic", sawtooth_e=[3.0, 6.0])
    np.testing.assert_array_equal(simulate_image(plain, seed=5).labels,
                                  simulate_image(readout_config("damic"), seed=5).labels)


def test_dead_columns_read_no_charge():
    config = readout_config("damic", dead_columns=[3, 3])
    sim, without = simulate_image(config, seed=1), simulate_image(readout_config("damic"), seed=1)
    dead = np.flatnonzero((sim.image != without.image).any(axis=0))
    assert dead.size == 3
    assert np.all(sim.labels[:, dead] == BACKGROUND)
    noise_adu = config.detector.noise_e * config.detector.gain_adu_per_e
    pedestal = np.median(np.median(sim.image, axis=1))
    assert abs(np.median(sim.image[:, dead]) - pedestal) < 0.2 * noise_adu
    assert robust_sigma(sim.image[:, dead]) == pytest.approx(noise_adu, rel=0.15)


def test_stitched_sample_labels_equal_the_per_ccd_labels(tmp_path):
    """Issue 14's self-test on a crop of every CCD (the whole frames: benchmarks/readouts.py)."""
    from ccdseg.pipeline.job import process_file

    rows, cols = slice(0, 160), slice(0, 320)
    image, ccds = stitched_sample(rows, cols)
    fits.PrimaryHDU(image).writeto(tmp_path / "stitched.fits")
    fits.HDUList([fits.PrimaryHDU()] + [fits.ImageHDU(data - STITCH_OFFSETS[name], name=name)
                                        for name, data in ccds.items()]).writeto(tmp_path / "ccds.fits")
    # the amplifier normalisation alone: the object step downstream redraws glow pieces near clusters,
    # and amplifies what small glow differences there are (99.36 % agreement on this crop with it)
    result = process_file(tmp_path / "stitched.fits", tmp_path / "out", objects=False)
    process_file(tmp_path / "ccds.fits", tmp_path / "out", objects=False)
    with fits.open(tmp_path / "out" / "stitched_seg.fits") as seg, \
            fits.open(tmp_path / "out" / "ccds_seg.fits") as per_ccd:
        header, whole = seg["LABELS"].header, seg["LABELS"].data
        parts = {name: per_ccd[f"LABELS_{name}"].data for name in ccds}
    assert header["CSAMPS"] == "2x2" and header["CSAMP4"] == "[321:640,161:320]"
    assert header["CSGAIN2"] == pytest.approx(SAMPLE_GAINS["CCD_B"], rel=0.02)
    assert header["GAINSRC"] == "none" and result.images[0].gain is None  # the CCDs' gains differ by 5 %
    expected = np.vstack([np.hstack([parts["CCD_A"], parts["CCD_B"]]), np.hstack([parts["CCD_D"], parts["CCD_C"]])])
    assert np.mean(whole == expected) >= 0.995


def test_cli_amplifiers_option_reaches_the_header_and_an_unknown_gain_is_said_once(tmp_path):
    import subprocess
    import sys

    rng = np.random.default_rng(5)
    image = rng.normal(1000.0, 3.0, (64, 96)).astype(np.float32)
    fits.PrimaryHDU(image).writeto(tmp_path / "frame.fits")
    run = subprocess.run([sys.executable, "-m", "ccdseg.cli", "predict", str(tmp_path / "frame.fits"), "--out-dir",
                          str(tmp_path / "out"), "--amplifiers", "2x2", "--method", "classical", "--no-progress"],
                         capture_output=True, text=True, check=True)
    assert fits.getheader(tmp_path / "out" / "frame_seg.fits", "LABELS")["CSAMPS"] == "2x2"
    assert run.stdout.count("gain unknown:") == 1
    bad = subprocess.run([sys.executable, "-m", "ccdseg.cli", "predict", str(tmp_path / "frame.fits"), "--out-dir",
                          str(tmp_path / "out2"), "--amplifiers", "2by2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "amplifiers" in bad.stderr
