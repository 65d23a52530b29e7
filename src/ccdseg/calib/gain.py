"""The gain (ADU/e-) of an image: one policy for where it comes from, and its measurement.

A skipper image that resolves single electrons measures its own gain from the spacing of the
0, 1, 2, ... e- peaks; anything else needs the gain given (option or header ``GAIN``).
"""

import warnings
from typing import NamedTuple

import numpy as np
from scipy import ndimage, optimize, signal

from ccdseg.calib.background import pedestal_array, robust_sigma, sample_rows
from ccdseg.errors import ConfigError

#: Smallest gain (ADU/e-) :func:`estimate_gain` reports for integer data: with electron peaks only 1-2
#: quantisation steps (ADU) apart, the peaks found are those of the quantisation, not of the electrons.
MIN_INTEGER_GAIN = 3.0
#: Fewest noise sigmas between neighbouring electron peaks for them to count as resolved (noise <= 0.33 e-).
MIN_RESOLUTION = 3.0
#: Largest relative uncertainty of a reported gain.
MAX_RELATIVE_ERROR = 0.02
#: Widest a populated upper peak may be, in units of the 0 e- peak's width: every electron peak has the
#: readout noise, while the level of glow or of a hot column is widened by its shot noise.
MAX_PEAK_WIDTH_RATIO = 1.5


class GainEstimate(NamedTuple):
    """A measured gain.

    Attributes
    ----------
    value : float
        Gain (ADU/e-).
    error : float
        Its 1-sigma uncertainty (ADU/e-): of the comb fit, or the histogram bin width when the
        peaks are too few or too coarse to fit.
    n_peaks : int
        Electron peaks (0, 1, ... e-) used.
    quality : float
        Resolution: the peak spacing in units of the noise of a peak (>= :data:`MIN_RESOLUTION`).
    """

    value: float
    error: float
    n_peaks: int
    quality: float


def estimate_gain(image, pedestal=None, max_electrons=6, min_peak_pixels=30, min_dip=0.3):
    """Gain (ADU/e-) from the spacing of the resolved single-electron peaks of a skipper image.

    The pedestal-subtracted pixel histogram of a skipper image with sub-electron noise is a comb of
    peaks at 0, 1, 2, ... e-. The noise is measured from the left half width of the highest peak, peaks
    are found in a histogram with a quarter-noise bin width, and the gain is the slope of a straight-line
    fit of the peak positions (count-weighted means within +-1.5 noise of each top) against their
    electron numbers.

    Parameters
    ----------
    image : ndarray (H, W)
        Image in ADU (clusters may be present; they only add to the tail of the histogram).
    pedestal : float or ndarray (H,), optional
        Pedestal in ADU, one value or one per row; default the median of the image. Only its changes
        matter, not its level. The default is one constant on purpose: row medians land on the 0 e- peak
        in some rows and on the 1 e- peak in others (dark charge grows with the row), and subtracting
        them smears the comb; pass a per-row pedestal only to follow a real drift.
    max_electrons : int
        Use the peaks up to this many electrons above the 0 e- peak.
    min_peak_pixels : int
        A peak needs at least this many pixels within +-1.5 noise of its top.
    min_dip : float
        Neighbouring peaks count as resolved when the histogram between them drops at least this
        fraction below the lower peak (0 < min_dip < 1).

    Returns
    -------
    GainEstimate or None
        The gain (ADU/e-) with its uncertainty, or None -- never a guess -- when fewer than two resolved,
        evenly spaced peaks are found (conventional readout, or skipper noise above ~0.3 e-), when the
        peaks are less than :data:`MIN_RESOLUTION` noise sigmas apart or the relative uncertainty exceeds
        :data:`MAX_RELATIVE_ERROR`, or when the image holds integers and the spacing is below
        :data:`MIN_INTEGER_GAIN` ADU.
    """
    image = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(image)
    # integer data: a histogram finer than 1 ADU shows the quantisation itself as a comb of peaks
    # 1 ADU apart, so bins are whole ADU centred on the integers (and the pedestal an integer)
    quantised = np.array_equal(image[finite], np.round(image[finite]))
    if pedestal is None:
        pedestal = np.median(image[finite]) if finite.any() else 0.0
    pedestal = pedestal_array(image, pedestal)
    values = (image - (np.round(pedestal) if quantised else pedestal))[finite]
    lo, hi = np.percentile(values, [0.05, 99.9]) if values.size else (0.0, 0.0)
    if values.size < 2 * min_peak_pixels or hi <= lo:
        return None
    # the noise: left half width of the highest peak, whose left side has no charge from other peaks
    # once they are resolved
    edges = _histogram_edges(lo, hi, max(robust_sigma(values) / 20, (hi - lo) / 100_000), quantised)
    counts, _ = np.histogram(values, bins=edges)
    smooth = ndimage.gaussian_filter1d(counts.astype(np.float64), 1.0)
    top = int(np.argmax(smooth))
    below = np.flatnonzero(smooth[:top] < smooth[top] / 2)
    step = edges[1] - edges[0]
    half_width = (top - below[-1]) * step if below.size else robust_sigma(values)
    # a quarter of the noise; the peak distance and windows below are in units of it
    quarter = max(half_width / np.sqrt(2 * np.log(2)), step) / 4

    edges = _histogram_edges(lo, min(hi, lo + 200_000 * quarter), quarter, quantised)
    scale = quarter / (edges[1] - edges[0])
    counts, _ = np.histogram(values, bins=edges)
    smooth = ndimage.gaussian_filter1d(counts.astype(np.float64), scale)
    peaks, props = signal.find_peaks(smooth, distance=max(1, round(8 * scale)), prominence=1e-9)
    peaks = peaks[props["prominences"] >= min_dip * smooth[peaks]]
    centres = (edges[:-1] + edges[1:]) / 2
    # +-1.5 noise, but windows of neighbouring peaks must not overlap (coarse integer bins)
    reach = round(6 * scale)
    if peaks.size > 1:
        reach = min(reach, (int(np.diff(peaks).min()) - 1) // 2)
    reach = max(1, reach)
    windows = [slice(max(p - reach, 0), p + reach + 1) for p in peaks]
    populated = np.array([counts[w].sum() >= min_peak_pixels for w in windows], dtype=bool)
    positions = np.array([np.average(centres[w], weights=counts[w])
                          for w, ok in zip(windows, populated, strict=True) if ok])
    if positions.size < 2:
        return None
    ratio = (positions - positions[0]) / (positions[1] - positions[0])
    electrons = np.round(ratio)
    keep = (np.abs(ratio - electrons) < 0.25) & (electrons <= max_electrons)
    gain, offset = np.polyfit(electrons[keep], positions[keep], 1)
    if quantised and gain < MIN_INTEGER_GAIN:
        return None
    # refine with a comb of Gaussians (common noise, free heights): the window means above are pulled
    # towards the taller neighbouring peak, which biases the spacing by a few per cent
    n_peaks = int(electrons[keep].max()) + 1
    noise = 4 * quarter
    fit = (centres > offset - 5 * noise) & (centres < offset + (n_peaks - 0.5) * gain)
    heights = [smooth[np.argmin(np.abs(centres - offset - n * gain))] for n in range(n_peaks)]
    # coarse integer bins or a failed fit: the straight line, as uncertain as a histogram bin
    estimate = GainEstimate(float(gain), float(edges[1] - edges[0]), n_peaks, float(gain / noise))
    if np.count_nonzero(fit) > 3 + n_peaks:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optimize.OptimizeWarning)
                params, covariance = optimize.curve_fit(_comb, centres[fit], counts[fit],
                                                        p0=[offset, gain, noise, *heights],
                                                        sigma=np.sqrt(counts[fit] + 1.0))
            if abs(params[1] / gain - 1) < 0.1 and np.isfinite(covariance[1, 1]):
                estimate = GainEstimate(float(params[1]), float(np.sqrt(covariance[1, 1])), n_peaks,
                                        float(params[1] / abs(params[2])))
        except RuntimeError:
            pass  # the comb fit did not converge: the estimate from the peak windows stands
    resolved = estimate.quality >= MIN_RESOLUTION and estimate.error <= MAX_RELATIVE_ERROR * estimate.value
    return estimate if resolved and _peaks_alike(centres, counts, offset, estimate) else None


def _peaks_alike(centres, counts, offset, estimate, min_pixels=100):
    """Whether every well-populated peak of the comb is no wider than :data:`MAX_PEAK_WIDTH_RATIO` x the 0 e-.

    Widths are the spread of the histogram within half a gain of each peak. Two levels of a conventional
    frame (background and a glow band, or a hot column) can pass for a 0 and a 1 e- peak; the upper one is
    wider by its shot noise.
    """
    widths = []
    for n in range(estimate.n_peaks):
        window = np.abs(centres - offset - n * estimate.value) < estimate.value / 2
        if counts[window].sum() >= min_pixels:
            mean = np.average(centres[window], weights=counts[window])
            widths.append(np.sqrt(np.average((centres[window] - mean) ** 2, weights=counts[window])))
    return len(widths) < 2 or max(widths[1:]) <= MAX_PEAK_WIDTH_RATIO * widths[0]


def _histogram_edges(lo, hi, step, quantised):
    """Bin edges of width ``step`` over [lo, hi]; for integer data whole ADU, centred on the integers."""
    if quantised:
        step = max(1.0, float(np.round(step)))
        lo = np.floor(lo) - 0.5
    return np.arange(lo, hi + step, step)


def _comb(x, offset, gain, noise, *heights):
    """Sum of Gaussians of one width at ``offset + n * gain`` for n = 0, 1, ... (one per height)."""
    n = np.arange(len(heights))[:, None]
    return np.sum(np.asarray(heights)[:, None] * np.exp(-0.5 * ((x - offset - n * gain) / noise) ** 2), axis=0)


#: Where a gain came from, as recorded in output headers (``GAINSRC``).
GAIN_SOURCES = ("option", "header", "estimated", "none")


def check_gain(gain, name="gain"):
    """``gain`` as a float after checking it is a positive, finite number of ADU/e- (None passes)."""
    if gain is None:
        return None
    if isinstance(gain, bool) or not isinstance(gain, (int, float, np.number)) or not 0 < gain < np.inf:
        raise ConfigError(f"{name} = {gain!r}: must be a positive number of ADU/e-")
    return float(gain)


#: Why a gain is unknown, printed once per image.
UNKNOWN_GAIN = ("gain unknown: no --gain, no GAIN header key, and no resolved single-electron peaks "
                "(noise below ~0.33 e-) to measure it; catalogue in ADU only")


def resolve_gain(image, headers=(), gain=None, *, required=False, segments=None):
    """The gain of an image and where it came from: the option, a header, or a measurement.

    Parameters
    ----------
    image : ndarray (H, W)
        The image in ADU; measured (on evenly spaced rows) only when no gain is given.
    headers : sequence of astropy.io.fits.Header
        Headers to look in for ``GAIN``, first match wins (the image's, then the primary).
    gain : float, optional
        A gain given by the user (ADU/e-); it overrides the headers.
    required : bool
        Raise instead of returning ``(None, "none")`` when the gain is unknown.
    segments : sequence of ccdseg.calib.amplifiers.Segment, optional
        Amplifier segments with their measured gains: the estimate is their inverse-variance weighted
        mean when every segment is resolved and all agree within 2 %, else unknown (one gain for the
        whole catalogue must hold for every amplifier).

    Returns
    -------
    (float or None, str)
        The gain in ADU/e- and its source, one of :data:`GAIN_SOURCES`.

    Raises
    ------
    ConfigError
        ``gain`` or a header's ``GAIN`` is not a positive number; or, with ``required``, no gain
        is given and none is measurable (:func:`estimate_gain` needs resolved electron peaks).
    """
    if gain is not None:
        return check_gain(gain), "option"
    for header in headers:
        if header is not None and "GAIN" in header:
            return check_gain(header["GAIN"], "header GAIN"), "header"
    estimate = (estimate_gain(image[sample_rows(np.shape(image))]) if segments is None
                else _common_gain([segment.gain for segment in segments]))
    if estimate is not None:
        return estimate.value, "estimated"
    if required:
        raise ConfigError("gain: no GAIN header key and no resolved single-electron peaks to measure it "
                          "from; pass the gain in ADU/e- (--gain)")
    return None, "none"


def _common_gain(estimates):
    """The weighted mean of gain estimates when all are resolved and within 2 % of it, else None."""
    if not estimates or any(estimate is None for estimate in estimates):
        return None
    weights = np.array([1 / estimate.error ** 2 for estimate in estimates])
    values = np.array([estimate.value for estimate in estimates])
    mean = float(np.sum(weights * values) / np.sum(weights))
    if np.max(np.abs(values / mean - 1)) > 0.02:
        return None
    return GainEstimate(mean, float(np.sum(weights) ** -0.5), min(e.n_peaks for e in estimates),
                        min(e.quality for e in estimates))
