"""Catalogues of the objects in a segmentation: clusters with their charge and shape, sections of one class.

Units follow the column names: ``*_adu`` in ADU, ``*_e`` in electrons, ``energy_ev`` in eV, positions and
widths in pixels (0-based, ``x`` = column, ``y`` = row, bounds inclusive). Electron columns carry no astropy
unit because FITS has no unit for electrons; their descriptions say ``e-``.
"""

import warnings
from collections import namedtuple

import astropy.units as u
import numpy as np
from astropy.table import Column, Table
from scipy import ndimage, optimize, signal

from ccdseg.background import robust_sigma, row_pedestal
from ccdseg import classes
from ccdseg.classes import CLUSTER, GLOWING, HOT_PIXEL
from ccdseg.errors import ConfigError

#: Catalogue schema: name -> (dtype, unit, description). Fixed, so CSV/FITS readers can rely on it.
CATALOG_COLUMNS = {
    "id": (np.int32, None, "cluster number, 1..n"),
    "hdu": (str, None, "name of the image extension"),
    "x": (np.float64, u.pix, "charge-weighted centroid column, 0-based"),
    "y": (np.float64, u.pix, "charge-weighted centroid row, 0-based"),
    "xmin": (np.int32, u.pix, "first column of the bounding box"),
    "xmax": (np.int32, u.pix, "last column of the bounding box (inclusive)"),
    "ymin": (np.int32, u.pix, "first row of the bounding box"),
    "ymax": (np.int32, u.pix, "last row of the bounding box (inclusive)"),
    "npix": (np.int64, None, "number of pixels"),
    "charge_adu": (np.float64, u.adu, "sum of pedestal-subtracted pixel values"),
    "peak_adu": (np.float64, u.adu, "largest pedestal-subtracted pixel value"),
    "charge_e": (np.float64, None, "charge (e-); NaN when the gain is unknown"),
    "energy_ev": (np.float64, u.eV, "charge_e times the energy per electron-hole pair; NaN without gain"),
    "peak_e": (np.float64, None, "largest pixel charge (e-); NaN when the gain is unknown"),
    "mean_prob": (np.float64, None, "mean cluster-class probability; NaN without probabilities"),
    "sigma_x": (np.float64, u.pix, "charge-weighted standard deviation along x"),
    "sigma_y": (np.float64, u.pix, "charge-weighted standard deviation along y"),
    "elongation": (np.float64, None, "ratio of principal-axis widths (>= 1)"),
    "edge": (bool, None, "touches the image border"),
    "near_glow": (bool, None, "a pixel is 8-adjacent to a glowing pixel"),
    "near_hot": (bool, None, "a pixel is 8-adjacent to a hot pixel"),
}

#: Smallest gain (ADU/e-) :func:`estimate_gain` reports for integer data: with electron peaks only 1-2
#: quantisation steps (ADU) apart, the peaks found are those of the quantisation, not of the electrons.
MIN_INTEGER_GAIN = 3.0

#: Variance of a uniformly lit pixel (px^2); regularises the elongation of one-pixel-wide clusters.
_PIXEL_VARIANCE = 1.0 / 12.0

Section = namedtuple("Section", "ymin ymax xmin xmax npix")
Section.__doc__ = "Bounding box of a connected region (inclusive pixel bounds, 0-based) and its pixel count."


def _structure(connectivity):
    if connectivity not in (1, 2):
        raise ConfigError(f"connectivity must be 1 (4 neighbours) or 2 (8 neighbours), got {connectivity!r}")
    return ndimage.generate_binary_structure(2, connectivity)


def _pedestal_array(image, pedestal):
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


def _catalog(columns):
    """Table with the schema of :data:`CATALOG_COLUMNS` from a dict of equal-length arrays."""
    table = Table()
    for name, (dtype, unit, description) in CATALOG_COLUMNS.items():
        values = np.asarray(columns[name])
        if dtype is str:
            dtype = f"U{max(values.dtype.itemsize // 4, 1)}"
        table[name] = Column(values.astype(dtype), unit=unit, description=description)
    return table


def find_clusters(image, labels, probabilities=None, gain=None, pedestal=None, hdu="", connectivity=2,
                  ev_per_pair=3.77):
    """Catalogue the connected components of the cluster class, one row per cluster.

    Parameters
    ----------
    image : ndarray (H, W)
        Raw image in ADU. NaN/Inf pixels count as zero charge.
    labels : ndarray (H, W) of int
        Segmentation (class ids of :mod:`ccdseg.classes`); components of ``labels == CLUSTER`` are catalogued.
    probabilities : ndarray (N_CLASSES, H, W), optional
        Class probabilities; gives ``mean_prob``, the mean cluster probability over the cluster's pixels.
    gain : float, optional
        Gain in ADU/e-. Without it the electron and energy columns are NaN (the schema stays the same).
    pedestal : float or ndarray (H,), optional
        Pedestal in ADU, one value or one per row. Default: :func:`ccdseg.background.row_pedestal`.
    hdu : str
        Name of the image extension, copied into every row.
    connectivity : {1, 2}
        Pixels touching by an edge (1) or also by a corner (2, default: a diffused track that steps
        diagonally stays one cluster).
    ev_per_pair : float
        Mean energy per electron-hole pair in eV (3.77 eV in silicon at ~140 K).

    Returns
    -------
    astropy.table.Table
        Columns of :data:`CATALOG_COLUMNS`, zero rows when there is no cluster. Centroids and widths weight
        each pixel by its positive charge (negative noise pixels get zero weight; a cluster without positive
        charge uses equal weights). ``elongation`` adds the 1/12 px^2 pixel variance to both principal
        variances, so a one-pixel-wide track has a finite elongation.
    """
    image = np.asarray(image, dtype=np.float64)
    labels = np.asarray(labels)
    if image.ndim != 2 or labels.shape != image.shape:
        raise ConfigError(f"image and labels must be 2-D arrays of one shape, got {image.shape} and {labels.shape}")
    if gain is not None and not gain > 0:
        raise ConfigError(f"gain must be positive (ADU/e-), got {gain!r}")
    if probabilities is not None and np.shape(probabilities)[1:] != image.shape:
        raise ConfigError(f"probabilities must have shape (N_CLASSES, {image.shape[0]}, {image.shape[1]}), "
                          f"got {np.shape(probabilities)}")
    pedestal = _pedestal_array(image, pedestal)

    components, n = ndimage.label(labels == CLUSTER, structure=_structure(connectivity))
    if n == 0:
        return _catalog({name: np.zeros(0, dtype=str if name == "hdu" else float) for name in CATALOG_COLUMNS})
    ys, xs = np.nonzero(components)
    lab = components[ys, xs] - 1
    values = image[ys, xs] - pedestal[ys if pedestal.shape[0] > 1 else 0, 0]
    values[~np.isfinite(values)] = 0.0

    def per_cluster(weights=None):
        return np.bincount(lab, weights=weights, minlength=n)

    npix = per_cluster()
    charge = per_cluster(values)
    peak = np.full(n, -np.inf)
    np.maximum.at(peak, lab, values)

    weights = np.clip(values, 0.0, None)
    wsum = per_cluster(weights)
    weights[wsum[lab] <= 0] = 1.0
    wsum = per_cluster(weights)
    xc = per_cluster(weights * xs) / wsum
    yc = per_cluster(weights * ys) / wsum
    dx, dy = xs - xc[lab], ys - yc[lab]
    vxx = per_cluster(weights * dx * dx) / wsum
    vyy = per_cluster(weights * dy * dy) / wsum
    vxy = per_cluster(weights * dx * dy) / wsum
    half_trace, root = (vxx + vyy) / 2, np.hypot((vxx - vyy) / 2, vxy)
    elongation = np.sqrt((half_trace + root + _PIXEL_VARIANCE) / (half_trace - root + _PIXEL_VARIANCE))

    ymin, ymax, xmin, xmax = np.array([(rows.start, rows.stop - 1, cols.start, cols.stop - 1)
                                       for rows, cols in ndimage.find_objects(components)]).T
    height, width = image.shape
    # look at the 8 neighbours of the cluster pixels only: far cheaper than dilating whole class masks
    padded = np.pad(labels, 1)
    near_glow = np.zeros(ys.size, dtype=bool)
    near_hot = np.zeros(ys.size, dtype=bool)
    for row_shift in (0, 1, 2):
        for col_shift in (0, 1, 2):
            neighbour = padded[ys + row_shift, xs + col_shift]
            near_glow |= neighbour == GLOWING
            near_hot |= neighbour == HOT_PIXEL

    columns = {
        "id": np.arange(1, n + 1), "hdu": np.full(n, hdu), "x": xc, "y": yc,
        "xmin": xmin, "xmax": xmax, "ymin": ymin, "ymax": ymax, "npix": npix,
        "charge_adu": charge, "peak_adu": peak,
        "charge_e": charge / gain if gain else np.full(n, np.nan),
        "peak_e": peak / gain if gain else np.full(n, np.nan),
        "mean_prob": (per_cluster(np.asarray(probabilities[CLUSTER], dtype=np.float64)[ys, xs]) / npix
                      if probabilities is not None else np.full(n, np.nan)),
        "sigma_x": np.sqrt(vxx), "sigma_y": np.sqrt(vyy), "elongation": elongation,
        "edge": (xmin == 0) | (ymin == 0) | (xmax == width - 1) | (ymax == height - 1),
        "near_glow": per_cluster(near_glow) > 0, "near_hot": per_cluster(near_hot) > 0,
    }
    columns["energy_ev"] = columns["charge_e"] * ev_per_pair
    return _catalog(columns)


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
    float or None
        Gain in ADU/e-, or None when fewer than two resolved, evenly spaced peaks are found
        (conventional readout, or skipper noise above ~0.3 e-), or when the image holds integers
        and the spacing is below :data:`MIN_INTEGER_GAIN` ADU.
    """
    image = np.asarray(image, dtype=np.float64)
    finite = np.isfinite(image)
    # integer data: a histogram finer than 1 ADU shows the quantisation itself as a comb of peaks
    # 1 ADU apart, so bins are whole ADU centred on the integers (and the pedestal an integer)
    quantised = np.array_equal(image[finite], np.round(image[finite]))
    if pedestal is None:
        pedestal = np.median(image[finite]) if finite.any() else 0.0
    pedestal = _pedestal_array(image, pedestal)
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
    positions = np.array([np.average(centres[w], weights=counts[w]) for w, ok in zip(windows, populated) if ok])
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
    if np.count_nonzero(fit) <= 3 + n_peaks:  # coarse integer bins: too few points to fit the comb
        return float(gain)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optimize.OptimizeWarning)  # the covariance is not used
            params, _ = optimize.curve_fit(_comb, centres[fit], counts[fit], p0=[offset, gain, noise, *heights],
                                           sigma=np.sqrt(counts[fit] + 1.0))
    except RuntimeError:
        return float(gain)
    return float(params[1]) if abs(params[1] / gain - 1) < 0.1 else float(gain)


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


def find_sections(labels, class_id, min_pixels=1, margin=0, connectivity=2):
    """Connected regions of one class, largest first: the bounding boxes to cut out and inspect.

    Parameters
    ----------
    labels : ndarray (H, W) of int
        Segmentation.
    class_id : int or str
        Class to look for, as an id or a name accepted by :func:`ccdseg.classes.class_id`.
    min_pixels : int
        Regions with fewer pixels are skipped.
    margin : int
        Pixels added around every bounding box (clipped to the image), for context around the region.
    connectivity : {1, 2}
        4- or 8-connected regions (default 8).

    Returns
    -------
    list of Section
        ``(ymin, ymax, xmin, xmax, npix)`` with inclusive 0-based bounds, sorted by decreasing ``npix``
        (ties by position); ``npix`` counts the region's own pixels, not the margin.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ConfigError(f"labels must be a 2-D array, got shape {labels.shape}")
    if margin < 0:
        raise ConfigError(f"margin must be >= 0 pixels, got {margin}")
    components, n = ndimage.label(labels == classes.class_id(class_id), structure=_structure(connectivity))
    npix = np.bincount(components.ravel(), minlength=n + 1)[1:]
    height, width = labels.shape
    sections = [Section(max(rows.start - margin, 0), min(rows.stop - 1 + margin, height - 1),
                        max(cols.start - margin, 0), min(cols.stop - 1 + margin, width - 1), int(count))
                for (rows, cols), count in zip(ndimage.find_objects(components), npix) if count >= min_pixels]
    return sorted(sections, key=lambda s: (-s.npix, s.ymin, s.xmin))


def region_file_text(table, color="red"):
    """DS9 region file text with one box (the bounding box) per catalogue row, labelled with its id.

    DS9 image coordinates are 1-based with pixel centres at integers, so the 0-based pixel ``(x, y)``
    is ``(x + 1, y + 1)`` in the file.

    Parameters
    ----------
    table : astropy.table.Table
        Catalogue with ``id``, ``xmin``, ``xmax``, ``ymin``, ``ymax`` (from :func:`find_clusters`).
    color : str
        DS9 colour of the boxes.

    Returns
    -------
    str
        The file contents, ending with a newline.
    """
    lines = ["# Region file format: DS9 version 4.1",
             f'global color={color} font="helvetica 10 normal" select=1 edit=0 move=0 delete=1',
             "image"]
    for row in table:
        xmin, xmax, ymin, ymax = (int(row[k]) for k in ("xmin", "xmax", "ymin", "ymax"))
        lines.append(f"box({(xmin + xmax) / 2 + 1:g},{(ymin + ymax) / 2 + 1:g},{xmax - xmin + 1},"
                     f"{ymax - ymin + 1},0) # text={{{int(row['id'])}}}")
    return "\n".join(lines) + "\n"
