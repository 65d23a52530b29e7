"""The cluster catalogue: one row per connected cluster, with its charge and shape.

Units follow the column names: ``*_adu`` in ADU, ``*_e`` in electrons, ``energy_ev`` in eV, positions and
widths in pixels (0-based, ``x`` = column, ``y`` = row, bounds inclusive). Electron columns carry
``astropy.units.electron``, which the FITS standard lacks: written FITS tables give them ``TUNITn = 'electron'``.
"""

import astropy.units as u
import numpy as np
from astropy.table import Column, Table
from scipy import ndimage

from ccdseg.calib.background import pedestal_array, robust_sigma, sample_rows
from ccdseg.checks import check_image
from ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL
from ccdseg.errors import ConfigError
from ccdseg.measure.kinds import load_kind_model
from ccdseg.measure.particles import PARTICLE_COLUMNS, particle_columns
from ccdseg.measure.sections import neighbourhoods, structure
from ccdseg.measure.split import split_clusters
from ccdseg.sim.config import ClusterConfig

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
    "charge_e": (np.float64, u.electron, "charge (e-); NaN when the gain is unknown"),
    "energy_ev": (np.float64, u.eV, "charge_e times the energy per electron-hole pair; NaN without gain"),
    "peak_e": (np.float64, u.electron, "largest pixel charge (e-); NaN when the gain is unknown"),
    "mean_prob": (np.float64, None, "mean cluster-class probability; NaN without probabilities"),
    "sigma_x": (np.float64, u.pix, "charge-weighted standard deviation along x"),
    "sigma_y": (np.float64, u.pix, "charge-weighted standard deviation along y"),
    "elongation": (np.float64, None, "ratio of principal-axis widths (>= 1)"),
    "edge": (bool, None, "touches the image border: its charge, shape and kind may be incomplete"),
    "near_glow": (bool, None, "a pixel is 8-adjacent to a glowing pixel"),
    "near_hot": (bool, None, "a pixel is 8-adjacent to a hot pixel"),
    "saturated": (bool, None, "a pixel is at the ADC limit or full well (a bleed trail is in the same cluster)"),
    # particle kind, point fit and muon track (ccdseg.measure.particles); NaN where not applicable or without gain
    **{name: (str if name == "kind" else np.float64, unit and u.Unit(unit), description)
       for name, (unit, description) in PARTICLE_COLUMNS.items()},
}

#: Variance of a uniformly lit pixel (px^2); regularises the elongation of one-pixel-wide clusters.
_PIXEL_VARIANCE = 1.0 / 12.0

def _catalog(columns):
    """Table with the schema of :data:`CATALOG_COLUMNS` from a dict of equal-length arrays."""
    table = Table()
    for name, (dtype, unit, description) in CATALOG_COLUMNS.items():
        values = np.asarray(columns[name])
        if dtype is str:
            dtype = f"U{max(values.dtype.itemsize // 4, 1)}"
        table[name] = Column(values.astype(dtype), unit=unit, description=description)
    return table


def saturated_pixels(image, header=None):
    """Pixels at the ADC limit (bool mask), or None when there is no known limit.

    The limit is the header's ``SATURATE`` (ADU), else the largest value of an integer ADC (2**k - 1 ADU,
    8 <= k <= 32) when the image reaches it.
    """
    image = np.asarray(image)
    finite = image[np.isfinite(image)]
    if header is not None and "SATURATE" in header:
        limit = float(header["SATURATE"])
    elif finite.size:
        top = float(finite.max())
        limit = top if top in {2.0 ** k - 1 for k in range(8, 33)} else None
    else:
        limit = None
    return None if limit is None else image >= limit


def find_clusters(image, labels, probabilities=None, gain=None, pedestal=None, hdu="", connectivity=2,
                  ev_per_pair=ClusterConfig.ev_per_pair, saturated=None, particles=True, diffusion=None):
    """Catalogue the connected components of the cluster class, one row per cluster.

    Parameters
    ----------
    image : ndarray (H, W)
        Raw image in ADU. NaN/Inf pixels count as zero charge.
    labels : ndarray (H, W) of int
        Segmentation (class ids of :mod:`ccdseg.classes`); components of ``labels == CLUSTER`` are catalogued.
    probabilities : ndarray (N_CLASSES, H, W) or (H, W), optional
        Class probabilities, or the cluster probability alone; gives ``mean_prob``, the mean cluster
        probability over the cluster's pixels.
    gain : float, optional
        Gain in ADU/e-. Without it the electron and energy columns are NaN (the schema stays the same).
    pedestal : float or ndarray (H,), optional
        Pedestal in ADU, one value or one per row. Default: :func:`ccdseg.calib.background.row_pedestal`.
    hdu : str
        Name of the image extension, copied into every row.
    connectivity : {1, 2}
        Pixels touching by an edge (1) or also by a corner (2, default: a diffused track that steps
        diagonally stays one cluster).
    ev_per_pair : float
        Mean energy per electron-hole pair in eV; default the simulation's (3.77 eV in silicon at ~140 K).
    saturated : ndarray (H, W) of bool, optional
        Pixels at the ADC limit or full well (:func:`saturated_pixels`); gives the ``saturated`` flag.
    particles : bool
        Fill the particle columns (kind, point fit, muon track; :mod:`ccdseg.measure.particles`) when the
        gain is known, after splitting the clusters that hold several events into one row each
        (:func:`ccdseg.measure.split.split_clusters`: a muon and what touches it, touching objects); False
        leaves them empty and the clusters whole (for groups of a few electrons, which have no shape).
    diffusion : (float, float), optional
        A (µm²) and b (1/µm) of the diffusion law that gives ``depth_um``; default DAMIC's.

    Returns
    -------
    astropy.table.Table
        Columns of :data:`CATALOG_COLUMNS`, zero rows when there is no cluster. A component whose total
        charge is not positive holds no charge and is not catalogued. Centroids and widths weight
        each pixel by its positive charge (negative noise pixels get zero weight; a cluster without positive
        charge uses equal weights). ``elongation`` adds the 1/12 px^2 pixel variance to both principal
        variances, so a one-pixel-wide track has a finite elongation.
    """
    image = check_image(image)  # no float64 copy of a whole frame: the cluster pixels are converted below
    labels = check_image(labels, "labels", shape=image.shape)
    if gain is not None and not gain > 0:
        raise ConfigError(f"gain must be positive (ADU/e-), got {gain!r}")
    if probabilities is not None and image.shape not in (np.shape(probabilities)[1:], np.shape(probabilities)):
        raise ConfigError(f"probabilities must have shape (N_CLASSES, {image.shape[0]}, {image.shape[1]}) "
                          f"or {image.shape}, got {np.shape(probabilities)}")
    pedestal = pedestal_array(image, pedestal)

    components, n = ndimage.label(labels == CLUSTER, structure=structure(connectivity))
    charge_image = None
    if gain and particles and n:
        # float32 (a whole frame of it): the splits, fits and shape features convert each cluster's stamp
        charge_image = image - pedestal.astype(np.float32)
        charge_image /= np.float32(gain)
        kind_model = load_kind_model()
        components, n = split_clusters(charge_image, components, n, model=kind_model)
    if n == 0:
        return _catalog({name: np.zeros(0, dtype=str if name in ("hdu", "kind") else float)
                         for name in CATALOG_COLUMNS})
    ys, xs = np.nonzero(components)
    lab = components[ys, xs] - 1
    values = image[ys, xs].astype(np.float64) - pedestal[ys if pedestal.shape[0] > 1 else 0, 0]
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
    neighbours = neighbourhoods(labels, ys, xs)
    near_glow, near_hot = (neighbours == GLOWING).any(axis=0), (neighbours == HOT_PIXEL).any(axis=0)

    columns = {
        "id": np.arange(1, n + 1), "hdu": np.full(n, hdu), "x": xc, "y": yc,
        "xmin": xmin, "xmax": xmax, "ymin": ymin, "ymax": ymax, "npix": npix,
        "charge_adu": charge, "peak_adu": peak,
        "charge_e": charge / gain if gain else np.full(n, np.nan),
        "peak_e": peak / gain if gain else np.full(n, np.nan),
        "mean_prob": (per_cluster(_cluster_plane(probabilities)[ys, xs].astype(np.float64)) / npix
                      if probabilities is not None else np.full(n, np.nan)),
        "sigma_x": np.sqrt(vxx), "sigma_y": np.sqrt(vyy), "elongation": elongation,
        "edge": (xmin == 0) | (ymin == 0) | (xmax == width - 1) | (ymax == height - 1),
        "near_glow": per_cluster(near_glow) > 0, "near_hot": per_cluster(near_hot) > 0,
        "saturated": (per_cluster(np.asarray(saturated, dtype=bool)[ys, xs]) > 0 if saturated is not None
                      else np.zeros(n, dtype=bool)),
    }
    columns["energy_ev"] = columns["charge_e"] * ev_per_pair
    if charge_image is not None:
        rows = sample_rows(image.shape)  # the one row sampler: a noise to a fraction of a per cent, not a full pass
        noise_e = robust_sigma(charge_image[rows][labels[rows] == BACKGROUND])
        columns.update(particle_columns(charge_image, components, n, noise_e=noise_e, ev_per_pair=ev_per_pair,
                                        diffusion=diffusion, kind_model=kind_model))
    else:
        columns.update({name: np.full(n, "" if name == "kind" else np.nan) for name in PARTICLE_COLUMNS})
    charged = charge > 0
    columns = {name: values[charged] for name, values in columns.items()}
    columns["id"] = np.arange(1, np.count_nonzero(charged) + 1)
    return _catalog(columns)


def _cluster_plane(probabilities):
    """The cluster probability (H, W) from all class probabilities or from the plane itself."""
    return probabilities if np.ndim(probabilities) == 2 else probabilities[CLUSTER]
