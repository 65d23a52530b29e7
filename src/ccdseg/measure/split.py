"""Split clusters that hold several events: a muon and the worm or X-ray on it, two X-rays that touch.

The pixel labels only say *cluster*; where events touch, the connected cluster holds all of them and its
shape is none of theirs (the kind classifier calls a muon with something on it ``electron``, and touching
points ``electron`` or one big ``point``). :func:`split_clusters` tries two splits and keeps one only when
the classifier reads its pieces as what the split says they are:

- *a straight track*, on clusters read as electrons: the straight band of ``±width`` px holding the most
  of the cluster's pixels (a Hough transform with a band instead of a line), on the ridge where the track
  is wider than the band. A piece off the band stays with the track when it is its diffusion wing: a thin
  strip along it, or without a charge peak above the track's axis beside it, not a track crossing it and
  within ``5 * width`` px of the axis.
  Other pieces make rows of their own; a second track among them (two crossing muons) is taken out the
  same way. Kept when each track reads as a muon and holds a minimum-ionising particle's charge per length,
  and no piece left over reads as a muon too short to be one (a dense blob the band cut).
- *touching objects around their peaks*, on clusters read as electrons or points: the charge, smoothed by
  a 1-px Gaussian, has two or more peaks (local maxima over 5 x 5 px) of at least ``min_peak_e``; a
  watershed (every pixel climbs the smoothed charge to its peak) cuts the cluster between them. Kept when
  every piece reads as a point (touching X-rays), or when one piece reads as a muon with a minimum-ionising
  particle's charge per length and every other as a point or an electron: a steep muon is a short cone,
  wider than the band of the first split, whose smoothed charge peaks once, at its narrow end. Beside
  pieces that read as electrons the muon must read so with a probability of at least 0.95: a worm cut at
  its peaks often has a straight piece that reads as a muon, but less surely.
"""

import numpy as np
from scipy import ndimage

from ccdseg.measure.diffusion import track_axis
from ccdseg.measure.kinds import KINDS, cluster_features, shape_features
from ccdseg.measure.particles import track_measures

#: Directions tried by the band search (degrees apart).
_STEP_DEG = 1.0
_POINT, _ELECTRON, _MUON, _ALPHA = (KINDS.index(kind) for kind in ("point", "electron", "muon", "alpha"))
_EIGHT = np.ones((3, 3), bool)
#: Fewest pixels of each of the touching objects a cluster is split into around its peaks.
_MIN_POINT_PX = 4
#: Least probability of the muon among pieces that read as electrons: the straight pieces of a worm cut at its
#: peaks read as muons with 0.56-0.93 on the rare-kind sets of ``benchmarks/train_kinds.py`` (seed 7), the muons
#: there with 0.99-1.
_MUON_AMONG_ELECTRONS = 0.95


def split_clusters(charge_image, components, n, *, model, min_length=15.0, width=1.5, max_tracks=3,
                   min_dedx_kev_per_um=0.2, min_peak_e=20.0):
    """Split the clusters that hold a straight track and what touches it, or several touching objects.

    Parameters
    ----------
    charge_image : ndarray (H, W)
        Pedestal-subtracted image in electrons (NaN counts as zero).
    components : ndarray (H, W) of int
        Cluster number of each pixel, 1..n, 0 elsewhere.
    n : int
        Number of clusters.
    model : KindModel
        The kind classifier that judges the pieces.
    min_length : float
        Shortest track (px) split off.
    width : float
        Half width (px) of the band that finds a track's axis.
    max_tracks : int
        Straight tracks taken out of one cluster at most.
    min_dedx_kev_per_um : float
        Least energy per µm of 3-D path (through the whole thickness) of a track taken out, by either split: a
        minimum-ionising muon loses most probably ~0.3 keV/µm in silicon, and its Landau distribution falls
        steeply below; the straight stretches of an electron's track that read as muons hold far less.
    min_peak_e : float
        Smallest peak (e-, of the charge smoothed by 1 px) of an object: of each of several touching objects,
        and of what touches a track.

    Returns
    -------
    components : ndarray (H, W) of int
        The clusters numbered 1..m: an unsplit cluster keeps its number, the first piece of a split one
        takes its number and the others new numbers from n + 1 on. The input is not modified.
    m : int
        Number of clusters.
    """
    components = components.copy()
    count = n
    kinds = model.predict_proba(cluster_features(charge_image, components, n)).argmax(axis=1) if n else []
    for index, box in enumerate(ndimage.find_objects(components, max_label=n)):
        if box is None:
            continue
        rows, cols = np.nonzero(components[box] == index + 1)
        if rows.size < 2 * _MIN_POINT_PX:  # too small for two points or a track
            continue
        charge = np.nan_to_num(np.asarray(charge_image[box][rows, cols], dtype=np.float64))
        kind = kinds[index]
        pieces = []
        if kind == _ELECTRON:  # a muon with something on it reads as an electron
            pieces = _split_tracks(charge, rows.astype(float), cols.astype(float), model, min_length, width,
                                   max_tracks, min_dedx_kev_per_um, min_peak_e)
        if not pieces and kind in (_POINT, _ELECTRON):
            pieces = _split_peaks(charge, rows, cols, model, min_peak_e, min_dedx_kev_per_um)
        for piece in pieces[1:]:
            count += 1
            components[box][rows[piece], cols[piece]] = count
    return components, count


def _kind(model, charge, rows, cols):
    return int(_probabilities(model, charge, rows, cols).argmax())


def _probabilities(model, charge, rows, cols):
    return model.predict_proba(shape_features(charge, rows, cols))[0]


def _split_tracks(charge, rows, cols, model, min_length, width, max_tracks, min_dedx, min_peak_e):
    """Index arrays of the pieces, tracks first; empty when no muon-like track comes out."""
    tracks, rest = [], np.arange(charge.size)
    while len(tracks) < max_tracks and rest.size:
        track = _straight_track(charge[rest], rows[rest], cols[rest], min_length, width, min_peak_e)
        if track is None:
            break
        q, r, c = charge[rest][track], rows[rest][track], cols[rest][track]
        if _kind(model, q, r, c) != _MUON or track_measures(q, r, c)[2] < min_dedx:
            break
        tracks.append(rest[track])
        rest = np.setdiff1d(rest, rest[track], assume_unique=True)
    if not tracks:
        return []
    others = []
    for piece in _connected(rest, rows, cols):
        home = _alongside(piece, tracks, charge, rows, cols)
        if home is None:
            others.append(piece)
        else:
            tracks[home] = np.concatenate([tracks[home], piece])
    # a piece left over that reads as a muon but is too short for one is a split gone wrong (a dense blob
    # cut by the band)
    for piece in others:
        if (_kind(model, charge[piece], rows[piece], cols[piece]) == _MUON
                and np.ptp(track_axis(charge[piece], rows[piece], cols[piece])[2]) + 1 < min_length):
            return []
    return tracks + others


def _alongside(piece, tracks, charge, rows, cols):
    """The track a piece runs along (its wing: a thin strip parallel within 10 degrees, inside its length), or None."""
    _, direction, along, across = track_axis(charge[piece], rows[piece], cols[piece])
    if np.ptp(along) < 3 * (np.ptp(across) + 1):
        return None
    for number, track in enumerate(tracks):
        (yc, xc), axis, track_along, _ = track_axis(charge[track], rows[track], cols[track])
        position = (rows[piece] - yc) * axis[0] + (cols[piece] - xc) * axis[1]
        if (abs(direction @ axis) >= np.cos(np.radians(10.0)) and position.min() >= track_along.min() - 1
                and position.max() <= track_along.max() + 1):
            return number
    return None


def _straight_track(charge, rows, cols, min_length, width, min_peak_e):
    """Pixels (indices) of the straight track of a set of pixels, with its wings; None if none is long enough."""
    angles = np.radians(np.arange(0.0, 180.0, _STEP_DEG))
    y, x = rows - rows.mean(), cols - cols.mean()
    # signed distance of each pixel from the line through the centre at each angle, sorted: (angles, pixels)
    offset = -np.sin(angles)[:, None] * x + np.cos(angles)[:, None] * y
    order = np.argsort(offset, axis=1)
    offset = np.take_along_axis(offset, order, axis=1)
    stop = np.stack([np.searchsorted(row, row + 2 * width, side="right") for row in offset])
    inside = stop - np.arange(x.size)
    best_angle = np.unravel_index(np.argmax(inside), inside.shape)[0]
    # across a track wider than the band, many bands are full: the one on the ridge holds the most charge
    total = np.concatenate([[0.0], np.cumsum(np.clip(charge, 0, None)[order[best_angle]])])
    held = np.where(inside[best_angle] >= 0.9 * inside[best_angle].max(),
                    total[stop[best_angle]] - total[:-1], -np.inf)
    angle, centre = angles[best_angle], offset[best_angle, np.argmax(held)] + width
    along = np.cos(angle) * x + np.sin(angle) * y
    run = _longest_run(along, np.abs(-np.sin(angle) * x + np.cos(angle) * y - centre) <= width)
    if run is None or np.ptp(along[run]) + 1 < min_length:
        return None
    core = np.zeros(x.size, bool)
    core[run] = True
    # a piece off the band is another object when it has a peak above the track's axis beside it (or beyond
    # its ends), when it is a track of its own crossing this one, or when it reaches too far from the axis;
    # otherwise it is the track's diffusion wing, its charge falling away from the axis
    r, c = (rows - rows.min()).astype(int), (cols - cols.min()).astype(int)
    off, n_off = ndimage.label(_image(~core, r, c), structure=_EIGHT)
    piece = off[r, c]
    level, peaks = _smoothed_peaks(charge, r, c, min_peak_e)
    foreign = np.zeros(n_off + 1, bool)
    for peak in np.flatnonzero(peaks & ~core):
        beside = core & (np.abs(along - along[peak]) <= 1.5)
        foreign[piece[peak]] |= not beside.any() or level[peak] > level[beside].max()
    direction = np.array([np.sin(angle), np.cos(angle)])
    across = np.abs(-np.sin(angle) * x + np.cos(angle) * y - centre)
    for number in range(1, n_off + 1):
        members = np.flatnonzero(piece == number)
        foreign[number] |= _crossing(charge[members], rows[members], cols[members], direction, min_length / 3)
        # no diffusion wing reaches this far (3 sigma of the widest back-side diffusion, 1.5 px, past the band)
        foreign[number] |= across[members].max() > 5 * width
    return np.flatnonzero(core | ((piece > 0) & ~foreign[piece]))


def _crossing(charge, rows, cols, direction, min_length):
    """Whether a piece is a track (at least ``min_length`` px, twice its width) over 10 degrees off ``direction``."""
    if charge.size < 3:
        return False
    _, axis, along, across = track_axis(charge, rows, cols)
    return bool(np.ptp(along) + 1 >= min_length and np.ptp(along) >= 2 * (np.ptp(across) + 1)
                and abs(axis @ direction) < np.cos(np.radians(10.0)))


def _longest_run(along, band, gap=2.0):
    """Indices of the band's pixels in its longest stretch along the axis without a gap over ``gap`` px."""
    members = np.flatnonzero(band)
    if members.size == 0:
        return None
    order = members[np.argsort(along[members])]
    runs = np.split(order, np.flatnonzero(np.diff(along[order]) > gap) + 1)
    return max(runs, key=lambda run: np.ptp(along[run]))


def _split_peaks(charge, rows, cols, model, min_peak_e, min_dedx):
    """Index arrays of the pieces around the cluster's peaks: points, or one muon with points or electrons; else []."""
    r, c = (rows - rows.min()).astype(int), (cols - cols.min()).astype(int)
    level, peaks = _smoothed_peaks(charge, r, c, min_peak_e)
    if np.count_nonzero(peaks) < 2:
        return []
    owner = _climb(level, r, c, peaks)
    pieces = [np.flatnonzero(owner == k) for k in range(np.count_nonzero(peaks))]
    # a piece of a few pixels is a bump on one point's flank, not a second point
    if any(piece.size < _MIN_POINT_PX for piece in pieces):
        return []
    probabilities = np.array([_probabilities(model, charge[piece], rows[piece], cols[piece]) for piece in pieces])
    kinds = probabilities.argmax(axis=1)
    if np.all(kinds == _POINT):
        return pieces
    muons = np.flatnonzero(kinds == _MUON)
    if muons.size != 1 or np.any(kinds == _ALPHA):
        return []
    muon = pieces[muons[0]]
    if track_measures(charge[muon], rows[muon], cols[muon])[2] < min_dedx:
        return []
    if np.any(kinds == _ELECTRON) and probabilities[muons[0], _MUON] < _MUON_AMONG_ELECTRONS:
        return []
    return pieces


def _climb(level, r, c, peaks):
    """The peak (0, 1, ... in the order of ``peaks``) each pixel reaches by steepest ascent of ``level``.

    Each pixel points to its highest 8-neighbour among the pixels (itself when none is higher), and the
    pointers are followed to their ends: a watershed by hill climbing. An end that is no peak (a bump too
    low, or inside another peak's 5 x 5 px) goes to the nearest peak.
    """
    index = np.full((r.max() + 3, c.max() + 3), -1)
    index[r + 1, c + 1] = np.arange(r.size)
    parent, best = np.arange(r.size), level.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            neighbour = index[r + 1 + dy, c + 1 + dx]
            higher = (neighbour >= 0) & (level[neighbour] > best)
            parent[higher], best[higher] = neighbour[higher], level[neighbour[higher]]
    while not np.array_equal(parent[parent], parent):
        parent = parent[parent]
    peak_of = np.full(r.size, -1)
    peak_of[np.flatnonzero(peaks)] = np.arange(np.count_nonzero(peaks))
    ends = np.unique(parent)
    stray = ends[peak_of[ends] < 0]
    if stray.size:
        distance = np.hypot(r[stray, None] - r[peaks][None], c[stray, None] - c[peaks][None])
        peak_of[stray] = np.argmin(distance, axis=1)
    return peak_of[parent]


def _smoothed_peaks(charge, r, c, min_peak_e):
    """The charge smoothed by a 1-px Gaussian, and whether it peaks there, at each pixel.

    A peak is a maximum over 5 x 5 px of at least ``min_peak_e``; ``r``, ``c`` are pixel positions from 0.
    """
    image = np.zeros((r.max() + 1, c.max() + 1))
    image[r, c] = charge
    smooth = ndimage.gaussian_filter(image, 1.0, mode="constant")
    maxima = smooth == ndimage.maximum_filter(smooth, size=5, mode="constant")
    return smooth[r, c], maxima[r, c] & (smooth[r, c] >= min_peak_e)


def _image(mask, r, c):
    """The pixels of ``mask`` drawn into the box of the pixel positions ``r``, ``c`` (from 0)."""
    image = np.zeros((r.max() + 1, c.max() + 1), bool)
    image[r[mask], c[mask]] = True
    return image


def _connected(indices, rows, cols):
    """The 8-connected pieces (index arrays) of a set of pixels."""
    if indices.size == 0:
        return []
    r, c = (rows[indices] - rows[indices].min()).astype(int), (cols[indices] - cols[indices].min()).astype(int)
    pieces, count = ndimage.label(_image(np.ones(indices.size, bool), r, c), structure=_EIGHT)
    number = pieces[r, c]
    return [indices[number == k] for k in range(1, count + 1)]
