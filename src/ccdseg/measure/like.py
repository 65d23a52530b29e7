"""Fit a simulation config to a user's skipper frame: ``ccdseg simulate OUT --like FRAME``.

Every image HDU is measured with :func:`ccdseg.measure.frame_stats.measure_frame` (the code that
``benchmarks/fidelity.py`` compares real and simulated frames with) and the measurements become
the parameters of the simulator: gain and its spread over HDUs, pedestal and its wander, noise,
dark charge with its row and column ramps, the first column's offset, hot columns, isolated hot
pixels and streaks, the rates of point-like events, ⁵⁵Fe X-rays and electron tracks, and the
diffusion scale that makes the simulated point-like clusters as wide as the measured ones.
"""

import numpy as np

from ccdseg.calib import frame
from ccdseg.errors import ConfigError
from ccdseg.io.atomic import write_text_atomic
from ccdseg.measure.frame_stats import FE55_WINDOW_E, POINT_CHARGE_E, measure_frame
from ccdseg.sim import events
from ccdseg.sim.config import load_config

#: A column at least this much (e-) above the median column is a hot column.
HOT_COLUMN_E = 1.0
#: Clusters above this charge (e-) count as electron tracks (a 100 keV electron leaves 26 500 e-).
TRACK_MIN_E = 26500.0
#: Below this share of ⁵⁵Fe-window clusters the frame is taken to have no ⁵⁵Fe source.
FE55_MIN_SHARE = 0.1
_SAMPLE_EVENTS = 200_000


def fit_like(images, *, preset="skipper", gain=None, timing=None, seed=0):
    """Simulation parameters that reproduce a set of skipper frames (one per HDU).

    Parameters
    ----------
    images : sequence of ndarray (H, W)
        Frames in ADU that resolve single electrons (all of one size: the first one's is used).
    preset : str
        Preset whose other parameters (energy spectrum, X-ray lines, diffusion law's b, labels) are kept.
    gain : float, optional
        ADU/e- of every frame; default measured per frame from the electron peaks.
    timing : (float, float), optional
        Exposure (s) and readout time of one row (s), e.g. from the headers ``EXPOSURE`` and
        ``READOUT_SEC / NROW``; with them the dark current is in e-/pix/day. Default: the exposure
        is fitted and a row takes 1 s.
    seed : int
        Seed of the event sample that predicts the clusters' widths.

    Returns
    -------
    dict
        ``{"preset": preset, "detector": {...}, "hot": {...}, "glow": {...}, "clusters": {...}}``:
        what :func:`write_like` saves and :func:`ccdseg.sim.config.load_config` reads.

    Raises
    ------
    ConfigError
        A frame does not resolve single electrons and no gain is given.
    """
    if len(images) == 0:
        raise ConfigError("fit_like: no images")
    measured = [measure_frame(np.asarray(image, dtype=np.float64), gain=gain) for image in images]
    base = load_config(preset)
    height, width = measured[0].shape
    gains = np.array([m.gain for m in measured])
    detector = {"height": height, "width": width, "n_samples": 1,
                "gain_adu_per_e": float(gains.mean()),
                "gain_spread": float(gains.std() / gains.mean()) if gains.size > 1 else 0.0,
                "pedestal_adu": float(np.mean([m.pedestal_adu for m in measured])),
                "read_noise_e": float(np.mean([m.noise_e for m in measured])),
                "pedestal_drift_adu": float(np.mean([_pedestal_step_adu(m) for m in measured])),
                "first_column_offset_e": float(np.mean([m.first_column_e for m in measured])),
                "spurious_charge_e": 0.0, "dark_charge_e": [0.0, 0.0], "adc_max_adu": None, "rice_q": 0.0,
                **_dark(measured, timing)}

    hot_columns = [_hot_columns(image, m) for image, m in zip(images, measured, strict=True)]
    excess = np.concatenate(hot_columns) if hot_columns else np.zeros(0)
    n_columns = int(round(np.mean([h.size for h in hot_columns])))
    isolated = float(np.mean([m.isolated_per_mpix() for m in measured]))
    streaks = float(np.mean([m.streaks_per_mpix() for m in measured]))
    hot = {"columns": [n_columns, n_columns], "rows": [0, 0], "pixels_per_mpix": [isolated, isolated],
           "streaks_per_mpix": [streaks, streaks],
           "amplitude_e": [float(excess.min()), float(excess.max())] if excess.size else [5.0, 100.0]}

    fe55 = _fe55_rate(measured)
    points_seen = _point_rate(measured)
    if fe55 < FE55_MIN_SHARE * points_seen:
        fe55 = 0.0
    tracks = _rate(measured, lambda q: q >= TRACK_MIN_E)
    clusters = {"fe55_per_mpix": [fe55, fe55], "worms_per_mpix": [tracks, tracks],
                "muons_per_mpix": [0.0, 0.0], "alphas_per_mpix": [0.0, 0.0], "max_packets": 16384}
    points = max(points_seen - fe55, 0.0) / _share_above(base.clusters, POINT_CHARGE_E[0], seed)
    clusters["points_per_mpix"] = [points, points]
    fitted = {"preset": preset, "detector": detector, "glow": {"probability": 0.0}, "hot": hot, "clusters": clusters}
    sigma = _median_sigma(measured, fe55 > 0)
    if np.isfinite(sigma):
        predicted = _predicted_sigma(preset, clusters, fe55 > 0, seed)
        if np.isfinite(predicted) and predicted > 0:
            clusters["diffusion_a_um2"] = float(base.clusters.diffusion_a_um2 * (sigma / predicted) ** 2)
    _calibrate_by_simulation(fitted, measured, sigma, seed)
    return fitted


def fit_like_file(path, *, hdu=None, preset="skipper", gain=None, seed=0):
    """:func:`fit_like` on the image HDUs of a FITS file (or one, ``hdu``), with its headers' readout timing.

    The timing (``EXPOSURE``, ``READOUT_SEC``, ``NROW``) is looked up in the image header, then in the
    primary header, where DAMIC-M files keep it.
    """
    from astropy.io import fits

    from ccdseg.io import read_images

    images = read_images(path, hdu)
    timing = header_timing(images[0].header)
    if timing is None:
        with fits.open(path) as hdul:
            timing = header_timing(hdul[0].header)
    return fit_like([image.data for image in images], preset=preset, gain=gain, timing=timing, seed=seed)


def write_like(path, fitted, *, overwrite=False, source=""):
    """Write the parameters of :func:`fit_like` as a TOML file that ``ccdseg simulate --config`` reads."""
    lines = [f"# simulation parameters fitted to {source} by ccdseg simulate --like" if source else
             "# simulation parameters fitted by ccdseg simulate --like", f'preset = "{fitted["preset"]}"']
    for section, values in fitted.items():
        if isinstance(values, dict):
            lines += ["", f"[{section}]", *(f"{key} = {_toml_value(value)}" for key, value in values.items())]
    write_text_atomic(path, "\n".join(lines) + "\n", overwrite=overwrite)
    return path


def header_timing(header):
    """(exposure, row readout time) in s from DAMIC-M keys ``EXPOSURE``, ``READOUT_SEC``, ``NROW``; None if absent."""
    try:
        return float(header["EXPOSURE"]), float(header["READOUT_SEC"]) / float(header["NROW"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def _toml_value(value):
    if value is None:
        return '"none"'
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(float(value)) if isinstance(value, float) else str(value)


def _dark(measured, timing):
    """Dark current, exposure and row time that give the measured dark level and row ramp; the column ramp."""
    per_row = np.mean([m.dark["per_100_rows"] for m in measured]) / 100
    columns = float(np.mean([m.dark["across_columns"] for m in measured]))
    at_row_0 = float(np.mean([m.dark["first_row"] for m in measured])) - columns / 2
    exposure_s, row_s = timing if timing is not None else (None, 1.0)
    dark = {"dark_column_ramp_e": columns, "row_readout_s": row_s}
    if per_row <= 0:  # no ramp: a constant dark charge
        return {**dark, "dark_current_e_per_day": 0.0, "exposure_s": 0.0,
                "dark_charge_e": [float(max(at_row_0, 0.0))] * 2}
    rate_per_s = per_row / row_s
    if exposure_s is None:
        exposure_s = max(at_row_0, 0.0) / rate_per_s
    return {**dark, "dark_current_e_per_day": float(rate_per_s * 86400), "exposure_s": float(exposure_s),
            "dark_charge_e": [float(max(at_row_0 - rate_per_s * exposure_s, 0.0))] * 2}


def _pedestal_step_adu(m):
    """Step (ADU) of the row-to-row random walk whose spread over the rows is the measured baseline wander."""
    zero_pixels = max(m.occupancy[0] * m.shape[1], 1.0)
    wander = np.sqrt(max(m.row_baseline_std_e ** 2 - m.noise_e ** 2 / zero_pixels, 0.0))
    # a random walk of H steps of size s spreads by s * sqrt(H / 6) about its mean
    return float(wander * m.gain * np.sqrt(6.0 / m.shape[0]))


def _hot_columns(image, m):
    """Excess (e-) of the columns whose median stands HOT_COLUMN_E above the median column; column 0 left out."""
    image_e = (np.asarray(image, dtype=np.float64) - m.pedestal_adu) / m.gain
    medians = np.median(frame.electron_counts(image_e), axis=0)[1:]
    excess = medians - np.median(medians)
    return excess[excess >= HOT_COLUMN_E]


def _share_above(clusters, min_charge_e, seed):
    """Share of the preset's point deposits (continuum and X-ray lines) with at least ``min_charge_e``."""
    sample = events.point_events(_SAMPLE_EVENTS, (1, 1), clusters, 1.0, np.random.default_rng(seed))
    return float(np.mean(sample.electrons >= min_charge_e))


def _fe55_rate(measured):
    """⁵⁵Fe-window clusters per megapixel."""
    return _rate(measured, lambda q: (q >= FE55_WINDOW_E[0]) & (q <= FE55_WINDOW_E[1]))


def _point_rate(measured):
    """Clusters of the point-like charge range (below electron tracks) per megapixel."""
    return _rate(measured, lambda q: (q >= POINT_CHARGE_E[0]) & (q < TRACK_MIN_E))


def _rate(measured, select):
    return float(sum(np.count_nonzero(select(m.clusters["charge_e"])) for m in measured)
                 / sum(m.mpix for m in measured))


def _median_sigma(measured, fe55_only):
    """Median fitted width (px) of the point-like clusters; only the ⁵⁵Fe window's when there is a source.

    The ⁵⁵Fe X-rays all convert near the back, so their widths scatter little and pin the diffusion
    law's scale better than the broad spread of widths of events at every depth.
    """
    sigmas = []
    for m in measured:
        c = m.clusters
        pick = np.asarray(c["point_like"])
        if fe55_only:
            pick &= (c["charge_e"] >= FE55_WINDOW_E[0]) & (c["charge_e"] <= FE55_WINDOW_E[1])
        sigmas.append(np.asarray(c["sigma"][pick]))
    sigmas = np.concatenate(sigmas)
    return float(np.median(sigmas)) if sigmas.size else float("nan")


def _calibrate_by_simulation(fitted, measured, sigma, seed, min_clusters=300, max_frames=6, max_size=(512, 1024)):
    """Correct the event rates and the diffusion scale by what the measurement does to simulated frames.

    Frames simulated with ``fitted`` (at most ``max_size``) are measured with the same code as the
    real ones; the ⁵⁵Fe and point rates are scaled by the ratio of real to simulated measured rates
    (charge lost below the pixel threshold moves clusters out of the windows) and the diffusion
    law's A by the squared ratio of the median widths (every width scales as sqrt(A)).
    """
    from ccdseg.sim.simulate import iter_simulations

    sections = {name: values for name, values in fitted.items() if isinstance(values, dict)}
    overrides = {f"{name}.{key}": value for name, values in sections.items() for key, value in values.items()}
    overrides["detector.height"] = min(overrides["detector.height"], max_size[0])
    overrides["detector.width"] = min(overrides["detector.width"], max_size[1])
    config = load_config(fitted["preset"], overrides=overrides)
    clusters = fitted["clusters"]
    fe55_only = clusters["fe55_per_mpix"][0] > 0
    simulated = []
    for _, simulation in zip(range(max_frames), iter_simulations(config, seed), strict=False):
        simulated.append(measure_frame(simulation.image, gain=simulation.config.detector.gain_adu_per_e))
        if sum(np.count_nonzero(m.clusters["point_like"]) for m in simulated) >= min_clusters:
            break
    for key, rate in (("fe55_per_mpix", _fe55_rate), ("points_per_mpix", _point_rate)):
        seen = rate(simulated)
        if seen > 0 and clusters[key][0] > 0:
            clusters[key] = [clusters[key][0] * rate(measured) / seen] * 2
    simulated_sigma = _median_sigma(simulated, fe55_only)
    if np.isfinite(sigma) and np.isfinite(simulated_sigma) and simulated_sigma > 0 and "diffusion_a_um2" in clusters:
        clusters["diffusion_a_um2"] *= float((sigma / simulated_sigma) ** 2)


def _predicted_sigma(preset, clusters, fe55_only, seed):
    """Median diffusion width (px) of the events in the fitted charge window (only ⁵⁵Fe with ``fe55_only``)."""
    config = load_config(preset, overrides={f"clusters.{k}": v for k, v in clusters.items()})
    c, d, rng = config.clusters, config.detector, np.random.default_rng(seed)
    rates = np.array([0.0 if fe55_only else clusters["points_per_mpix"][0], clusters["fe55_per_mpix"][0]])
    if rates.sum() <= 0:
        return float("nan")
    n = np.round(_SAMPLE_EVENTS * rates / rates.sum()).astype(int)
    parts = [events.point_events(n[0], (1, 1), c, d.thickness_um, rng),
             events.fe55_events(n[1], (1, 1), c, d.thickness_um, rng)]
    z = np.concatenate([p.z for p in parts])
    q = np.concatenate([p.electrons for p in parts])
    pick = (q >= POINT_CHARGE_E[0]) & (q <= POINT_CHARGE_E[1])
    sigma = events.diffusion_sigma_um(z[pick], c.diffusion_a_um2, c.diffusion_b_per_um) / d.pixel_size_um
    return float(np.median(sigma)) if pick.any() else float("nan")
