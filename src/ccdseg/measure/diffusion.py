"""The diffusion law σ(z) = sqrt(-A ln(1 - b z)): depth from a point's width, and (A, b) from muon tracks.

A muon crosses the whole thickness in a straight line, so along its projected track the depth runs
linearly from the gates (narrow end, z = 0) to the back (wide end): the transverse width profile of
through-going muons samples σ(z) at known depths, the way DAMIC calibrates the law (arXiv:1607.07410).
"""

import numpy as np
from scipy import optimize

from ccdseg.calib.background import MAD_TO_SIGMA
from ccdseg.errors import ConfigError

#: DAMIC's diffusion law (arXiv:1607.07410): A (µm²) and b (1/µm); pixel pitch and thickness (µm).
DAMIC_A_UM2 = 216.2
DAMIC_B_PER_UM = 8.86e-4
PIXEL_UM = 15.0
THICKNESS_UM = 675.0
#: Variance of a uniformly lit pixel (px²): what pixelisation adds to a measured width.
_PIXEL_VARIANCE = 1.0 / 12.0


def depth_from_sigma(sigma_um, sigma_err_um=0.0, *, a_um2=DAMIC_A_UM2, b_per_um=DAMIC_B_PER_UM):
    """Depth z (µm from the gates) of a point-like deposit of diffusion width σ, with its uncertainty.

    Inverts σ² = -A ln(1 - b z): z = (1 - exp(-σ²/A)) / b, and propagates the error of σ with
    dz/dσ = 2σ exp(-σ²/A) / (A b).

    Parameters
    ----------
    sigma_um, sigma_err_um : float or ndarray
        Width and its uncertainty (µm).
    a_um2, b_per_um : float
        The law's A (µm²) and b (1/µm).

    Returns
    -------
    depth_um, depth_err_um : ndarray
    """
    sigma = np.asarray(sigma_um, dtype=np.float64)
    decay = np.exp(-sigma ** 2 / a_um2)
    return (1.0 - decay) / b_per_um, np.abs(2.0 * sigma * decay / (a_um2 * b_per_um) * np.asarray(sigma_err_um))


def track_axis(charge, rows, cols):
    """Charge-weighted centre (y, x), principal-axis direction (dy, dx), and coordinates along and across it (px)."""
    q = np.clip(np.asarray(charge, dtype=np.float64), 0.0, None)
    q = q if q.sum() > 0 else np.ones_like(q)
    yc, xc = np.average(rows, weights=q), np.average(cols, weights=q)
    dy, dx = rows - yc, cols - xc
    cov = np.cov(np.vstack([dy, dx]), aweights=q, bias=True)
    direction = np.linalg.eigh(cov)[1][:, 1]
    return (yc, xc), direction, dy * direction[0] + dx * direction[1], dx * direction[0] - dy * direction[1]


def width_profile(charge, rows, cols, *, n_bins=10, core=None):
    """Transverse width along a straight track, oriented from its narrow end.

    The track's projected length L comes from the charge's spread along the axis (uniform charge:
    variance L²/12); the fraction f = (t - t_start) / L runs from the narrow end (f = 0) to the wide one.

    Parameters
    ----------
    charge : ndarray (n,)
        Pixel charges (e-).
    rows, cols : ndarray (n,)
        Pixel coordinates (px).
    n_bins : int
        Bins along the track; the outer half bins at each end, where the track's end blurs, are left out.
    core : ndarray (n,) of bool, optional
        The track's own pixels, which give its axis and length; default all. The others (its faint wings,
        which a segmentation cuts off) count in the widths only. The widths weigh every pixel by its signed
        charge, so that the noise of the wings averages out instead of widening the track.

    Returns
    -------
    length_px : float
        Projected length (px).
    fraction : ndarray (n_bins - 1,)
        Bin centres (empty for a track of at most 1 px) as a fraction of the length from the narrow end.
    variance_px2 : ndarray (n_bins - 1,)
        Charge-weighted transverse variance per bin, less the pixel's 1/12 px² (NaN for an empty bin).
    """
    charge = np.nan_to_num(np.asarray(charge, dtype=np.float64))
    rows, cols = np.asarray(rows, float), np.asarray(cols, float)
    core = np.ones(charge.size, bool) if core is None else np.asarray(core, bool)
    q = np.clip(charge[core], 0.0, None)
    if not q.sum() > 0:
        return 0.0, np.zeros(0), np.zeros(0)
    (yc, xc), direction, _, _ = track_axis(q, rows[core], cols[core])
    dy, dx = rows - yc, cols - xc
    along, across = dy * direction[0] + dx * direction[1], dx * direction[0] - dy * direction[1]
    # the ends too from every pixel's signed charge: the faint end of a track (the back, where it is widest)
    # is what a segmentation trims first
    total = charge.sum()
    middle = np.sum(charge * along) / total if total > 0 else 0.0
    spread = np.sum(charge * (along - middle) ** 2) / total if total > 0 else 0.0
    length = np.sqrt(12.0 * spread) if spread > 0 else 0.0
    if not length > 1.0:
        return float(length), np.zeros(0), np.zeros(0)
    along = along - middle
    fraction = along / length + 0.5
    edges = np.linspace(0.5 / n_bins, 1 - 0.5 / n_bins, n_bins)
    index = np.digitize(fraction, edges) - 1
    good = (index >= 0) & (index < n_bins - 1)
    weight = np.bincount(index[good], weights=charge[good], minlength=n_bins - 1)
    centre = np.bincount(index[good], weights=charge[good] * across[good], minlength=n_bins - 1)
    square = np.bincount(index[good], weights=charge[good] * across[good] ** 2, minlength=n_bins - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = np.where(weight > 0, square / weight - (centre / weight) ** 2 - _PIXEL_VARIANCE, np.nan)
    centres = (edges[:-1] + edges[1:]) / 2
    half = (n_bins - 1) // 2
    # nansum / count: an end without a populated bin gives NaN (no flip), not numpy's empty-slice warning
    first, last = variance[:half], variance[-half:]
    with np.errstate(invalid="ignore"):
        widths = [np.nansum(end) / np.count_nonzero(np.isfinite(end)) for end in (first, last)]
    if widths[0] > widths[1]:
        variance = variance[::-1]  # the wide end came first: flip so that f = 0 is the gates
    return float(length), centres, variance


#: Depth bins of the width samples in :func:`fit_diffusion`.
FIT_BINS = 20


def fit_diffusion(fraction, variance_px2, *, thickness_um=THICKNESS_UM, pixel_um=PIXEL_UM):
    """Fit A and b of σ²(z) = -A ln(1 - b z) to width profiles of through-going tracks.

    Parameters
    ----------
    fraction : ndarray
        Depth as a fraction of the thickness (0 at the gates) of each width sample.
    variance_px2 : ndarray
        Diffusion variance (px²) of each sample.
    thickness_um, pixel_um : float
        Thickness of the CCD and pixel pitch (µm).

    Returns
    -------
    a_um2, b_per_um : float
        The law's parameters.
    a_err_um2, b_err_per_um : float
        Their 1σ uncertainties from the scatter of the samples.

    The law is fitted to the mean width of each of ``FIT_BINS`` depth bins (those with 3 samples or more)
    within 3 robust sigmas of the bin's median, weighted by its standard error.

    Raises
    ------
    ConfigError
        Fewer than 3 depth bins with 3 usable samples.
    """
    z = np.asarray(fraction, float) * thickness_um
    variance = np.asarray(variance_px2, float) * pixel_um ** 2
    good = np.isfinite(z) & np.isfinite(variance)
    z, variance = z[good], variance[good]
    # one clipped mean per depth bin: a point or a worm beside a track inflates its widths many times, and a
    # least-squares fit of every sample follows those outliers (damicm: A off by +120 %); a median would be
    # biased, as the widths of faint track ends scatter asymmetrically
    index = np.clip(np.digitize(z, np.linspace(0.0, thickness_um, FIT_BINS + 1)) - 1, 0, FIT_BINS - 1)
    bins = [index == i for i in np.unique(index) if np.count_nonzero(index == i) >= 3]
    if len(bins) < 3:
        raise ConfigError("fit_diffusion: fewer than 3 depth bins with 3 width samples of through-going tracks")
    depth = np.array([np.median(z[sel]) for sel in bins])
    level, error = np.array([_clipped_mean(variance[sel]) for sel in bins]).T
    error = np.maximum(error, 1e-6 * np.abs(level).max() + 1e-12)  # samples all alike: no zero weight
    b_max = (1 - 1e-6) / thickness_um

    def residuals(params):
        return (-params[0] * np.log1p(-params[1] * depth) - level) / error

    result = optimize.least_squares(residuals, [DAMIC_A_UM2, DAMIC_B_PER_UM], bounds=([1e-3, 1e-9], [1e5, b_max]),
                                    x_scale=[DAMIC_A_UM2, DAMIC_B_PER_UM])
    dof = max(depth.size - 2, 1)
    scale = max(np.sum(result.fun ** 2) / dof, 1.0)
    try:
        errors = np.sqrt(np.diag(np.linalg.inv(result.jac.T @ result.jac)) * scale)
    except np.linalg.LinAlgError:
        errors = np.full(2, np.nan)
    return float(result.x[0]), float(result.x[1]), float(errors[0]), float(errors[1])


def _clipped_mean(values, clip=3.0):
    """Mean and its standard error of the values within ``clip`` robust sigmas of their median."""
    centre = np.median(values)
    sigma = MAD_TO_SIGMA * np.median(np.abs(values - centre))
    kept = values[np.abs(values - centre) <= clip * sigma] if sigma > 0 else values
    return float(np.mean(kept)), float(np.std(kept) / np.sqrt(kept.size))
