"""Dark charge of the unmasked pixels: a fit of the electron peaks, as SENSEI and DAMIC-M measure it.

In a frame that resolves electrons the charge histogram of quiet pixels is a Poisson distribution of
whole electrons, each smeared by the readout noise: ``sum_k Pois(k; dark) N(x; offset + k g, noise)``.
A plain mean of the pixels is pulled up by every unmasked bit of event charge and by the tail of the
noise; a fit of the 0, 1, 2 e- peaks alone (normalised over the fitted range, so pixels beyond it do
not count) is not, and its curvature gives the uncertainty.
"""

from collections import namedtuple

import numpy as np
from scipy import optimize, special, stats

from ccdseg.calib.background import row_bands

DarkFit = namedtuple("DarkFit", "dark_e dark_e_err noise_e gain_scale gain_scale_err offset_e")
DarkFit.__doc__ = """Result of :func:`fit_dark`: dark charge (e-/pix) and its 1-sigma error, readout noise (e-),
the factor by which the peak spacing differs from the gain used (and its error), the 0 e- peak position (e-)."""

#: Histogram bin width (e-).
_BIN_E = 0.02
#: Most Poisson terms summed in the model beyond the fitted range (their tails reach into it).
_EXTRA_TERMS = 3


def _model(params, edges, n_terms):
    """Share of the pixels in each bin of ``edges`` (normalised over the fitted range)."""
    dark, offset, scale, noise = params
    k = np.arange(n_terms)[:, None]
    cdf = stats.norm.cdf((edges[None, :] - offset - k * scale) / noise)
    log_weights = k[:, 0] * np.log(max(dark, 1e-300)) - dark - special.gammaln(k[:, 0] + 1)
    shares = np.exp(log_weights) @ np.diff(cdf, axis=1)
    return shares / max(shares.sum(), 1e-300)


def _neg_log_likelihood(params, edges, counts, n_terms):
    if params[0] < 0 or params[2] <= 0 or params[3] <= 0:
        return np.inf
    return -np.sum(counts * np.log(np.maximum(_model(params, edges, n_terms), 1e-300)))


def _hessian(function, x, steps):
    """Central finite-difference Hessian of ``function`` at ``x``."""
    n = x.size
    hessian = np.empty((n, n))
    for i in range(n):
        for j in range(i, n):
            shifted = []
            for si, sj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                y = x.copy()
                y[i] += si * steps[i]
                y[j] += sj * steps[j]
                shifted.append(function(y))
            second = (shifted[0] - shifted[1] - shifted[2] + shifted[3]) / (4 * steps[i] * steps[j])
            hessian[i, j] = hessian[j, i] = second
    return hessian


def fit_dark(electrons, *, max_electrons=2):
    """Fit the dark charge, noise and peak spacing to the 0 ... ``max_electrons`` e- peaks of quiet pixels.

    Parameters
    ----------
    electrons : ndarray
        Pedestal-subtracted charge of the unmasked pixels (e-) of a frame that resolves electrons
        (:func:`ccdseg.calib.electrons.to_electrons`); non-finite values are ignored.
    max_electrons : int
        Highest peak fitted (e-); pixels above ``max_electrons + 0.5`` e- are left out and the model
        normalised over the fitted range.

    Returns
    -------
    DarkFit
        NaN entries when fewer than 10 pixels lie in the fitted range.
    """
    edges = _edges(max_electrons)
    counts, _ = _row_histograms(np.asarray(electrons).reshape(1, -1), None, edges)
    return _fit_histogram(counts[0], edges, max_electrons)


def _edges(max_electrons):
    """Histogram bin edges (e-) of the fit: -0.5 ... ``max_electrons + 0.5`` in steps of :data:`_BIN_E`."""
    return np.arange(-0.5, max_electrons + 0.5 + _BIN_E / 2, _BIN_E)


def _row_histograms(electrons, mask, edges):
    """Histogram over ``edges`` of the finite, unmasked pixels of every row (H, bins), and their number per row.

    Bins as :func:`numpy.histogram` makes them; a band of rows at a time, so that a large frame costs no
    whole-frame temporaries.
    """
    height, n_bins = electrons.shape[0], edges.size - 1
    counts, kept = np.zeros((height, n_bins), np.int64), np.zeros(height, np.int64)
    for band in row_bands(height):
        block = electrons[band]
        keep = np.isfinite(block) if mask is None else np.isfinite(block) & (mask[band] == 0)
        kept[band] = keep.sum(axis=1)
        rows, cols = np.nonzero(keep & (block >= edges[0]) & (block <= edges[-1]))
        index = np.minimum(np.searchsorted(edges, block[rows, cols], side="right") - 1, n_bins - 1)
        counts[band] = np.bincount(rows * n_bins + index, minlength=block.shape[0] * n_bins).reshape(-1, n_bins)
    return counts, kept


def _fit_histogram(counts, edges, max_electrons):
    """:func:`fit_dark` of a histogram over ``edges``."""
    if counts.sum() < 10:
        return DarkFit(*[np.nan] * 6)
    centres = (edges[:-1] + edges[1:]) / 2
    zero, one = (centres < 0.5), (centres > 0.5) & (centres < 1.5)
    n0, n1 = counts[zero].sum(), counts[one].sum()
    core_mean = np.average(centres[zero], weights=counts[zero]) if n0 else 0.0
    core_std = np.sqrt(np.average((centres[zero] - core_mean) ** 2, weights=counts[zero])) if n0 else 0.1
    start = np.array([max(n1 / max(n0, 1), 1e-4), core_mean, 1.0, max(core_std, 0.02)])
    n_terms = max_electrons + 1 + _EXTRA_TERMS

    def nll(params):
        return _neg_log_likelihood(params, edges, counts, n_terms)

    best = optimize.minimize(nll, start, method="Nelder-Mead",
                             options={"xatol": 1e-7, "fatol": 1e-6, "maxiter": 4000, "maxfev": 8000})
    params = best.x
    steps = np.maximum(np.abs(params) * 1e-3, 1e-6)
    steps[0] = max(min(params[0] * 0.05, 1e-3), 1e-7)
    try:
        with np.errstate(invalid="ignore"):  # a step below zero dark charge: infinite, the error is NaN
            covariance = np.linalg.inv(_hessian(nll, params, steps))
        errors = np.sqrt(np.clip(np.diag(covariance), 0, None))
    except np.linalg.LinAlgError:
        errors = np.full(4, np.nan)
    dark, offset, scale, noise = params
    return DarkFit(float(dark), float(errors[0]), float(noise), float(scale), float(errors[2]), float(offset))


#: One-electron pixels a band of rows needs for its own fit in :func:`fit_dark_by_rows`.
_BAND_ONE_E = 200
#: Fewest rows of a band.
_BAND_MIN_ROWS = 32


def fit_dark_by_rows(electrons, mask=None, *, max_electrons=2):
    """:func:`fit_dark` of the unmasked pixels, with the dark charge fitted in bands of rows and averaged.

    Dark charge grows with the time a row waits to be read (a warm DAMIC-M module goes from 0.3 to
    1.5 e-/pix across 320 rows), and a mixture of Poisson distributions is no Poisson distribution: one
    fit of the whole frame lands below its mean. Bands hold about 200 one-electron pixels each
    (at least 32 rows), and ``dark_e`` is their pixel-weighted mean.

    Parameters
    ----------
    electrons : ndarray (H, W)
        Charge per pixel (e-), resolving electrons.
    mask : ndarray (H, W) of bool or int, optional
        Non-zero where a pixel is masked (left out).
    max_electrons : int
        Highest peak fitted (e-).

    Returns
    -------
    DarkFit
        Noise, gain scale and offset of the whole-frame fit; dark charge and its error from the bands.
    """
    electrons = np.asarray(electrons)
    edges = _edges(max_electrons)
    counts, kept = _row_histograms(electrons, None if mask is None else np.asarray(mask), edges)
    whole = _fit_histogram(counts.sum(axis=0), edges, max_electrons)
    if not np.isfinite(whole.dark_e):
        return whole
    height = electrons.shape[0]
    n_bands = int(np.clip(whole.dark_e * kept.sum() / _BAND_ONE_E, 1, max(height // _BAND_MIN_ROWS, 1)))
    if n_bands == 1:
        return whole
    bounds = np.linspace(0, height, n_bands + 1).astype(int)
    fits, weights = [], []
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        band = _fit_histogram(counts[start:stop].sum(axis=0), edges, max_electrons)
        if np.isfinite(band.dark_e) and np.isfinite(band.dark_e_err):
            fits.append(band)
            weights.append(kept[start:stop].sum())
    if not fits:
        return whole
    weights = np.asarray(weights, dtype=np.float64) / np.sum(weights)
    dark = float(np.sum(weights * [band.dark_e for band in fits]))
    error = float(np.sqrt(np.sum((weights * [band.dark_e_err for band in fits]) ** 2)))
    return whole._replace(dark_e=dark, dark_e_err=error)
