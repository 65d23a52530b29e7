"""Statistics of a skipper frame that resolves single electrons: the 0 e- peak, occupancy, dark charge and its ramps.

A skipper image in electrons is a comb of peaks at 0, 1, 2, ... e- of one width (the readout
noise) whose heights follow the dark charge (Poisson), plus a small share of cluster pixels.
Every function takes the image in electrons (``(image_adu - pedestal) / gain``); the 0 e- peak
need not sit at exactly 0.
"""

import warnings

import numpy as np
from scipy import ndimage, optimize

from ccdseg.calib.gain import _comb

#: Pixels with at least this many electrons are charge from events or defects, not dark current (e-).
EVENT_MIN_E = 3
#: Widest 0 e- peak :func:`zero_peak` fits (e-): beyond it the electron peaks are not resolved.
MAX_PEAK_WIDTH_E = 0.6


def zero_peak(image_e, max_electrons=3, bin_e=0.02):
    """Position and width of the 0 e- peak of an image in electrons.

    A comb of Gaussians at ``offset + n`` e- (n = 0 ... ``max_electrons``; one width, free heights)
    is fitted to the pixel histogram. The offset modulo 1 comes from the phase of the pixel values
    (robust to clusters), its integer part from the lowest populated peak.

    Parameters
    ----------
    image_e : ndarray
        Pixel values in electrons (any shape; NaN ignored).
    max_electrons : int
        Highest peak of the comb.
    bin_e : float
        Histogram bin width (e-).

    Returns
    -------
    (float, float)
        Offset of the 0 e- peak (e-) and its standard deviation, the readout noise (e-).
    """
    values = np.asarray(image_e, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    near = values[np.abs(values - np.median(values)) < max_electrons + 2]
    phase = np.angle(np.mean(np.exp(2j * np.pi * near))) / (2 * np.pi)
    lowest = np.percentile(near, 0.5)
    offset = phase + np.round(lowest - phase + 0.3)
    edges = np.arange(offset - 1.0, offset + max_electrons + 0.5, bin_e)
    counts, _ = np.histogram(values, bins=edges)
    centres = (edges[:-1] + edges[1:]) / 2
    heights = [counts[np.argmin(np.abs(centres - offset - n))] + 1.0 for n in range(max_electrons + 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        params, _ = optimize.curve_fit(_comb, centres, counts, p0=[offset, 1.0, 0.15, *heights],
                                       sigma=np.sqrt(counts + 1.0), bounds=(
                                           [offset - 0.5, 1.0 - 1e-9, 0.01] + [0.0] * len(heights),
                                           [offset + 0.5, 1.0 + 1e-9, MAX_PEAK_WIDTH_E] + [np.inf] * len(heights)))
    return float(params[0]), float(abs(params[2]))


def electron_counts(image_e, offset_e=0.0):
    """Whole electrons of every pixel: the value above the 0 e- peak, rounded."""
    return np.rint(np.asarray(image_e, dtype=np.float64) - offset_e)


def occupancy(counts, max_electrons=3):
    """Share of pixels with 0, 1, ..., ``max_electrons - 1`` and at least ``max_electrons`` electrons."""
    counts = np.asarray(counts).ravel()
    shares = [np.mean(counts == n) for n in range(max_electrons)]
    return np.array([*shares, np.mean(counts >= max_electrons)])


def dark_mask(counts, grow=2, min_event_e=20):
    """Pixels fit for measuring the dark charge: away (``grow`` px) from events and defects.

    An event is a group of neighbouring pixels of at least :data:`EVENT_MIN_E` electrons holding
    ``min_event_e`` or more; the dark charge's own 3 e- pixels stay in, or its distribution would be cut.
    """
    counts = np.asarray(counts)
    labels, n = ndimage.label(counts >= EVENT_MIN_E, np.ones((3, 3)))
    charge = ndimage.sum_labels(counts, labels, np.arange(1, n + 1))
    events = np.r_[False, charge >= min_event_e][labels]
    return ~ndimage.binary_dilation(events, iterations=grow) if grow else ~events


def dark_level(counts, mask=None):
    """Mean dark charge (e-/pix): the mean over rows of each row's -ln P(0 e-).

    Per row, because the dark charge grows with the row and a mixture of Poisson rates is not Poisson.

    Parameters
    ----------
    counts : ndarray (H, W)
        Whole electrons per pixel (:func:`electron_counts`).
    mask : ndarray of bool, optional
        Pixels to use; default :func:`dark_mask`.

    Returns
    -------
    float
        Dark charge in e-/pix; NaN without usable pixels.
    """
    profile = dark_profile(counts, 1, mask)
    profile = profile[np.isfinite(profile)]
    return float(np.mean(profile)) if profile.size else float("nan")


def dark_profile(counts, axis, mask=None):
    """Dark charge (e-/pix) of every row (``axis=1``: averaging along rows) or column (``axis=0``)."""
    counts = np.asarray(counts)
    mask = dark_mask(counts) if mask is None else mask
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.log(np.sum((counts == 0) & mask, axis=axis) / np.sum(mask, axis=axis))


def dark_ramps(counts, mask=None, skip_edge=3):
    """Dark level and its linear ramps along rows and columns.

    Parameters
    ----------
    counts : ndarray (H, W)
        Whole electrons per pixel.
    mask : ndarray of bool, optional
        Pixels to use; default :func:`dark_mask`.
    skip_edge : int
        First rows and columns left out of the slopes (they sit higher in real frames).

    Returns
    -------
    dict
        ``level`` (e-/pix), ``per_100_rows`` (e-/pix per 100 rows), ``across_columns`` (e-/pix from
        the first to the last column), ``first_row`` (the straight line's value at row 0, e-/pix).
    """
    counts = np.asarray(counts)
    mask = dark_mask(counts) if mask is None else mask
    fits = {}
    for axis, name in ((1, "rows"), (0, "columns")):
        profile = dark_profile(counts, axis, mask)
        position = np.arange(profile.size)
        good = np.isfinite(profile) & (position >= skip_edge)
        fits[name] = np.polyfit(position[good], profile[good], 1)
    return {"level": dark_level(counts, mask), "per_100_rows": float(fits["rows"][0] * 100),
            "across_columns": float(fits["columns"][0] * (counts.shape[1] - 1)),
            "first_row": float(fits["rows"][1])}


def column_excess(image_e, columns=(0,), max_e=20.0):
    """Mean excess of each given column over the other columns (e-), pixels above ``max_e`` (events) left out.

    Measures the offset of the first columns read after the prescan.
    """
    image_e = np.where(np.asarray(image_e, dtype=np.float64) < max_e, image_e, np.nan)
    base = np.nanmean(np.delete(image_e, list(columns), axis=1))
    return np.array([np.nanmean(image_e[:, c]) - base for c in columns])
