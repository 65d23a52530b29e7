"""Sections of one class: the connected regions of a segmentation to cut out and inspect."""

from collections import namedtuple

import numpy as np
from scipy import ndimage

from ccdseg import classes
from ccdseg.checks import check_image
from ccdseg.errors import ConfigError

Section = namedtuple("Section", "ymin ymax xmin xmax npix")
Section.__doc__ = "Bounding box of a connected region (inclusive pixel bounds, 0-based) and its pixel count."


def structure(connectivity):
    """Neighbourhood of :func:`scipy.ndimage.label`: 1 for 4 neighbours, 2 for 8."""
    if connectivity not in (1, 2):
        raise ConfigError(f"connectivity must be 1 (4 neighbours) or 2 (8 neighbours), got {connectivity!r}")
    return ndimage.generate_binary_structure(2, connectivity)


def touches_edge(box, shape):
    """Whether a box (slices, as from ``ndimage.find_objects``) touches the border of an image of ``shape``."""
    return box[0].start == 0 or box[1].start == 0 or box[0].stop == shape[0] or box[1].stop == shape[1]


def neighbourhoods(image, rows, cols):
    """Values of ``image`` in the 3 x 3 neighbourhood of each pixel ``(rows, cols)``, 0 beyond the border.

    Returns
    -------
    ndarray (9, n)
        One row per position in the 3 x 3 window (the pixel itself included). Looking at the few pixels of
        interest this way is far cheaper than dilating a whole frame.
    """
    padded = np.pad(image, 1)
    return np.stack([padded[rows + row_shift, cols + col_shift] for row_shift in (0, 1, 2) for col_shift in (0, 1, 2)])


def grown(box, margin):
    """The box (a tuple of slices, as from ``ndimage.find_objects``) grown by ``margin`` px on every side.

    Clipped at 0 only: numpy clips a slice's stop to the array itself.
    """
    return tuple(slice(max(side.start - margin, 0), side.stop + margin) for side in box)


def component_sums(components, n, values=None):
    """Pixels (``values`` None) or sum of ``values`` (NaN counted as 0) of each of the components 1 ... ``n``.

    ``np.bincount(components.ravel())`` and :func:`scipy.ndimage.sum_labels` convert every pixel of the
    frame to int64 or float64; this takes the components' pixels only, a small share of a frame.

    Returns
    -------
    ndarray (n + 1,)
        Entry 0 is 0 (the background is no component).
    """
    inside = components > 0
    weights = None if values is None else np.nan_to_num(values[inside])
    return np.bincount(components[inside], weights=weights, minlength=n + 1)


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
    labels = check_image(labels, "labels")
    if margin < 0:
        raise ConfigError(f"margin must be >= 0 pixels, got {margin}")
    components, n = ndimage.label(labels == classes.class_id(class_id), structure=structure(connectivity))
    npix = component_sums(components, n)[1:]
    height, width = labels.shape
    sections = [Section(max(rows.start - margin, 0), min(rows.stop - 1 + margin, height - 1),
                        max(cols.start - margin, 0), min(cols.stop - 1 + margin, width - 1), int(count))
                for (rows, cols), count in zip(ndimage.find_objects(components), npix, strict=True)
                if count >= min_pixels]
    return sorted(sections, key=lambda s: (-s.npix, s.ymin, s.xmin))
