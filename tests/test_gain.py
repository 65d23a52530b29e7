"""The one gain policy: option > the image's header > the primary header > a measurement > unknown."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from ccdseg.calib.gain import resolve_gain
from ccdseg.classes import CLUSTER
from ccdseg.errors import ConfigError, InputError
from ccdseg.evaluate.evaluation import read_simulated
from ccdseg.pipeline.job import output_paths, process_file
from ccdseg.sim.config import load_config
from ccdseg.sim.simulate import simulate_image
from ccdseg.sim.truth import write_simulation


def _skipper_frame(gain=1.3, seed=0):
    """Integer skipper-like frame: 0.5 e-/pix of Poisson charge, 0.15 e- noise (ADU)."""
    rng = np.random.default_rng(seed)
    electrons = rng.poisson(0.5, (300, 400)) + rng.normal(0.0, 0.15, (300, 400))
    return np.round(electrons * gain - 38.3)


def test_resolve_gain_takes_the_first_source_that_knows():
    frame = _skipper_frame(gain=10.0)
    image, primary, empty = fits.Header({"GAIN": 2.0}), fits.Header({"GAIN": 3.0}), fits.Header()
    assert resolve_gain(frame, (image, primary), 1.5) == (1.5, "option")
    assert resolve_gain(frame, (image, primary)) == (2.0, "header")
    assert resolve_gain(frame, (empty, primary)) == (3.0, "header")
    value, source = resolve_gain(frame, (empty, empty))
    assert source == "estimated" and value == pytest.approx(10.0, rel=0.01)
    noisy = np.round(np.random.default_rng(1).normal(1000.0, 3.0, (300, 300)))  # no single-electron peaks
    assert resolve_gain(noisy, (empty,)) == (None, "none")
    with pytest.raises(ConfigError, match="no GAIN header key"):
        resolve_gain(noisy, (empty,), required=True)
    with pytest.raises(ConfigError, match="header GAIN = -1.0: must be a positive number"):
        resolve_gain(frame, (fits.Header({"GAIN": -1.0}), primary))


def _mef(path, primary_gain=None, image_gain=None):
    """A file with an empty primary HDU and one noisy image extension (no measurable gain)."""
    rng = np.random.default_rng(2)
    data = rng.normal(1000.0, 3.0, (60, 80))
    data[20:23, 30:33] += 500.0
    primary = fits.PrimaryHDU()
    if primary_gain is not None:
        primary.header["GAIN"] = primary_gain
    image = fits.ImageHDU(np.round(data).astype(">i2"), name="CCD")
    if image_gain is not None:
        image.header["GAIN"] = image_gain
    fits.HDUList([primary, image]).writeto(path)
    return path


def test_pipeline_falls_back_to_the_primary_header(tmp_path):
    out = tmp_path / "out"
    path = _mef(tmp_path / "primary.fits", primary_gain=3.0)
    result = process_file(path, out, method="classical")
    assert (result.images[0].gain, result.images[0].gain_source) == (3.0, "header")
    with fits.open(output_paths(path, out)["seg"]) as seg:
        assert seg["LABELS"].header["GAINUSED"] == 3.0 and seg["LABELS"].header["GAINSRC"] == "header"
        clusters = Table.read(seg["CLUSTERS"])
    assert len(clusters) > 0
    np.testing.assert_allclose(clusters["charge_e"], clusters["charge_adu"] / 3.0)
    # the image's own GAIN wins over the primary's; without either, the gain is unknown
    both = process_file(_mef(tmp_path / "both.fits", primary_gain=3.0, image_gain=2.0), out, method="classical")
    assert (both.images[0].gain, both.images[0].gain_source) == (2.0, "header")
    neither = process_file(_mef(tmp_path / "neither.fits"), out, method="classical")
    assert (neither.images[0].gain, neither.images[0].gain_source) == (None, "none")


def _simulated_file(tmp_path, preset, name="sim.fits"):
    # point deposits alone, unsaturated, on a dark CCD without glow or defects: the image's excess is their charge
    quiet = {"detector.height": 192, "detector.width": 192, "detector.adc_max_adu": None, "glow.probability": 0.0,
             **{f"hot.{key}": [0, 0] for key in ("pixels_per_mpix", "columns", "rows", "streaks_per_mpix")},
             **{f"clusters.{key}": [0, 0] for key in ("worms_per_mpix", "muons_per_mpix", "alphas_per_mpix")}}
    sim = simulate_image(load_config(preset, overrides=quiet), seed=4)
    write_simulation(sim, tmp_path / name)
    return tmp_path / name, sim


def _drop_gain(path):
    with fits.open(path, mode="update") as hdul:
        del hdul[0].header["GAIN"]


def test_evaluation_reads_charge_at_the_files_gain(tmp_path):
    path, sim = _simulated_file(tmp_path, "damic")  # 10 ADU/e-
    _, labels, _, _, charge = read_simulated(path)
    cluster = labels == CLUSTER
    true = sim.charge["cluster"][cluster].sum()
    assert true > 1000  # electrons
    assert charge[cluster].sum() == pytest.approx(true, rel=0.05)
    assert np.all(charge[~cluster] == 0)


def test_evaluation_measures_an_absent_gain_or_refuses_the_file(tmp_path):
    skipper, sim = _simulated_file(tmp_path, "skipper", "skipper.fits")  # 1.3 ADU/e-, single electrons resolved
    _drop_gain(skipper)
    _, labels, _, _, charge = read_simulated(skipper)
    cluster = labels == CLUSTER
    assert charge[cluster].sum() == pytest.approx(sim.charge["cluster"][cluster].sum(), rel=0.05)
    thesis, _ = _simulated_file(tmp_path, "thesis", "thesis.fits")  # 12 e- noise: no peaks to measure the gain on
    _drop_gain(thesis)
    with pytest.raises(InputError, match="no GAIN header key") as raised:
        read_simulated(thesis)
    assert str(raised.value).startswith(str(thesis)) and "--gain" not in str(raised.value)
