import numpy as np
import pytest
from astropy.io import fits

from ccdseg import io
from ccdseg.calib.gain import resolve_gain
from ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL, IGNORE
from ccdseg.errors import ConfigError
from ccdseg.sim.config import load_config
from ccdseg.sim.paste import frame_noise, paste_events
from ccdseg.sim.simulate import label_thresholds


def synthetic_frame(seed=0, gain=1.3, noise_e=0.15, shape=(128, 192)):
    """A skipper-like frame: pedestal, readout noise and a bright real 'cluster' of unknown class."""
    rng = np.random.default_rng(seed)
    frame = -38.0 + gain * rng.normal(0.0, noise_e, shape)
    frame[40:44, 60:63] += gain * 50.0
    return frame


def test_pasted_pixels_are_the_events_charge_times_gain_and_labelled_exactly():
    frame = synthetic_frame()
    sim = paste_events(frame, "skipper", gain=1.3, seed=1)
    cluster = sim.charge["cluster"]
    assert len(sim.truth) > 0 and cluster.sum() > 100
    np.testing.assert_allclose(sim.image - frame, 1.3 * cluster, atol=1e-3)
    np.testing.assert_array_equal(cluster, np.round(cluster))  # whole electrons keep the skipper comb
    assert sim.config.detector.gain_adu_per_e == 1.3
    assert sim.config.detector.noise_e == pytest.approx(0.15, rel=0.05)
    threshold, _ = label_thresholds(sim.config)
    np.testing.assert_array_equal(sim.labels == CLUSTER, cluster >= threshold)
    np.testing.assert_array_equal(sim.ids > 0, sim.labels == CLUSTER)
    assert set(np.unique(sim.ids)) - {0} <= set(sim.truth["id"])


def test_real_charge_is_ignored_and_quiet_pixels_are_background():
    frame = synthetic_frame()
    sim = paste_events(frame, "skipper", gain=1.3, seed=1, margin=2)
    real = sim.labels[38:46, 58:65]
    pasted = sim.labels == CLUSTER
    # the real bright block and its 2-pixel margin are unknown unless an event landed there
    assert np.all((real == IGNORE) | pasted[38:46, 58:65])
    # pure noise is background except the rare > 3 sigma pixels and their neighbours
    quiet = sim.labels[:, 100:][~pasted[:, 100:]]
    assert 0.9 < np.mean(quiet == BACKGROUND) < 1.0
    assert set(np.unique(quiet)) == {BACKGROUND, IGNORE}


def test_paste_is_reproducible_and_can_add_artefacts():
    frame = synthetic_frame()
    a, b = paste_events(frame, gain=1.3, seed=5), paste_events(frame, gain=1.3, seed=5)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, paste_events(frame, gain=1.3, seed=6).image)
    config = load_config("skipper", overrides={"glow.probability": 1.0, "hot.pixels_per_mpix": [3000.0, 3000.0]})
    sim = paste_events(frame, config, gain=1.3, seed=5, with_artefacts=True)
    hot = (sim.charge["hot_expected"] > 0) & (sim.labels != CLUSTER)
    assert hot.sum() > 20 and np.all(sim.labels[hot] == HOT_PIXEL)
    assert np.any(sim.labels == GLOWING)
    extra = sim.charge["cluster"] + sim.charge["glow"] + sim.charge["hot"]
    np.testing.assert_allclose(sim.image - frame, 1.3 * extra, atol=1e-2)


def test_gain_comes_from_the_option_the_header_or_the_frame(damicm_sample):
    frame = io.read_images(damicm_sample, "CCD_A")[0]
    assert resolve_gain(frame.data, (fits.Header({"GAIN": 2.0}),), 1.5) == (1.5, "option")
    assert resolve_gain(frame.data, (fits.Header(), fits.Header({"GAIN": 2.0}))) == (2.0, "header")
    assert resolve_gain(frame.data, (frame.header,))[0] == pytest.approx(1.35, abs=0.05)  # measured from the comb
    with pytest.raises(ConfigError, match="--gain"):
        resolve_gain(synthetic_frame(noise_e=2.0), required=True)  # no resolved electron peaks
    with pytest.raises(ConfigError, match="positive"):
        paste_events(frame.data, gain=0.0, seed=0)


def test_paste_onto_the_real_damicm_frame(damicm_sample):
    frame = io.read_images(damicm_sample, "CCD_D")[0]
    sim = paste_events(frame.data, "skipper", gain=resolve_gain(frame.data, (frame.header,), required=True)[0], seed=3)
    counts = np.bincount(sim.labels.ravel(), minlength=256)
    assert counts[CLUSTER] > 200 and counts[IGNORE] > 0 and counts[BACKGROUND] > 0.05 * sim.labels.size
    # real pixels well above the noise are never called background
    residual = frame.data - np.median(frame.data, axis=1, keepdims=True)
    assert not np.any((sim.labels == BACKGROUND) & (residual > 10 * frame_noise(residual)))
