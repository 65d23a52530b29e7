"""Search products of one image: its analysis mask, its low-energy events and a summary of its exposure.

From the segmentation to a clean exposure: :func:`ccdseg.measure.mask.build_mask` masks everything
that is not quiet background; in the exposed pixels the electron peaks give the dark charge
(:func:`ccdseg.measure.dark.fit_dark_by_rows`), the pixel counts by electrons, and the 2-4 e- events
(:mod:`ccdseg.measure.low_energy`) with the number dark charge alone would make.
"""

from collections import namedtuple
from dataclasses import dataclass

import numpy as np
from astropy.table import Column, Table, vstack
from scipy import ndimage

from ccdseg.calib.background import robust_sigma, row_bands, row_medians, sample_rows
from ccdseg.calib.electrons import to_electrons
from ccdseg.classes import BACKGROUND, CLUSTER
from ccdseg.measure import catalog
from ccdseg.measure.dark import fit_dark_by_rows
from ccdseg.measure.low_energy import LOW_ENERGY_MAX_E, expected_dark_events, find_low_energy_events
from ccdseg.measure.mask import build_mask
from ccdseg.measure.sections import component_sums, structure

#: Summary columns: name -> description (units in brackets). -1 in the counts: the frame does not resolve electrons.
SUMMARY_COLUMNS = {
    "hdu": "name of the image extension",
    "gain": "[ADU/e-] gain (fitted peak spacing for frames resolving electrons, else the gain used)",
    "gain_err": "[ADU/e-] 1-sigma error of the fitted gain; NaN when not fitted",
    "noise_e": "[e-] readout noise",
    "dark_e": "[e-/pix] dark charge of the exposed pixels outside clusters (fit of the 0-2 e- peaks less the "
              "low-energy events beyond dark coincidences, else mean)",
    "dark_e_err": "[e-/pix] 1-sigma statistical error of dark_e",
    "dark_e_lo": "[e-/pix] lower end of the 90 % confidence interval of dark_e (at least 0)",
    "dark_e_hi": "[e-/pix] upper end of the 90 % confidence interval of dark_e",
    "exposed_pix": "pixels with no mask bit set",
    "masked_fraction": "share of the pixels with a mask bit set",
    "resolved": "the frame resolves single electrons",
    **{f"n_{k}e": f"exposed pixels holding {k} e- (rounded); -1 when not resolved" for k in range(5)},
    "n_low_energy": "2-4 e- events in the exposed pixels; -1 when not resolved",
    "n_low_energy_dark": "2-4 e- events expected from dark-charge coincidences; NaN when not resolved",
    "exposure_s": "[s] exposure from the header (EXPOSURE or EXPTIME); NaN when absent",
    "readout_s": "[s] readout time from the header (READOUT_SEC); 0 when absent",
    "dark_e_per_day": "[e-/pix/day] dark_e over exposure_s + readout_s / 2 (the mean pixel's wait)",
}
#: Half-width of a two-sided 90 % Gaussian confidence interval, in sigmas.
_Z90 = 1.6449
#: Largest relative error of a fitted peak spacing that replaces the gain used.
_GAIN_FIT_TOLERANCE = 0.05
#: Keys of the exposure and of the readout time (s), first match wins.
EXPOSURE_KEYS = ("EXPOSURE", "EXPTIME")
READOUT_KEYS = ("READOUT_SEC",)


@dataclass
class SearchProducts:
    """The search products of one image.

    Attributes
    ----------
    mask : ndarray (H, W) uint16
        Analysis bitmask (:data:`ccdseg.measure.mask.MASK_BITS`).
    summary : dict
        One row of :data:`SUMMARY_COLUMNS`.
    catalog : astropy.table.Table
        The cluster catalogue followed by the low-energy events, with a bool column ``low_energy``.
    """

    mask: np.ndarray
    summary: dict
    catalog: Table


def header_seconds(headers, keys):
    """The first of ``keys`` found in ``headers`` as seconds, or NaN."""
    for header in headers:
        for key in keys:
            if header is not None and key in header:
                try:
                    return float(header[key])
                except (TypeError, ValueError):
                    continue
    return np.nan


def search_products(image, labels, clusters, *, gain, headers=(), hdu="", segments=None, run_defects=None,
                    mask_options=None, seed=0):
    """Mask, low-energy events and summary of one segmented image.

    Parameters
    ----------
    image : ndarray (H, W)
        Raw image in ADU, NaN outside the data section.
    labels : ndarray (H, W) of int
        Its segmentation.
    clusters : astropy.table.Table
        Its cluster catalogue (:func:`ccdseg.measure.catalog.find_clusters`).
    gain : float or None
        Gain (ADU/e-). Without it only the segmentation and edge bits are set and the charges are NaN.
    headers : sequence of astropy.io.fits.Header
        Where to look for the exposure and readout time (the image's, then the primary).
    hdu : str
        Name of the image, copied into the summary and the low-energy rows.
    segments : list of (slice, slice), optional
        Amplifier segments (see :func:`ccdseg.measure.mask.build_mask`).
    run_defects : ndarray (H, W) of bool, optional
        Run-level defects to mask.
    mask_options : MaskOptions, optional
    seed : int
        Seed of the dark-only frames of the expected low-energy count.

    Returns
    -------
    SearchProducts
    """
    image = np.asarray(image)
    if gain is None:
        electrons, resolved = np.where(np.isfinite(image), np.float32(0), np.float32(np.nan)), False
    else:
        electrons, resolved = to_electrons(image, gain)
    mask = build_mask(electrons, labels, options=mask_options, segments=segments, run_defects=run_defects,
                      low_energy_e=LOW_ENERGY_MAX_E + 0.5 if resolved else None)
    exposed = mask == 0
    stats = _exposed_statistics(electrons, exposed)
    row = {"hdu": hdu, "gain": np.nan if gain is None else gain, "gain_err": np.nan,
           "exposed_pix": int(exposed.sum()), "masked_fraction": float(1 - exposed.mean()), "resolved": resolved}
    events = np.zeros(image.shape, np.int32)
    if resolved:
        fitted = exposed & ~_event_pixels(labels)
        del exposed
        fit = fit_dark_by_rows(electrons, ~fitted)
        n_fitted = np.count_nonzero(fitted)
        del fitted
        events = find_low_energy_events(electrons, mask)
        expected = expected_dark_events(mask, fit.dark_e, fit.noise_e, seed=seed)
        if fit.gain_scale_err < _GAIN_FIT_TOLERANCE:  # else too few electrons to measure the peak spacing
            row.update(gain=gain * fit.gain_scale, gain_err=gain * fit.gain_scale_err)
        dark, dark_err = _without_low_energy_excess(fit, electrons, events, expected, n_fitted)
        row.update(noise_e=fit.noise_e, dark_e=dark, dark_e_err=dark_err,
                   **{f"n_{k}e": int(n) for k, n in enumerate(stats.n_electrons)},
                   n_low_energy=int(events.max()), n_low_energy_dark=expected)
    else:
        known = gain is not None and stats.n > 1
        rows = sample_rows(electrons.shape)  # the noise of a few million pixels is known to a fraction of a %
        row.update(noise_e=robust_sigma(electrons[rows][exposed[rows]]) if known else np.nan,
                   dark_e=stats.mean if known else np.nan,
                   dark_e_err=stats.std / np.sqrt(stats.n) if known else np.nan,
                   **{f"n_{k}e": -1 for k in range(5)}, n_low_energy=-1, n_low_energy_dark=np.nan)
    row["exposure_s"] = header_seconds(headers, EXPOSURE_KEYS)
    readout = header_seconds(headers, READOUT_KEYS)
    row["readout_s"] = 0.0 if np.isnan(readout) else readout
    # a search quotes 90 % intervals: one sigma leaves the truth outside in a third of the frames
    row["dark_e_lo"] = float(np.maximum(row["dark_e"] - _Z90 * row["dark_e_err"], 0.0))  # NaN stays NaN
    row["dark_e_hi"] = row["dark_e"] + _Z90 * row["dark_e_err"]
    row["dark_e_per_day"] = row["dark_e"] / ((row["exposure_s"] + row["readout_s"] / 2) / 86400.0)
    return SearchProducts(mask, row, _with_low_energy(image, electrons, clusters, events, gain, hdu))


ExposedStatistics = namedtuple("ExposedStatistics", "n mean std n_electrons")


def _exposed_statistics(electrons, exposed):
    """Number, mean and standard deviation (e-) of the finite exposed pixels, and how many round to 0 ... 4 e-.

    Accumulated in float64 a band of rows at a time, so a large frame costs no copy of its exposed pixels.
    """
    n, total, squares, counts = 0, 0.0, 0.0, np.zeros(5, np.int64)
    for rows in row_bands(electrons.shape[0]):
        values = electrons[rows][exposed[rows]].astype(np.float64)
        values = values[np.isfinite(values)]
        n, total, squares = n + values.size, total + values.sum(), squares + np.square(values).sum()
        rounded = np.round(values)
        counts += np.bincount(rounded[(rounded >= 0) & (rounded <= 4)].astype(np.int64), minlength=5)
    mean = total / n if n else np.nan
    std = np.sqrt(max(squares / n - mean**2, 0.0)) if n else np.nan
    return ExposedStatistics(n, float(mean), float(std), counts)


def _without_low_energy_excess(fit, electrons, events, expected, n_fitted):
    """Dark charge (e-/pix) and its error, less the charge of the low-energy events beyond dark coincidences.

    The 1-2 e- pixels of 2-4 e- events are exposed and enter the fit of the peaks as dark charge; where more
    such events are found than dark charge makes by chance (``expected``), the excess's share of their
    charge in the fitted range (<= 2 e- per pixel) is taken off, and its Poisson error added.
    """
    found = int(events.max())
    if found == 0 or n_fitted == 0:
        return fit.dark_e, fit.dark_e_err
    counts = np.round(electrons[events > 0])
    per_event = np.sum(counts[counts <= 2]) / found / n_fitted  # e-/pix that one event adds to the fit
    excess = max(found - expected, 0.0)
    return fit.dark_e - excess * per_event, float(np.hypot(fit.dark_e_err, np.sqrt(found) * per_event))


def _event_pixels(labels):
    """Cluster pixels in components of two or more: events to count, not dark charge.

    A lone cluster pixel may be a dark electron that a thresholding segmentation calls a cluster.
    """
    components, n = ndimage.label(np.asarray(labels) == CLUSTER, structure=structure(2))
    return (component_sums(components, n) >= 2)[components]


def _with_low_energy(image, electrons, clusters, events, gain, hdu):
    """The catalogue with the low-energy events appended (same columns, ids continued, ``low_energy`` True)."""
    clusters = clusters.copy()
    clusters["low_energy"] = Column(np.zeros(len(clusters), bool), description="2-4 e- event of the exposed pixels")
    if not events.any():
        return clusters
    # the pedestal of the electron counts, so that the catalogue's charges are the counted electrons
    pedestal = np.concatenate([row_medians(image[rows] - electrons[rows] * gain) for rows in row_bands(image.shape[0])])
    found = catalog.find_clusters(image, np.where(events > 0, np.uint8(CLUSTER), np.uint8(BACKGROUND)), gain=gain,
                                  pedestal=np.nan_to_num(pedestal), hdu=hdu, particles=False)
    found["id"] += len(clusters)
    found["low_energy"] = True
    return vstack([clusters, found], metadata_conflicts="silent")


def summary_table(rows):
    """The summaries of a file's images as a table with the columns of :data:`SUMMARY_COLUMNS`."""
    table = Table(rows=[[row[name] for name in SUMMARY_COLUMNS] for row in rows], names=list(SUMMARY_COLUMNS))
    for name, description in SUMMARY_COLUMNS.items():
        table[name].description = description
    return table
