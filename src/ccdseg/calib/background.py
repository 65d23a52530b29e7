"""Robust pedestal and noise estimates, shared by the normalisation, the classical baseline and the catalog.

Particle clusters, glow and hot pixels occupy a small share of an image, so medians and the
median absolute deviation see through them.
"""

import warnings

import numpy as np
from scipy import ndimage

from ccdseg.errors import ConfigError

#: Converts a median absolute deviation to the standard deviation of a Gaussian.
MAD_TO_SIGMA = 1.4826


#: Rows a banded loop takes at a time: a band of a 10000 px wide frame is 20 MB in float64.
BAND_ROWS = 256


def row_bands(height, rows=BAND_ROWS):
    """Slices of ``rows`` rows covering ``height``: whole-frame work a band at a time, so temporaries stay small."""
    return [slice(start, min(start + rows, height)) for start in range(0, height, rows)]


def row_medians(rows):
    """Median of the finite pixels of every row (NaN for a row without any), in float64.

    Converts ``rows`` to float64: give it a band of rows (:func:`row_bands`), not a large frame.
    """
    rows = np.asarray(rows, dtype=np.float64)
    finite = np.isfinite(rows)
    if finite.all():  # the common case; nanmedian is several times slower
        return np.median(rows, axis=1)
    with warnings.catch_warnings():
        # a row without finite pixels has a NaN median, filled in by the caller
        warnings.filterwarnings("ignore", "All-NaN slice", RuntimeWarning)
        return np.nanmedian(np.where(finite, rows, np.nan), axis=1)


def row_pedestal(image, window=15):
    """Pedestal of every row: the row medians, smoothed by a running median across rows.

    The running median follows a pedestal that drifts from row to row, while a single hot
    row (whose own median is raised) does not pull its pedestal up and stays visible.

    Parameters
    ----------
    image : ndarray (H, W)
        Image in any unit (ADU or electrons); NaN/Inf pixels are ignored.
    window : int
        Number of rows of the running median (odd; clipped to the image height).

    Returns
    -------
    ndarray (H,)
        Pedestal of each row, in the unit of ``image``.
    """
    image = np.asarray(image)
    if image.size == 0:
        medians = np.zeros(image.shape[0])
    else:  # a band of rows at a time: no float64 copy of a whole frame
        medians = np.concatenate([row_medians(image[rows]) for rows in row_bands(image.shape[0])])
    if np.all(np.isnan(medians)):
        return np.zeros(image.shape[0])
    # rows without a finite pixel take the pedestal of the nearest row that has one
    good = np.flatnonzero(~np.isnan(medians))
    medians = np.interp(np.arange(medians.size), good, medians[good])
    size = int(min(window, medians.size)) | 1
    return ndimage.median_filter(medians, size=size, mode="nearest")


def robust_sigma(values):
    """Standard deviation of the bulk of ``values`` from the median absolute deviation.

    Non-finite values are ignored. When more than half the values are identical (skipper
    images with most pixels at exactly 0 e-, or a constant image) the MAD is zero; then the
    standard deviation of the values within the central peak is used instead, and 0 is
    returned only for a truly constant input.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0
    median = np.median(values)
    mad = np.median(np.abs(values - median))
    if mad > 0:
        return float(MAD_TO_SIGMA * mad)
    spread = np.abs(values - median)
    nonzero = spread[spread > 0]
    if nonzero.size == 0:
        return 0.0
    core = values[spread <= np.percentile(nonzero, 50)]
    return float(np.std(core))



#: Pixels enough for a noise or gain estimate to a fraction of a per cent; more only costs time.
SAMPLE_PIXELS = 1 << 21


def sample_rows(shape, max_pixels=SAMPLE_PIXELS):
    """Slice of evenly spaced rows holding at most about ``max_pixels`` pixels of an image of ``shape``.

    Whole rows keep each row's pedestal subtractable; all rows when the image is small.
    """
    step = -(-shape[0] * shape[1] // max_pixels)
    return slice(None, None, step) if 1 < step < shape[0] else slice(None)


def pedestal_array(image, pedestal):
    """Per-row pedestal (H, 1) from ``None`` (estimated), a scalar or an (H,) array."""
    if pedestal is None:
        return row_pedestal(image)[:, None]
    pedestal = np.asarray(pedestal, dtype=np.float64)
    if pedestal.ndim == 0:
        return pedestal.reshape(1, 1)
    if pedestal.shape != (image.shape[0],):
        raise ConfigError(f"pedestal must be a scalar or have one value per row ({image.shape[0]}), "
                          f"got shape {pedestal.shape}")
    return pedestal[:, None]
