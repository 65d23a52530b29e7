"""Consistent objects after the pixel labels: a defect line is a defect all along, a cluster is cluster all over.

The network decides every pixel on its own, so an object can come out in pieces of different classes:
the end of a hot column as *cluster*, a few *hot pixel* pixels on a track, a ring of *glowing* around a
bright cluster. :func:`resolve_objects` looks at the connected pieces and their neighbours and gives each
piece the class of the object it belongs to, by geometry first and the network's probabilities second.
"""

import numpy as np
from scipy import ndimage

from ccdseg.checks import check_image
from ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL
from ccdseg.errors import ConfigError
from ccdseg.measure.sections import component_sums, neighbourhoods

_EIGHT = np.ones((3, 3), bool)


#: A hot piece is part of a cluster it touches when that cluster has at least this many times its pixels.
_HOST_TIMES = 3


def resolve_objects(labels, probabilities=None, *, min_line=3, max_hot_fragment=4, ring=3, halo_share=0.2):
    """Relabel the pieces of objects that the pixel decisions split between classes.

    Three rules, applied in this order:

    1. *A defect line is a defect all along.* A run of hot pixels one pixel wide along a row or column
       (at least ``min_line`` long) takes in the cluster pixels that continue it at either end, when the
       cluster they belong to lies entirely on the line's row or column (the line's profile).
    2. *A cluster has no glow halo.* A glowing piece with at least ``halo_share`` of its pixels within
       ``ring`` pixels of a cluster hugs the cluster: a real glow region is large and smooth and lies mostly
       away from clusters. Its pixels enclosed by the cluster become cluster, the others background or hot
       pixel, whichever the network finds more probable (background without probabilities). Letting the
       network choose cluster there as well lowered the cluster F1 on the benchmark set.
    3. *A cluster has no hot fragments.* A hot piece of at most ``max_hot_fragment`` pixels that touches
       one cluster, at least three times its size, becomes cluster: isolated hot pixels are rare, and one
       landing beside an event rarer than the network splitting an event (a bright core, a faint wing).
       A hot pixel beside a "cluster" of one or two pixels stays: that cluster is more likely its own
       neighbour's noise or a dark electron; so does a piece touching two clusters, which would join
       them. It runs last, so that it also takes the hot pieces the halo rule leaves beside a cluster.

    Parameters
    ----------
    labels : ndarray (H, W) of int
        Class ids (:mod:`ccdseg.classes`).
    probabilities : ndarray (N_CLASSES, H, W), optional
        The network's class probabilities.
    min_line : int
        Shortest hot run (px) that counts as a defect line.
    max_hot_fragment : int
        Largest hot piece (px) that a cluster absorbs.
    ring : int
        Width (px) of the ring around a cluster in which glow is halo.
    halo_share : float
        Share of a glowing piece's pixels in that ring from which the piece is halo, in (0, 1].

    Returns
    -------
    ndarray (H, W) uint8
        The relabelled classes; the input is not modified.
    """
    labels = check_image(labels, "labels").astype(np.uint8, copy=True)
    if probabilities is not None and np.shape(probabilities)[1:] != labels.shape:
        raise ConfigError(f"probabilities must have shape (N_CLASSES, {labels.shape[0]}, {labels.shape[1]}), "
                          f"got {np.shape(probabilities)}")
    if min(min_line, max_hot_fragment, ring) < 1:
        raise ConfigError("min_line, max_hot_fragment and ring must be at least 1")
    if not 0 < halo_share <= 1:
        raise ConfigError(f"halo_share must be in (0, 1], got {halo_share!r}")
    _extend_lines(labels, min_line)
    _remove_halo(labels, probabilities, ring, halo_share)
    _absorb_hot_fragments(labels, max_hot_fragment)
    return labels


def _extend_lines(labels, min_line):
    """Rule 1: cluster pixels that continue a 1-px-wide hot run and lie wholly on its line become hot."""
    clusters, n_clusters = ndimage.label(labels == CLUSTER, structure=_EIGHT)
    cluster_boxes = ndimage.find_objects(clusters, max_label=n_clusters)
    runs, n_runs = ndimage.label(labels == HOT_PIXEL, structure=_EIGHT)
    for box in ndimage.find_objects(runs, max_label=n_runs):
        height, width = box[0].stop - box[0].start, box[1].stop - box[1].start
        if min(height, width) != 1 or max(height, width) < min_line:
            continue
        axis = 0 if width == 1 else 1          # the run lies along this axis
        line = box[1].start if axis == 0 else box[0].start
        for end in (box[axis].start - 1, box[axis].stop):
            pixel = (end, line) if axis == 0 else (line, end)
            if not (0 <= pixel[0] < labels.shape[0] and 0 <= pixel[1] < labels.shape[1]):
                continue
            number = clusters[pixel]
            if number == 0:
                continue
            # within the cluster's box: a search of the whole frame per run end took seconds on a 4096^2 frame
            cluster_box = cluster_boxes[number - 1]
            rows, cols = np.nonzero(clusters[cluster_box] == number)
            rows, cols = rows + cluster_box[0].start, cols + cluster_box[1].start
            on_line = cols if axis == 0 else rows
            if np.all(on_line == line):
                labels[rows, cols] = HOT_PIXEL


def _absorb_hot_fragments(labels, max_hot_fragment):
    """Rule 3: small hot pieces beside one cluster several times their size become cluster."""
    pieces, n = ndimage.label(labels == HOT_PIXEL, structure=_EIGHT)
    if n == 0:
        return
    clusters, n_clusters = ndimage.label(labels == CLUSTER, structure=_EIGHT)
    cluster_size = component_sums(clusters, n_clusters)
    # each piece's cluster neighbours: the piece beside each cluster pixel (pieces are 8-separate, so a pixel
    # beside two pieces is rare and goes to the higher number)
    rows, cols = np.nonzero(clusters)
    beside = neighbourhoods(pieces, rows, cols).max(axis=0)
    border = beside > 0
    pairs = np.unique(np.stack([beside[border], clusters[rows[border], cols[border]]]), axis=1)
    touched = np.bincount(pairs[0], minlength=n + 1)
    host = np.zeros(n + 1, dtype=np.int64)
    host[pairs[0]] = cluster_size[pairs[1]]
    size = component_sums(pieces, n)
    # one neighbour only: a piece between two clusters would join them
    absorb = (touched == 1) & (size <= max_hot_fragment) & (host >= _HOST_TIMES * size)
    absorb[0] = False
    labels[absorb[pieces]] = CLUSTER


def _remove_halo(labels, probabilities, ring, halo_share):
    """Rule 2: glow pieces that hug a cluster become cluster (where enclosed by it), background or hot pixel."""
    cluster = labels == CLUSTER
    pieces, n = ndimage.label(labels == GLOWING, structure=_EIGHT)
    if n == 0 or not cluster.any():
        return
    size = component_sums(pieces, n)
    # the ring around the clusters, needed at glow pixels only: dilated within their box grown by the ring
    rows, cols = (np.flatnonzero(np.any(pieces > 0, axis=axis)) for axis in (1, 0))
    box = (slice(max(rows[0] - ring, 0), rows[-1] + ring + 1), slice(max(cols[0] - ring, 0), cols[-1] + ring + 1))
    near = ndimage.binary_dilation(cluster[box], structure=_EIGHT, iterations=ring)
    halo = np.bincount(pieces[box][near], minlength=n + 1) >= halo_share * size
    halo[0] = False
    if not halo.any():
        return
    where = halo[pieces]
    other = BACKGROUND
    if probabilities is not None:
        more_hot = np.asarray(probabilities[HOT_PIXEL])[where] > np.asarray(probabilities[BACKGROUND])[where]
        other = np.where(more_hot, HOT_PIXEL, BACKGROUND)
    labels[where] = np.where(_enclosed(cluster, *np.nonzero(where)), CLUSTER, other)


def _enclosed(cluster, rows, cols):
    """Whether each pixel ``(rows, cols)`` lies in a hole of the ``cluster`` mask (as ``binary_fill_holes`` fills).

    The rim of a 4-connected hole is part of one 8-connected cluster, and the hole lies within that cluster's
    box: only the clusters whose box holds one of the pixels are filled, each in its box (filling the whole
    frame took most of the halo rule's time on a 4096^2 frame).
    """
    numbers, _ = ndimage.label(cluster, structure=_EIGHT)
    enclosed = np.zeros(rows.size, bool)
    by_row = np.argsort(rows, kind="stable")  # the pixels in a box's rows by bisection: many boxes, many pixels
    sorted_rows = rows[by_row]
    for number, box in enumerate(ndimage.find_objects(numbers), 1):
        first, last = np.searchsorted(sorted_rows, (box[0].start, box[0].stop))
        inside = by_row[first:last]
        inside = inside[(cols[inside] >= box[1].start) & (cols[inside] < box[1].stop)]
        if inside.size:
            own = numbers[box] == number
            holes = ndimage.binary_fill_holes(own) & ~own
            enclosed[inside] |= holes[rows[inside] - box[0].start, cols[inside] - box[1].start]
    return enclosed
