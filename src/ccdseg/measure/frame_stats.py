"""Everything measurable about a skipper frame, with one code for real and simulated frames.

Readout (gain, 0 e- peak, noise), dark charge and its ramps, and the events: clusters of pixels
with at least :data:`ccdseg.calib.frame.EVENT_MIN_E` electrons (8 neighbours), their charge above
the dark level, size, and for point-like ones the width of a pixel-integrated Gaussian fit.
:func:`ccdseg.measure.like.fit_like` turns these numbers into a simulation config and
``benchmarks/fidelity.py`` compares a preset with a real frame through them.
"""

from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from scipy import ndimage

from ccdseg.calib import frame
from ccdseg.calib.gain import estimate_gain
from ccdseg.errors import ConfigError
from ccdseg.measure.psf_fit import fit_components
from ccdseg.measure.sections import structure

#: Charge window of the clusters whose Gaussian width is fitted (e-).
POINT_CHARGE_E = (100.0, 20000.0)
#: ⁵⁵Fe Kα/Kβ window (e-): 5.9 keV / 3.77 eV = 1565 e-.
FE55_WINDOW_E = (1400.0, 1800.0)
#: A fitted cluster is point-like when its two widths differ by less than this factor and χ²/dof is below the next.
POINT_MAX_ELONGATION = 1.5
POINT_MAX_CHI2 = 3.0
_MARGIN_PX = 3


@dataclass
class FrameStats:
    """Measurements of one frame (see :func:`measure_frame`); charges in e-, lengths in px.

    Attributes
    ----------
    shape : (int, int)
    gain : float
        ADU/e- from the spacing of the electron peaks.
    pedestal_adu : float
        Position of the 0 e- peak (ADU).
    noise_e : float
        Width of the 0 e- peak (e-).
    occupancy : ndarray (4,)
        Share of pixels with 0, 1, 2 and >= 3 e-.
    dark : dict
        ``level``, ``per_100_rows``, ``across_columns``, ``first_row`` (:func:`ccdseg.calib.frame.dark_ramps`).
    first_column_e : float
        Excess of column 0 over the others (e-).
    row_baseline_std_e : float
        Spread of the row-by-row position of the 0 e- peak (e-): the pedestal's wander.
    max_pixel_e : float
        Brightest pixel (e-).
    clusters : astropy.table.Table
        One row per cluster: charge_e, npix, height, width, x, y, sigma (NaN unless fitted), chi2_dof, point_like.
    """

    shape: tuple
    gain: float
    pedestal_adu: float
    noise_e: float
    occupancy: np.ndarray
    dark: dict
    first_column_e: float
    row_baseline_std_e: float
    max_pixel_e: float
    clusters: Table

    @property
    def mpix(self):
        """Area of the frame (megapixels)."""
        return self.shape[0] * self.shape[1] / 1e6

    def rate_per_mpix(self, min_charge_e=1000.0):
        """Clusters with at least ``min_charge_e`` per megapixel."""
        return float(np.count_nonzero(self.clusters["charge_e"] >= min_charge_e) / self.mpix)

    def fe55_share(self, min_charge_e=POINT_CHARGE_E[0]):
        """Share of the clusters above ``min_charge_e`` inside :data:`FE55_WINDOW_E`."""
        q = self.clusters["charge_e"]
        above = q >= min_charge_e
        return float(np.count_nonzero(above & (q >= FE55_WINDOW_E[0]) & (q <= FE55_WINDOW_E[1]))
                     / max(np.count_nonzero(above), 1))

    def point_sigmas(self):
        """Fitted widths (px) of the point-like clusters."""
        return np.asarray(self.clusters["sigma"][self.clusters["point_like"]])

    def streaks_per_mpix(self, min_length=3, min_charge_e=20.0):
        """One-row clusters at least ``min_length`` px long with ``min_charge_e`` or more per megapixel."""
        c = self.clusters
        return float(np.count_nonzero((c["height"] == 1) & (c["width"] >= min_length)
                                      & (c["charge_e"] >= min_charge_e)) / self.mpix)

    def isolated_per_mpix(self, min_charge_e=10.0, max_charge_e=100.0):
        """Single-pixel clusters with ``min_charge_e`` to ``max_charge_e`` per megapixel: hot-pixel candidates."""
        c = self.clusters
        return float(np.count_nonzero((c["npix"] == 1) & (c["charge_e"] >= min_charge_e)
                                      & (c["charge_e"] < max_charge_e)) / self.mpix)


def measure_frame(image, *, gain=None, fit_points=True):
    """Measure a skipper frame in ADU that resolves single electrons.

    Parameters
    ----------
    image : ndarray (H, W)
        Frame in ADU (pedestal included).
    gain : float, optional
        ADU/e-; default measured from the spacing of the electron peaks.
    fit_points : bool
        Fit the width of the clusters of :data:`POINT_CHARGE_E` (about 20 ms each).

    Returns
    -------
    FrameStats

    Raises
    ------
    ConfigError
        No gain given and no resolved electron peaks to measure it from, or a gain given for a frame
        whose electron peaks are not resolved.
    """
    image = np.asarray(image, dtype=np.float64)
    if gain is None:
        estimate = estimate_gain(image)
        gain = None if estimate is None else estimate.value
    else:
        gain = float(gain)
    if gain is None:
        raise ConfigError("gain: the frame does not resolve single electrons; pass the gain in ADU/e-")
    median = np.median(image[np.isfinite(image)])
    image_e = (image - median) / gain
    offset, noise = frame.zero_peak(image_e)
    if noise > 0.95 * frame.MAX_PEAK_WIDTH_E:
        raise ConfigError(f"the frame does not resolve single electrons (0 e- peak wider than "
                          f"{frame.MAX_PEAK_WIDTH_E} e-): it cannot be measured with the given gain {gain:.4g} ADU/e-")
    image_e -= offset
    counts = frame.electron_counts(image_e)
    mask = frame.dark_mask(counts)
    dark = frame.dark_ramps(counts, mask)
    clusters = _clusters(image_e, counts, dark["level"], noise, fit_points)
    return FrameStats(shape=image.shape, gain=gain, pedestal_adu=float(median + offset * gain), noise_e=noise,
                      occupancy=frame.occupancy(counts), dark=dark,
                      first_column_e=float(frame.column_excess(image_e)[0]),
                      row_baseline_std_e=_row_baseline_std(image_e, counts),
                      max_pixel_e=float(np.nanmax(image_e)), clusters=clusters)


def _row_baseline_std(image_e, counts):
    """Standard deviation over rows of the mean value of the 0 e- pixels of each row (e-)."""
    zero = np.where(counts == 0, image_e, np.nan)
    return float(np.nanstd(np.nanmean(zero, axis=1)))


def _clusters(image_e, counts, dark_e, noise_e, fit_points):
    labels, n = ndimage.label(counts >= frame.EVENT_MIN_E, structure(2))
    slices = ndimage.find_objects(labels)
    index = np.arange(1, n + 1)
    npix = ndimage.sum_labels(np.ones_like(image_e), labels, index)
    charge = ndimage.sum_labels(image_e, labels, index) - dark_e * npix
    sigma, chi2 = np.full(n, np.nan), np.full(n, np.nan)
    elongation = np.full(n, np.nan)
    height = np.array([s[0].stop - s[0].start for s in slices], dtype=int)
    width = np.array([s[1].stop - s[1].start for s in slices], dtype=int)
    centre = ndimage.center_of_mass(np.clip(image_e, 0, None), labels, index) if n else []
    if fit_points:
        fitted = np.flatnonzero((charge >= POINT_CHARGE_E[0]) & (charge <= POINT_CHARGE_E[1]))
        fits = fit_components(image_e, labels, slices, fitted + 1, margin=_MARGIN_PX, noise_e=noise_e, dark_e=dark_e)
        for k, fit in zip(fitted, fits, strict=True):
            sigma[k], chi2[k] = fit.sigma, fit.chi2_dof
            elongation[k] = max(fit.sigma_x, fit.sigma_y) / min(fit.sigma_x, fit.sigma_y)
    point_like = (elongation < POINT_MAX_ELONGATION) & (chi2 < POINT_MAX_CHI2)
    return Table({"charge_e": charge, "npix": npix.astype(int), "height": height, "width": width,
                  "x": np.array([c[1] for c in centre]), "y": np.array([c[0] for c in centre]),
                  "sigma": sigma, "chi2_dof": chi2, "point_like": point_like})
