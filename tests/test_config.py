import pytest

from ccdseg.errors import ConfigError
from ccdseg.sim.config import PRESETS, SimConfig, load_config


def test_presets_have_their_physics():
    damic, skipper, thesis = (load_config(p) for p in ("damic", "skipper", "thesis"))
    assert damic.detector.noise_e == pytest.approx(2.0)
    assert skipper.detector.noise_e == pytest.approx(2.7 / 500 ** 0.5)  # 0.12 e-, DAMIC-M module
    assert skipper.detector.noise_e < 0.2
    assert thesis.detector.pedestal_adu == 8800.0
    assert thesis.glow.amplitude_e == (1400.0, 1500.0) and thesis.glow.shapes == ("band",)
    assert thesis.hot.amplitude_e == (2200.0, 2200.0)
    assert set(PRESETS) == {"damic", "skipper", "damicm", "thesis"}
    damicm = load_config("damicm")  # the bundled module test's readout timing and measured artefacts
    assert damicm.detector.n_samples == skipper.detector.n_samples
    assert damicm.detector.noise_e == pytest.approx(0.14, rel=0.01)
    assert (damicm.detector.exposure_s, damicm.detector.row_readout_s) == (500.0, 11.78)
    assert damicm.glow.probability == 0.0 and damicm.hot.columns == (0, 0) and damicm.hot.rows == (0, 0)
    assert damicm.clusters.fe55_per_mpix[0] > 0 and damicm.clusters.muons_per_mpix == (0.0, 0.0)


def test_toml_file_and_overrides(tmp_path):
    path = tmp_path / "sim.toml"
    path.write_text('preset = "skipper"\n[detector]\nheight = 64\nwidth = 80\n[glow]\nshapes = ["edge"]\n')
    config = load_config(path=path, overrides=["detector.width=96", "clusters.fano=0.16"])
    assert (config.detector.height, config.detector.width) == (64, 96)
    assert config.detector.gain_adu_per_e == 1.3  # from the preset named in the file
    assert config.glow.shapes == ("edge",)
    assert config.clusters.fano == 0.16
    assert isinstance(config, SimConfig)


@pytest.mark.parametrize("overrides, message", [
    ({"detector.read_noise_e": -1.0}, "detector.read_noise_e"),
    ({"detector.height": 0}, "detector.height"),
    ({"detector.width": 0}, "detector.width"),
    ({"detector.height": "tall"}, "detector.height must be an integer"),
    ({"detector.gain_adu_per_e": "x"}, "detector.gain_adu_per_e must be a number"),
    ({"detector.bogus": 1}, "unknown config key detector.bogus"),
    ({"optics.focus": 1}, "unknown config section 'optics'"),
    ({"hot.amplitude_e": [10.0, 1.0]}, "hot.amplitude_e"),
    ({"glow.shapes": ["star"]}, "glow.shapes"),
    ({"glow.probability": 1.5}, "glow.probability"),
    ({"detector.n_samples": 0}, "detector.n_samples"),
])
def test_bad_values_are_rejected_naming_the_parameter(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config("damic", overrides=overrides)


def test_unknown_preset_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'lbc'"):
        load_config("lbc")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(path=tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[detector\nheight = 3")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path=bad)
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(overrides=["detector.height"])
