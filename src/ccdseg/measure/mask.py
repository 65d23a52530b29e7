"""The analysis mask of a dark-matter search: a uint16 bitmask of everything that is not quiet background.

One bit per reason (:data:`MASK_BITS`), so an analysis can drop any of them. A pixel is *exposed*
when no bit is set; there the single electrons and the 2-4 e- events are counted
(:mod:`ccdseg.measure.summary`). The bits follow the masks of SENSEI (Barak et al., PRL 125, 171802
(2020)) and DAMIC-M (Arnquist et al., PRL 130, 171003 (2023)): charge that leaks around a cluster
(halo), bleeds along its column, and is mirrored by cross-talk into the other amplifiers; defects
(hot pixels, hot columns, run-level defects); the serial register; glow; the edges.
"""

from dataclasses import dataclass

import numpy as np
from astropy.io import fits
from scipy import ndimage

from ccdseg.calib.background import MAD_TO_SIGMA
from ccdseg.checks import check_image
from ccdseg.classes import CLUSTER, GLOWING, HOT_PIXEL
from ccdseg.errors import ConfigError
from ccdseg.measure.sections import component_sums, grown, structure

#: bit -> (name, description). The header of a MASK extension names every bit (``MASKBn = name``).
MASK_BITS = {
    0: ("cluster", "pixel of a cluster (segmentation)"),
    1: ("halo", "near a cluster; radius grows with its charge"),
    2: ("bleed", "column near a pixel above the bleed charge"),
    3: ("hot_pixel", "hot pixel (segmentation)"),
    4: ("hot_column", "column with more charge than the others"),
    5: ("serial", "row of a one-row streak (serial register)"),
    6: ("glow", "glowing pixel (segmentation)"),
    7: ("edge", "image border, prescan or overscan"),
    8: ("crosstalk", "mirror of a bright pixel in another amplifier"),
    9: ("run_defect", "defect of the run-level defect map"),
}
#: name -> bit value (1 << bit).
BIT = {name: 1 << bit for bit, (name, _) in MASK_BITS.items()}


@dataclass(frozen=True)
class MaskOptions:
    """How far each reason reaches.

    Attributes
    ----------
    halo_px : float
        Halo radius of a 1 e- cluster (px).
    halo_px_per_decade : float
        Halo radius added per decade of cluster charge (px): a 10 keV cluster (2650 e-) gets
        ``halo_px + 3.4 * halo_px_per_decade``.
    bleed_e : float
        Pixel charge (e-) from which its column is masked ``bleed_px`` rows up and down.
    bleed_px : int
        Rows masked on each side of such a pixel.
    hot_column_sigma : float
        A column is hot when its mean quiet-pixel charge exceeds the median column by this many
        robust standard deviations of the column means.
    hot_column_share : float
        ... or when this share of its pixels is labelled hot pixel.
    serial_min_px : int
        A component of hot or cluster pixels one row high and at least this long is a serial-register event.
    edge_px : int
        Border of every amplifier segment that is masked (px).
    crosstalk_e : float
        Pixel charge (e-) whose mirror in the other amplifier segments is masked (with its 8 neighbours).
    """

    halo_px: float = 1.0
    halo_px_per_decade: float = 1.5
    bleed_e: float = 1000.0
    bleed_px: int = 20
    hot_column_sigma: float = 5.0
    hot_column_share: float = 0.3
    serial_min_px: int = 4
    edge_px: int = 1
    crosstalk_e: float = 700.0

    def __post_init__(self):
        for name in ("halo_px", "halo_px_per_decade", "bleed_e", "bleed_px", "hot_column_sigma", "edge_px",
                     "crosstalk_e"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"mask option {name} must be >= 0, got {getattr(self, name)!r}")
        if not 0 < self.hot_column_share <= 1:
            raise ConfigError(f"mask option hot_column_share must be in (0, 1], got {self.hot_column_share!r}")
        if self.serial_min_px < 2:
            raise ConfigError(f"mask option serial_min_px must be >= 2, got {self.serial_min_px!r}")


def mask_hdu(mask, name="MASK", header=None):
    """A uint16 image extension of ``mask`` whose header names every bit (``MASKBn = name``)."""
    hdu = fits.ImageHDU(np.asarray(mask, np.uint16), header=header, name=name)
    for bit, (bit_name, description) in MASK_BITS.items():
        hdu.header[f"MASKB{bit}"] = (bit_name, description)
    return hdu


def build_mask(electrons, labels, *, options=None, segments=None, run_defects=None, low_energy_e=None):
    """The analysis bitmask of one image.

    Parameters
    ----------
    electrons : ndarray (H, W)
        Pedestal-subtracted charge (e-); NaN outside the data section (masked ``edge``).
    labels : ndarray (H, W) of int
        Segmentation (class ids of :mod:`ccdseg.classes`).
    options : MaskOptions, optional
    segments : list of (slice, slice), optional
        Amplifier segments of a multi-amplifier frame (rows, columns), each in its readout order:
        a slice with step -1 is read from its far end, so cross-talk lands at the same readout index of
        every segment. Default one segment, the whole image (no cross-talk).
    run_defects : ndarray (H, W) of bool, optional
        Defects of the run (:func:`ccdseg.measure.run_mask.build_run_mask`).
    low_energy_e : float, optional
        In a frame resolving electrons, clusters holding at most this charge (e-) stay exposed: single dark
        electrons and the low-energy events are what a search counts there. Default: every cluster is masked.

    Returns
    -------
    ndarray (H, W) uint16
        OR of :data:`BIT` values; 0 where the pixel is exposed.
    """
    electrons = check_image(electrons, "electrons")
    labels = check_image(labels, "labels", shape=electrons.shape)
    options = options or MaskOptions()
    segments = segments or [(slice(None), slice(None))]
    # NaN (outside the data section) compares False and sums as 0: the charge needs no copy of the frame
    mask = np.zeros(electrons.shape, np.uint16)

    cluster = labels == CLUSTER
    if low_energy_e is not None:
        components, n = ndimage.label(cluster, structure=structure(2))
        cluster &= (component_sums(components, n, electrons) > low_energy_e)[components]
        del components
    mask[cluster] |= BIT["cluster"]
    mask[halo(electrons, cluster, options)] |= BIT["halo"]
    bright = electrons >= options.bleed_e
    if bright.any():
        mask[ndimage.maximum_filter1d(bright, 2 * options.bleed_px + 1, axis=0)] |= BIT["bleed"]
    serial = serial_rows(labels, segments, options.serial_min_px)
    mask[serial] |= BIT["serial"]
    columns = hot_columns(electrons, labels, mask != 0, options)
    mask[:, columns] |= BIT["hot_column"]
    mask[(labels == HOT_PIXEL) & ~serial & ~columns[None, :]] |= BIT["hot_pixel"]
    mask[labels == GLOWING] |= BIT["glow"]
    mask[edges(electrons, segments, options.edge_px)] |= BIT["edge"]
    mask[crosstalk(electrons, segments, options.crosstalk_e)] |= BIT["crosstalk"]
    if run_defects is not None:
        mask[check_image(run_defects, "run_defects", shape=electrons.shape) != 0] |= BIT["run_defect"]
    return mask


def halo(charge, cluster, options):
    """Pixels within ``halo_px + halo_px_per_decade * log10(charge)`` of each cluster (outside it)."""
    components, n = ndimage.label(cluster, structure=structure(2))
    result = np.zeros(cluster.shape, bool)
    if n == 0:
        return result
    total = component_sums(components, n, charge)[1:]
    radius = np.round(options.halo_px + options.halo_px_per_decade * np.log10(np.maximum(total, 1.0))).astype(int)
    disks = {r: np.add.outer(np.arange(-r, r + 1) ** 2, np.arange(-r, r + 1) ** 2) <= r * r
             for r in np.unique(radius) if r >= 1}
    # each cluster dilated in its own box: the cost follows the clusters, not the frame
    for number, (box, r) in enumerate(zip(ndimage.find_objects(components), radius, strict=True), start=1):
        if r < 1:
            continue
        window = grown(box, r)
        result[window] |= ndimage.binary_dilation(components[window] == number, structure=disks[r])
    return result & ~cluster


def serial_rows(labels, segments, min_px):
    """Row segments (within their amplifier) holding a one-row streak of hot or cluster pixels."""
    components, _ = ndimage.label((labels == HOT_PIXEL) | (labels == CLUSTER), structure=structure(2))
    is_streak = np.array([False] + [rows.stop - rows.start == 1 and cols.stop - cols.start >= min_px
                                    for rows, cols in ndimage.find_objects(components)])
    streaks = is_streak[components]
    result = np.zeros(labels.shape, bool)
    for segment in segments:
        view = result[segment]  # a view: setting its rows sets the result's
        view[streaks[segment].any(axis=1)] = True
    return result


def hot_columns(charge, labels, masked, options):
    """Columns whose quiet pixels hold more charge than the frame's columns, or that are mostly hot pixels."""
    quiet = ~masked & (labels != HOT_PIXEL) & (labels != CLUSTER) & np.isfinite(charge)
    counts = quiet.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(quiet, charge, 0).sum(axis=0, dtype=np.float64) / counts
    valid = counts > 0
    result = (labels == HOT_PIXEL).mean(axis=0) >= options.hot_column_share
    if valid.sum() < 3:
        return result
    centre = np.median(means[valid])
    spread = MAD_TO_SIGMA * np.median(np.abs(means[valid] - centre))
    # a column of Poisson pixels: the spread of a column mean is sqrt(dark / rows) even when the MAD is 0,
    # and at least that of one electron, so that a few stray electrons in an empty frame make no hot column
    rows = np.median(counts[valid])
    spread = max(spread, np.sqrt(max(centre, 1.0 / rows) / rows))
    return result | (valid & (means > centre + options.hot_column_sigma * spread))


def edges(electrons, segments, edge_px):
    """Non-finite pixels (outside the data section) and a border of ``edge_px`` pixels of each segment."""
    result = ~np.isfinite(electrons)
    if edge_px == 0:
        return result
    for segment in segments:
        view = result[segment]
        view[:edge_px] = True
        view[-edge_px:] = True
        view[:, :edge_px] = True
        view[:, -edge_px:] = True
    return result


def crosstalk(charge, segments, threshold_e):
    """Mirrors of the pixels above ``threshold_e`` in every other amplifier segment, with their 8 neighbours."""
    result = np.zeros(charge.shape, bool)
    if len(segments) < 2:
        return result
    views = [charge[segment] for segment in segments]
    if len({view.shape for view in views}) != 1:
        raise ConfigError("amplifier segments must all have the same shape for the cross-talk mask")
    for source, view in enumerate(views):
        bright = view >= threshold_e
        if not bright.any():
            continue
        bright = ndimage.binary_dilation(bright, structure=structure(2))
        for target, segment in enumerate(segments):
            if target != source:
                out = result[segment]
                out |= bright
    return result
