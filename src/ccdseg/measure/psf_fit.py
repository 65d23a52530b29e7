"""Pixel-integrated 2-D Gaussian fit of a point-like cluster: its charge, centre and diffusion width.

A point-like deposit diffused by σ lands in pixel (i, j) with the share
``[Φ((j + ½ - x)/σx) - Φ((j - ½ - x)/σx)] · [Φ((i + ½ - y)/σy) - Φ((i - ½ - y)/σy)]``
(Φ the normal CDF): the Gaussian integrated over each pixel, not sampled at its centre, which
matters when σ is about a pixel. Each pixel is weighted by its own variance: readout noise,
the dark charge's and the signal's shot noise.
"""

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage, optimize, special

from ccdseg.measure.sections import grown


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
    (share_x, _, _), (share_y, _, _) = (_batch_shares(shape[1], np.array([x]), np.array([sigma_x])),
                                        _batch_shares(shape[0], np.array([y]), np.array([sigma_y])))
    return amplitude_e * share_y[0][:, None] * share_x[0][None, :]


def _batch_shares(n, centre, sigma):
    """Shares (B, n) of B 1-D Gaussians (centres, sigmas (B,)) in ``n`` pixels, and their derivatives by both."""
    u = (np.arange(n + 1)[None, :] - 0.5 - centre[:, None]) / sigma[:, None]
    density = np.exp(-0.5 * u * u) / np.sqrt(2 * np.pi)
    return (np.diff(special.ndtr(u), axis=1), -np.diff(density, axis=1) / sigma[:, None],
            -np.diff(u * density, axis=1) / sigma[:, None])


def _model_and_jacobian(shape, params):
    """Model (B, H, W) of a batch of parameters (B, 5) and its derivatives by them (B, H, W, 5); exact."""
    amplitude, x, y, sigma_x, sigma_y = params.T
    (gx, dgx_x, dgx_s), (gy, dgy_y, dgy_s) = _batch_shares(shape[1], x, sigma_x), _batch_shares(shape[0], y, sigma_y)
    a = amplitude[:, None, None]
    unit = gy[:, :, None] * gx[:, None, :]
    jacobian = np.stack([unit, a * gy[:, :, None] * dgx_x[:, None, :], a * dgy_y[:, :, None] * gx[:, None, :],
                         a * gy[:, :, None] * dgx_s[:, None, :], a * dgy_s[:, :, None] * gx[:, None, :]], axis=-1)
    return a * unit, jacobian


#: Starting widths (px): the fit starts from each and keeps the best. A deposit that nearly fills one pixel
#: (a front-side X-ray, σ ≈ 0.1-0.3 px), started a pixel wide, can slide to zero charge instead.
SIGMA_STARTS = (0.25, 1.0, 2.5)


def fit_point_gaussian(stamp, *, noise_e, dark_e=0.0, mask=None, sigma0=SIGMA_STARTS, max_sigma=10.0):
    """Fit a pixel-integrated 2-D Gaussian on a flat dark level to a stamp in electrons.

    One stamp of :func:`fit_point_gaussians`; see there.

    Returns
    -------
    PointFit
    """
    return fit_point_gaussians([stamp], noise_e=noise_e, dark_e=dark_e, masks=None if mask is None else [mask],
                               sigma0=sigma0, max_sigma=max_sigma)[0]


def fit_point_gaussians(stamps, *, noise_e, dark_e=0.0, masks=None, sigma0=SIGMA_STARTS, max_sigma=10.0):
    """Fit a pixel-integrated 2-D Gaussian on a flat dark level to each of many stamps in electrons.

    Weighted least squares by Levenberg-Marquardt with the exact Jacobian, all stamps of a size bucket
    at once (a catalogue has thousands of point-like clusters). Each pixel is weighted by its expected
    variance (readout noise, shot noise of dark charge and signal) from the previous pass's model:
    weights from the data itself favour downward fluctuations and bias charge and width low by a few
    per cent.

    Parameters
    ----------
    stamps : sequence of ndarray (H, W)
        Cut-outs around one cluster each, in electrons, pedestal subtracted (the dark charge left in).
    noise_e : float
        Readout noise of one pixel (e-).
    dark_e : float
        Mean dark charge per pixel (e-/pix); held fixed as the background level.
    masks : sequence of ndarray (H, W) of bool, optional
        Pixels of each stamp to fit (e.g. leaving out a neighbouring cluster); default all finite pixels.
    sigma0 : float or sequence of float
        Starting widths (px); the fit starts from each and keeps the one of least χ². The centre
        starts at the charge-weighted centroid.
    max_sigma : float
        Upper bound of the widths (px).

    Returns
    -------
    list of PointFit
        Charge (e-), centre and widths (px) with uncertainties, positions in pixels of the stamp; NaN
        everywhere for a stamp with no positive charge above the dark level or fewer pixels than parameters.
    """
    fits = [None] * len(stamps)
    buckets = {}
    for index, stamp in enumerate(stamps):
        buckets.setdefault(tuple(_bucket(n) for n in np.shape(stamp)), []).append(index)
    for shape, indices in buckets.items():
        signal = np.zeros((len(indices), *shape))
        use = np.zeros(signal.shape, dtype=bool)
        extent = np.zeros((len(indices), 2))
        for k, index in enumerate(indices):
            stamp = np.asarray(stamps[index], dtype=np.float64)
            h, w = stamp.shape
            ok = np.isfinite(stamp) if masks is None else np.asarray(masks[index], bool) & np.isfinite(stamp)
            use[k, :h, :w] = ok
            signal[k, :h, :w] = np.where(ok, stamp - dark_e, 0.0)
            extent[k] = w, h
        for k, fit in zip(indices, _fit_bucket(signal, use, extent, noise_e, dark_e, sigma0, max_sigma), strict=True):
            fits[k] = fit
    return fits


#: Most touching clusters fitted together: the pieces of a split cluster; a larger mosaic (noise labelled
#: cluster) keeps the fits of its pieces alone.
MAX_JOINT = 4


def fit_components(image_e, components, boxes, numbers, *, margin, noise_e, dark_e=0.0):
    """:func:`fit_point_gaussians` of the clusters ``numbers`` of a labelled image, all at once.

    Each is fitted on its bounding box grown by ``margin`` px, with the pixels of the other clusters left out.
    Clusters among ``numbers`` that touch (events the catalogue split apart) are then fitted together, one
    Gaussian each on their common box (:func:`fit_touching_gaussians`): each spills charge into the other's
    pixels, which a fit of one alone takes for its own (two touching X-rays came out 12-17 % high and too wide).

    Parameters
    ----------
    image_e : ndarray (H, W)
        Image in electrons, pedestal subtracted.
    components : ndarray (H, W) of int
        Cluster number of each pixel (1, 2, ...), 0 elsewhere.
    boxes : list of tuple of slice
        Bounding box of each cluster, ``ndimage.find_objects(components)`` (the caller's, not found again).
    numbers : sequence of int
        The clusters to fit.
    margin : int
        Pixels around each bounding box (px).
    noise_e, dark_e : float
        As in :func:`fit_point_gaussians`.

    Returns
    -------
    list of PointFit
        One per entry of ``numbers``; positions in pixels of each cluster's own grown box.
    """
    windows = [grown(boxes[number - 1], margin) for number in numbers]
    masks = [(components[window] == 0) | (components[window] == number)
             for window, number in zip(windows, numbers, strict=True)]
    fits = fit_point_gaussians([image_e[window] for window in windows], noise_e=noise_e, dark_e=dark_e, masks=masks)
    for group in _touching_groups(components, boxes, numbers):
        members = [numbers[index] for index in group]
        window = grown(_union(boxes[number - 1] for number in members), margin)
        offsets = [(windows[index][1].start - window[1].start, windows[index][0].start - window[0].start)
                   for index in group]
        starts = [fits[index] for index in group]
        if not all(np.isfinite(fit.amplitude_e) for fit in starts):
            continue
        joint = fit_touching_gaussians(image_e[window], [(fit.amplitude_e, fit.x + dx, fit.y + dy, fit.sigma_x,
                                                          fit.sigma_y) for fit, (dx, dy) in zip(starts, offsets,
                                                                                                strict=True)],
                                       noise_e=noise_e, dark_e=dark_e,
                                       mask=(components[window] == 0) | np.isin(components[window], members))
        for index, fit, (dx, dy) in zip(group, joint, offsets, strict=True):
            fits[index] = replace(fit, x=fit.x - dx, y=fit.y - dy)
    return fits


def fit_touching_gaussians(stamp, starts, *, noise_e, dark_e=0.0, mask=None, max_sigma=10.0):
    """Fit several pixel-integrated 2-D Gaussians together to one stamp in electrons.

    Parameters
    ----------
    stamp : ndarray (H, W)
        Cut-out in electrons, pedestal subtracted (the dark charge left in).
    starts : sequence of (amplitude_e, x, y, sigma_x, sigma_y)
        Starting parameters of each Gaussian (e-, px of the stamp).
    noise_e, dark_e, max_sigma : float
        As in :func:`fit_point_gaussians`.
    mask : ndarray (H, W) of bool, optional
        Pixels to fit; default all finite pixels.

    Returns
    -------
    list of PointFit
        One per start; each pixel weighted by its variance under the starting model, then under the fit.
    """
    stamp = np.asarray(stamp, dtype=np.float64)
    use = np.isfinite(stamp) if mask is None else np.asarray(mask, bool) & np.isfinite(stamp)
    signal = np.where(use, stamp - dark_e, 0.0)
    params = np.asarray(starts, dtype=np.float64)
    count = len(params)
    low = np.tile([0.0, -0.5, -0.5, 0.05, 0.05], count)
    high = np.tile([np.inf, stamp.shape[1] - 0.5, stamp.shape[0] - 0.5, max_sigma, max_sigma], count)

    def model_and_jacobian(flat):
        model, jacobian = _model_and_jacobian(stamp.shape, flat.reshape(count, 5))
        return model.sum(axis=0), jacobian.transpose(1, 2, 0, 3).reshape(stamp.size, 5 * count)

    def residuals(flat, weights):
        return (model_and_jacobian(flat)[0] - signal).ravel() * weights

    def jacobian(flat, weights):
        return model_and_jacobian(flat)[1] * weights[:, None]

    result = None
    for _ in range(2):  # weights from the starting model, then from the fit
        expected = np.clip(model_and_jacobian(params.ravel())[0], 0, None)
        weights = _inverse_sigma(use, noise_e, dark_e, expected).ravel()
        result = optimize.least_squares(residuals, np.clip(params.ravel(), low + 1e-6, high - 1e-6), jac=jacobian,
                                        bounds=(low, high), x_scale="jac", args=(weights,))
        params = result.x.reshape(count, 5)
    dof = max(np.count_nonzero(use) - 5 * count, 1)
    chi2_dof = float(np.sum(result.fun ** 2) / dof)
    errors = _errors((result.jac.T @ result.jac)[None])[0].reshape(count, 5)
    return [PointFit(*(float(v) for v in p), *(float(e) for e in err), chi2_dof, bool(result.success))
            for p, err in zip(params, errors, strict=True)]


def _touching_groups(components, boxes, numbers):
    """Groups (positions in ``numbers``) of 2 to :data:`MAX_JOINT` listed clusters that touch one another."""
    position = {number: index for index, number in enumerate(numbers)}
    parent = list(range(len(numbers)))

    def root(index):
        while parent[index] != index:
            index = parent[index]
        return index

    for index, number in enumerate(numbers):
        window = grown(boxes[number - 1], 1)
        rim = ndimage.binary_dilation(components[window] == number, structure=np.ones((3, 3), bool))
        for other in np.unique(components[window][rim]):
            if other != number and other in position:
                parent[root(position[other])] = root(index)
    groups = {}
    for index in range(len(numbers)):
        groups.setdefault(root(index), []).append(index)
    return [group for group in groups.values() if 1 < len(group) <= MAX_JOINT]


def _union(boxes):
    """The bounding box of several boxes."""
    boxes = list(boxes)
    return tuple(slice(min(box[axis].start for box in boxes), max(box[axis].stop for box in boxes))
                 for axis in (0, 1))


def _bucket(n):
    """Padded size of a stamp side, so that stamps are fitted in a few batches."""
    return 4 * -(-n // 4)


def _fit_bucket(signal, use, extent, noise_e, dark_e, sigma0, max_sigma):
    """PointFits of a batch of zero-padded signals (B, H, W) with their fitted pixels and true (W, H)."""
    nan = PointFit(*([np.nan] * 11), False)
    total = signal.sum(axis=(1, 2))
    good = (total > 0) & (use.sum(axis=(1, 2)) > 5)
    fits = [nan] * len(signal)
    if not good.any():
        return fits
    signal, use, extent, total = signal[good], use[good], extent[good], total[good]
    rows, cols = np.indices(signal.shape[1:])
    weight = np.clip(signal, 0, None)
    norm = weight.sum(axis=(1, 2))
    x0, y0 = (weight * cols).sum(axis=(1, 2)) / norm, (weight * rows).sum(axis=(1, 2)) / norm
    low = np.broadcast_to([0.0, -0.5, -0.5, 0.05, 0.05], (len(signal), 5))
    high = np.column_stack([np.full(len(signal), np.inf), extent - 0.5, np.full((len(signal), 2), max_sigma)])
    # weights from the data first (which favour downward fluctuations), then once more from the fitted model
    inverse_sigma = _inverse_sigma(use, noise_e, dark_e, weight)
    params, best_cost = None, np.full(len(signal), np.inf)
    for start in np.atleast_1d(sigma0):
        trial = np.clip(np.column_stack([total, x0, y0, np.full((len(signal), 2), start)]), low + 1e-6, high - 1e-6)
        trial = _levenberg_marquardt(signal, inverse_sigma, trial, low, high)[0]
        cost = (_weighted(signal, inverse_sigma, trial)[0] ** 2).sum(axis=1)
        params = trial if params is None else np.where((cost < best_cost)[:, None], trial, params)
        best_cost = np.minimum(cost, best_cost)
    inverse_sigma = _inverse_sigma(use, noise_e, dark_e, _weighted(signal, inverse_sigma, params)[2])
    params, converged = _levenberg_marquardt(signal, inverse_sigma, params, low, high)
    residual, jacobian, _ = _weighted(signal, inverse_sigma, params)
    dof = np.maximum(use.sum(axis=(1, 2)) - 5, 1)
    chi2_dof = (residual ** 2).sum(axis=1) / dof
    errors = _errors(jacobian.transpose(0, 2, 1) @ jacobian)
    for k, index in enumerate(np.flatnonzero(good)):
        fits[index] = PointFit(*(float(v) for v in params[k]), *(float(e) for e in errors[k]), float(chi2_dof[k]),
                               bool(converged[k]))
    return fits


def _errors(curvature):
    """1σ errors (B, P) of the parameters from a batch of curvature matrices JᵀJ (B, P, P) of weighted fits.

    NaN where the matrix is singular or the variance negative (a parameter at its bound).
    """
    variance = np.full(curvature.shape[:2], np.nan)
    invertible = np.abs(np.linalg.det(curvature)) > 0
    variance[invertible] = np.diagonal(np.linalg.inv(curvature[invertible]), axis1=1, axis2=2)
    return np.sqrt(np.where(variance >= 0, variance, np.nan))


def _inverse_sigma(use, noise_e, dark_e, expected):
    """1/σ of each fitted pixel: readout noise, shot noise of dark and signal, at least 1/12 e-² (0 when unused)."""
    return np.where(use, 1.0 / np.sqrt(np.maximum(noise_e ** 2 + dark_e + expected, 1.0 / 12.0)), 0.0)


def _weighted(signal, inverse_sigma, params):
    """Weighted residuals (B, P) and Jacobian (B, P, 5) of a batch of stamps at ``params``, and the model."""
    model, jacobian = _model_and_jacobian(signal.shape[1:], params)
    residual = ((signal - model) * inverse_sigma).reshape(len(params), -1)
    return residual, (jacobian * inverse_sigma[..., None]).reshape(len(params), -1, 5), model


def _levenberg_marquardt(signal, inverse_sigma, params, low, high, *, max_iterations=200, tolerance=1e-6):
    """Minimise Σ ((signal - model) · inverse_sigma)² for every stamp of the batch; params kept within bounds.

    Marquardt's scaling (damping along the diagonal of JᵀJ) copes with parameters of very different
    sizes (thousands of electrons, fractions of a pixel). Returns the parameters and whether each fit met
    the relative tolerance on its cost.
    """
    def cost_and_gradients(p, which=slice(None)):
        residual, weighted, _ = _weighted(signal[which], inverse_sigma[which], p)
        transposed = weighted.transpose(0, 2, 1)  # batched matmul: BLAS, ~7x faster than the same einsum
        return (residual ** 2).sum(axis=1), transposed @ weighted, (transposed @ residual[..., None])[..., 0]

    cost, curvature, gradient = cost_and_gradients(params)
    damping = np.full(len(params), 1e-3)
    converged = np.zeros(len(params), dtype=bool)
    for _ in range(max_iterations):
        active = ~converged
        if not active.any():
            break
        a = curvature[active]
        diagonal = np.einsum("bkk->bk", a)
        a = a + (damping[active, None] * np.maximum(diagonal, 1e-12))[:, :, None] * np.eye(5)
        try:
            step = np.linalg.solve(a, gradient[active][..., None])[..., 0]
        except np.linalg.LinAlgError:  # a stamp whose model does not depend on some parameter (no charge left)
            step = (np.linalg.pinv(a) @ gradient[active][..., None])[..., 0]
        trial = np.clip(params[active] + step, low[active] + 1e-9, high[active] - 1e-9)
        new_cost, new_curvature, new_gradient = cost_and_gradients(trial, active)
        better = new_cost < cost[active]
        index = np.flatnonzero(active)
        done = better & (cost[active] - new_cost <= tolerance * cost[active])
        done |= ~better & (damping[active] > 1e10)
        take = index[better]
        params[take], cost[take] = trial[better], new_cost[better]
        curvature[take], gradient[take] = new_curvature[better], new_gradient[better]
        damping[index] = np.where(better, damping[index] / 10, damping[index] * 10)
        converged[index[done]] = True
    return params, converged
