"""Pixel-integrated 2-D Gaussian fit of a point-like cluster: its charge, centre and diffusion width.

A point-like deposit diffused by σ lands in pixel (i, j) with the share
``[Φ((j + ½ - x)/σx) - Φ((j - ½ - x)/σx)] · [Φ((i + ½ - y)/σy) - Φ((i - ½ - y)/σy)]``
(Φ the normal CDF): the Gaussian integrated over each pixel, not sampled at its centre, which
matters when σ is about a pixel. Each pixel is weighted by its own variance: readout noise,
the dark charge's and the signal's shot noise.
"""

from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

_SQRT2 = np.sqrt(2.0)


@dataclass(frozen=True)
class PointFit:
    """Result of :func:`fit_point_gaussian`; positions in pixels of the stamp (centre of pixel (0, 0) at 0, 0).

    Attributes
    ----------
    amplitude_e, x, y, sigma_x, sigma_y : float
        Total charge of the Gaussian (e-), centre (px) and widths (px).
    amplitude_err_e, x_err, y_err, sigma_x_err, sigma_y_err : float
        Their 1σ uncertainties from the covariance of the weighted fit.
    chi2_dof : float
        χ² per degree of freedom (about 1 for a point-like cluster, much more for a track).
    success : bool
        Whether the optimiser converged.
    """

    amplitude_e: float
    x: float
    y: float
    sigma_x: float
    sigma_y: float
    amplitude_err_e: float
    x_err: float
    y_err: float
    sigma_x_err: float
    sigma_y_err: float
    chi2_dof: float
    success: bool

    @property
    def sigma(self):
        """Geometric-mean width sqrt(σx·σy) (px)."""
        return float(np.sqrt(self.sigma_x * self.sigma_y))


def integrated_gaussian(shape, amplitude_e, x, y, sigma_x, sigma_y):
    """Expected charge per pixel (e-) of a 2-D Gaussian of total ``amplitude_e`` integrated over each pixel."""
    (share_x, _, _), (share_y, _, _) = _shares(shape[1], x, sigma_x), _shares(shape[0], y, sigma_y)
    return amplitude_e * share_y[:, None] * share_x[None, :]


def _shares(n, centre, sigma):
    """Share of a 1-D Gaussian in each of ``n`` pixels, and its derivatives by the centre and by sigma."""
    u = (np.arange(n + 1) - 0.5 - centre) / sigma
    density = np.exp(-0.5 * u * u) / np.sqrt(2 * np.pi)
    return np.diff(special.ndtr(u)), -np.diff(density) / sigma, -np.diff(u * density) / sigma


def _jacobian(shape, amplitude_e, x, y, sigma_x, sigma_y):
    """Derivatives of :func:`integrated_gaussian` by its five parameters, (H, W, 5).

    Exact, so the fit needs no finite differences (five model evaluations per step fewer).
    """
    (gx, dgx_x, dgx_s), (gy, dgy_y, dgy_s) = _shares(shape[1], x, sigma_x), _shares(shape[0], y, sigma_y)
    return np.stack([gy[:, None] * gx[None, :], amplitude_e * gy[:, None] * dgx_x[None, :],
                     amplitude_e * dgy_y[:, None] * gx[None, :], amplitude_e * gy[:, None] * dgx_s[None, :],
                     amplitude_e * dgy_s[:, None] * gx[None, :]], axis=-1)


def fit_point_gaussian(stamp, *, noise_e, dark_e=0.0, mask=None, x0=None, y0=None, sigma0=1.0,
                       max_sigma=10.0):
    """Fit a pixel-integrated 2-D Gaussian on a flat dark level to a stamp in electrons.

    Parameters
    ----------
    stamp : ndarray (H, W)
        Cut-out around one cluster, in electrons, pedestal subtracted (the dark charge left in).
    noise_e : float
        Readout noise of one pixel (e-).
    dark_e : float
        Mean dark charge per pixel (e-/pix); held fixed as the background level.
    mask : ndarray (H, W) of bool, optional
        Pixels to fit (e.g. leaving out a neighbouring cluster); default all finite pixels.
    x0, y0 : float, optional
        Starting centre (px); default the charge-weighted centroid.
    sigma0 : float
        Starting width (px).
    max_sigma : float
        Upper bound of the widths (px).

    Returns
    -------
    PointFit
        Charge (e-), centre and widths (px) with uncertainties; NaN everywhere when the stamp has
        no positive charge above the dark level or fewer pixels than parameters.
    """
    stamp = np.asarray(stamp, dtype=np.float64)
    use = np.isfinite(stamp) if mask is None else (np.asarray(mask, bool) & np.isfinite(stamp))
    signal = np.where(use, stamp - dark_e, 0.0)
    total = signal.sum()
    if total <= 0 or np.count_nonzero(use) <= 5:
        return PointFit(*([np.nan] * 11), False)
    rows, cols = np.indices(stamp.shape)
    weight = np.clip(signal, 0, None)
    x0 = float((weight * cols).sum() / weight.sum()) if x0 is None else x0
    y0 = float((weight * rows).sum() / weight.sum()) if y0 is None else y0
    low = [0.0, -0.5, -0.5, 0.05, 0.05]
    high = [np.inf, stamp.shape[1] - 0.5, stamp.shape[0] - 0.5, max_sigma, max_sigma]
    params = np.clip([total, x0, y0, sigma0, sigma0], np.array(low) + 1e-6, np.array(high) - 1e-6)
    # the variance of each pixel (readout noise, shot noise of dark charge and signal) is taken from the
    # previous pass's model: weights from the data itself favour downward fluctuations and bias the
    # charge and width low by a few per cent
    expected = np.clip(signal, 0, None)
    for _ in range(2):
        # at least the 1/12 e-^2 of whole electrons, so a noiseless, dark-free pixel still has a weight
        inverse_sigma = 1.0 / np.sqrt(np.maximum(noise_e ** 2 + dark_e + expected, 1.0 / 12.0))[use]

        def residuals(p, inverse_sigma=inverse_sigma):
            return (signal[use] - integrated_gaussian(stamp.shape, *p)[use]) * inverse_sigma

        def jacobian(p, inverse_sigma=inverse_sigma):
            return -_jacobian(stamp.shape, *p)[use] * inverse_sigma[:, None]

        # 1e-6 of the cost and parameters is far below their statistical errors, and halves the iterations
        result = optimize.least_squares(residuals, params, jac=jacobian, bounds=(low, high), x_scale="jac",
                                        ftol=1e-6, xtol=1e-6)
        params = result.x
        expected = integrated_gaussian(stamp.shape, *params)
    dof = max(np.count_nonzero(use) - 5, 1)
    chi2_dof = float(np.sum(result.fun ** 2) / dof)
    try:
        variance = np.diag(np.linalg.inv(result.jac.T @ result.jac))
    except np.linalg.LinAlgError:
        variance = np.full(5, np.nan)
    errors = np.sqrt(np.where(variance >= 0, variance, np.nan))  # negative: a parameter at its bound
    return PointFit(*(float(v) for v in result.x), *(float(e) for e in errors), chi2_dof, bool(result.success))
