"""Frame statistics, the pixel-integrated Gaussian fit, the fidelity additions to the simulator and simulate --like."""

import numpy as np
import pytest

from ccdseg.calib import frame
from ccdseg.cli import main
from ccdseg.measure.like import fit_like
from ccdseg.measure.psf_fit import fit_point_gaussian, fit_point_gaussians, integrated_gaussian
from ccdseg.sim import artefacts, events
from ccdseg.sim.config import load_config
from ccdseg.sim.simulate import rice_quantise, simulate_image


def test_point_gaussian_fit_is_unbiased_with_calibrated_errors():
    rng = np.random.default_rng(3)
    truth = (1567.0, 6.3, 5.8, 1.35, 1.2)
    expected = integrated_gaussian((13, 13), *truth) + 0.9
    fits = [fit_point_gaussian(rng.poisson(expected) + rng.normal(0, 0.15, expected.shape), noise_e=0.15, dark_e=0.9)
            for _ in range(100)]
    charge = np.array([f.amplitude_e for f in fits])
    sigma_x = np.array([f.sigma_x for f in fits])
    assert charge.mean() == pytest.approx(1567, rel=0.01)
    assert sigma_x.mean() == pytest.approx(1.35, rel=0.01)
    assert np.mean([f.sigma_y for f in fits]) == pytest.approx(1.2, rel=0.01)
    # the quoted uncertainty is the scatter of the fits, and chi2/dof is about 1 for a true Gaussian
    assert np.mean([f.sigma_x_err for f in fits]) == pytest.approx(sigma_x.std(), rel=0.25)
    assert np.median([f.chi2_dof for f in fits]) == pytest.approx(1.0, abs=0.15)


def test_point_fit_of_a_deposit_narrower_than_a_pixel_keeps_its_charge():
    # a front-side X-ray: nearly all of it in one pixel; a fit started a pixel wide used to slide to no charge
    rng = np.random.default_rng(5)
    stamps, widths = [], rng.uniform(0.1, 0.35, 60)
    for sigma in widths:
        x, y = rng.uniform(4.5, 5.5, 2)
        stamps.append(rng.poisson(integrated_gaussian((11, 11), 1500.0, x, y, sigma, sigma) + 0.9)
                      + rng.normal(0, 0.15, (11, 11)))
    fits = fit_point_gaussians(stamps, noise_e=0.15, dark_e=0.9)
    charge = np.array([f.amplitude_e for f in fits])
    assert np.all(np.abs(charge / 1500 - 1) < 0.08)
    assert np.all(np.array([f.sigma for f in fits]) < 0.45)
    assert np.median([f.chi2_dof for f in fits]) == pytest.approx(1.0, abs=0.2)


def test_batched_point_fits_equal_single_fits():
    rng = np.random.default_rng(4)
    stamps = [rng.poisson(integrated_gaussian((h, w), 800.0, w / 2 - 0.3, h / 2 + 0.2, 0.9, 1.1) + 0.5)
              + rng.normal(0, 0.15, (h, w)) for h, w in ((7, 9), (9, 7), (11, 11), (5, 6))]
    stamps.append(np.zeros((6, 6)))  # nothing to fit, in the same size bucket as a real stamp
    masks = [np.ones(s.shape, bool) for s in stamps]
    masks[2][0, :] = False
    batch = fit_point_gaussians(stamps, noise_e=0.15, dark_e=0.5, masks=masks)
    for stamp, mask, fit in zip(stamps, masks, batch, strict=True):
        single = fit_point_gaussian(stamp, noise_e=0.15, dark_e=0.5, mask=mask)
        np.testing.assert_allclose([fit.amplitude_e, fit.x, fit.sigma_y, fit.sigma_x_err],
                                   [single.amplitude_e, single.x, single.sigma_y, single.sigma_x_err], rtol=1e-6)
    assert [f.success for f in batch] == [True] * 4 + [False]
    assert batch[0].amplitude_e == pytest.approx(800, rel=0.1) and batch[0].sigma_y == pytest.approx(1.1, rel=0.2)


def test_point_gaussian_fit_of_an_empty_stamp_is_nan():
    fit = fit_point_gaussian(np.zeros((7, 7)), noise_e=0.15, dark_e=0.5)
    assert not fit.success and np.isnan(fit.sigma)


def test_zero_peak_and_dark_ramps_of_a_skipper_frame():
    rng = np.random.default_rng(1)
    rows = np.arange(300)[:, None]
    dark = 0.2 + 0.004 * rows + 0.1 * np.arange(500)[None, :] / 499
    image_e = rng.poisson(dark) + rng.normal(0.0, 0.16, dark.shape) - 0.37
    offset, noise = frame.zero_peak(image_e)
    assert offset == pytest.approx(-0.37, abs=0.005) and noise == pytest.approx(0.16, rel=0.03)
    ramps = frame.dark_ramps(frame.electron_counts(image_e, offset))
    assert ramps["level"] == pytest.approx(dark.mean(), rel=0.02)
    assert ramps["per_100_rows"] == pytest.approx(0.4, rel=0.05)
    assert ramps["across_columns"] == pytest.approx(0.1, abs=0.03)


def test_a_frame_without_resolved_electrons_is_refused():
    from ccdseg.errors import ConfigError

    image = simulate_image(load_config("damic", overrides={"detector.height": 64, "detector.width": 64}), seed=1).image
    with pytest.raises(ConfigError, match="single electrons"):
        fit_like([image])
    with pytest.raises(ConfigError, match="does not resolve single electrons"):
        fit_like([image], gain=10.0)


def test_fe55_xrays_enter_from_the_back_at_their_attenuation_length():
    config = load_config("damicm")
    assert events.attenuation_length_um(5898.8) == pytest.approx(28, abs=2)  # NIST XCOM: 29 um
    deposits = events.fe55_events(20000, (100, 100), config.clusters, 675.0, np.random.default_rng(0))
    kalpha = deposits.energy_ev == 5898.8
    assert np.mean(~kalpha) == pytest.approx(config.clusters.fe55_kbeta_fraction, abs=0.01)
    from_back = 675.0 - deposits.z
    assert from_back.min() >= 0 and np.mean(from_back[kalpha]) == pytest.approx(
        events.attenuation_length_um(5898.8), rel=0.03)


def test_diffusion_without_packets_gives_the_law_width():
    """A 5.9 keV deposit at a fixed depth, spread per electron, has the width of the diffusion law."""
    config = load_config("damicm")
    depth = 600.0
    law = config.clusters.diffusion_a_um2, config.clusters.diffusion_b_per_um
    sigma_px = events.diffusion_sigma_um(depth, *law) / 15
    rng = np.random.default_rng(2)
    widths = []
    for _ in range(40):
        deposit = events._deposits("point", [10.2], [9.7], [depth], [1565.0], [0], [5898.8], [depth])
        pixel, charge, _ = events.diffuse(deposit, (21, 21), config.clusters, 15.0, rng)
        stamp = np.bincount(pixel, weights=charge, minlength=21 * 21).reshape(21, 21)
        widths.append(fit_point_gaussian(stamp, noise_e=0.15).sigma)
    assert np.mean(widths) == pytest.approx(sigma_px, rel=0.02)


def test_rice_quantisation_rounds_to_a_dithered_fraction_of_the_row_noise():
    rng = np.random.default_rng(4)
    image = rng.normal(100.0, 2.0, (50, 400))
    quantised = rice_quantise(image, 4.0, rng)
    error = quantised - image
    step = 0.6052 * np.median(np.abs(2 * image[:, 2:-2] - image[:, :-4] - image[:, 4:]), axis=1) / 4
    assert np.all(np.abs(error) <= step[:, None] / 2 + 1e-9)
    assert error.std() == pytest.approx(np.mean(step) / np.sqrt(12), rel=0.05)  # uniform, as dithered


def test_column_ramp_and_first_column_offset():
    config = load_config("damicm", overrides={"detector.height": 64, "detector.width": 100})
    dark = artefacts.dark_current_map((64, 100), config.detector)
    assert dark[:, -1].mean() - dark[:, 0].mean() == pytest.approx(0.07 + 11.78 * 31 / 86400, rel=0.01)
    sim = simulate_image(config, seed=1)
    electrons = (sim.image - config.detector.pedestal_adu) / sim.config.detector.gain_adu_per_e
    excess = np.median(electrons[:, 0] - sim.charge["dark"][:, 0] - sim.charge["cluster"][:, 0])
    assert excess == pytest.approx(2.4, abs=0.1)


def test_gain_spread_draws_one_gain_per_frame_and_records_it():
    config = load_config("damicm", overrides={"detector.height": 32, "detector.width": 32})
    gains = [simulate_image(config, seed=s).config.detector.gain_adu_per_e for s in range(30)]
    assert np.std(gains) / np.mean(gains) == pytest.approx(0.02, rel=0.4)
    assert config.detector.gain_adu_per_e == 1.36  # the caller's config is left alone


@pytest.fixture(scope="module")
def known_frames():
    """Two skipper frames of known readout, dark current and diffusion, without RICE rounding."""
    overrides = {"detector.height": 320, "detector.width": 640, "detector.gain_adu_per_e": 1.8,
                 "detector.gain_spread": 0.0, "detector.rice_q": 0.0, "detector.read_noise_e": 3.8,
                 "detector.dark_current_e_per_day": 40.0, "clusters.diffusion_a_um2": 420.0}
    config = load_config("damicm", overrides=overrides)
    return config, [simulate_image(config, seed=s).image for s in (11, 12)]


def test_like_recovers_the_known_parameters(known_frames):
    config, images = known_frames
    det = config.detector
    fitted = fit_like(images, preset="damicm", timing=(det.exposure_s, det.row_readout_s))
    d, c = fitted["detector"], fitted["clusters"]
    assert d["gain_adu_per_e"] == pytest.approx(1.8, rel=0.01)
    assert d["read_noise_e"] / d["n_samples"] ** 0.5 == pytest.approx(det.noise_e, rel=0.05)
    assert d["dark_current_e_per_day"] == pytest.approx(40.0, rel=0.05)
    like = load_config("damicm", overrides={f"{s}.{k}": v for s in ("detector", "clusters")
                                            for k, v in fitted[s].items()})
    shape = (320, 640)
    assert artefacts.dark_current_map(shape, like.detector).mean() + like.detector.dark_charge_e[0] == pytest.approx(
        artefacts.dark_current_map(shape, det).mean(), rel=0.05)
    assert c["diffusion_a_um2"] == pytest.approx(420.0, rel=0.10)


def test_simulate_like_writes_a_config_that_simulate_reads(known_frames, tmp_path, capsys):
    from astropy.io import fits

    _, images = known_frames
    frame_path = tmp_path / "frame.fits"
    frame = images[0][:160, :320]  # a quarter frame: the plumbing, not the precision, is tested here
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(frame, name="CCD_A")]).writeto(frame_path)
    out = tmp_path / "out"
    assert main(["simulate", str(out), "--like", str(frame_path), "--preset", "damicm", "--n", "1"]) == 0
    assert (out / "like.toml").is_file() and (out / "sim_00000.fits").is_file()
    config = load_config(path=out / "like.toml")
    assert config.detector.gain_adu_per_e == pytest.approx(1.8, rel=0.01)
    assert fits.getdata(out / "sim_00000.fits").shape == (160, 320)
    assert main(["simulate", str(tmp_path / "b"), "--like", str(frame_path), "--config", str(out / "like.toml")]) == 2
    assert "--like" in capsys.readouterr().err
