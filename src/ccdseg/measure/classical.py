"""The collaborations' classical recipe, as a baseline labelling with the network's class ids.

Pedestal subtraction row by row, a robust noise estimate, hot lines and glow from column and
row statistics, then clusters by seed-and-grow thresholds (DAMIC-M: pixels above 3σ around a
seed above 4σ; SENSEI/CONNIE: diagonal neighbours count). See ``physics.md``, "How clusters
are found today".
"""

import warnings

import numpy as np
from scipy import ndimage

from ccdseg.calib.background import robust_sigma, row_pedestal, sample_rows
from ccdseg.checks import check_image
from ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL
from ccdseg.measure.sections import component_sums

#: Residuals are clipped at this many σ before the glow profile is averaged, so that a few
#: bright cluster pixels cannot fake glow while sparse single electrons (skipper) still count.
_GLOW_CLIP_SIGMA = 3.0


def segment_classical(image, seed_sigma=4.0, grow_sigma=3.0, hot_sigma=4.0, glow_sigma=4.0,
                      min_cluster_pixels=1, noise=None, hot_mask=None, line_block=64,
                      glow_block=16, baseline_window=31):
    """Label an image pixel by pixel with thresholds, as the collaborations' reconstruction does.

    Steps, all in units of the noise σ so that ADU and electron images behave the same:

    1. Pedestal: :func:`~ccdseg.calib.background.row_pedestal` is subtracted; σ is the robust
       (MAD) noise of the residual unless ``noise`` is given. Non-finite pixels are left
       out of every statistic and labelled background.
    2. Hot columns and rows: the median of each column is taken in blocks of ``line_block``
       rows and compared with a running median of the ``baseline_window`` neighbouring
       columns (which follows smooth glow but not a one-pixel-wide line). A block whose
       excess exceeds ``hot_sigma`` times the scatter of that excess over all columns is hot
       (partial hot columns, at block resolution) unless a neighbouring column is too, as
       along a track that runs down a column; the whole column is hot if the median of
       its block excesses does (faint full-length lines; a line raised along more than half
       its length is flagged along all of it). Rows are treated the same way. On pure noise
       about ``2 * n_blocks * n_lines * P(z > hot_sigma)`` blocks are falsely flagged
       (≈ 16 blocks of 64 px in a 4k × 4k frame at 4σ).
    3. Glow: the residual, clipped at ±3σ, is averaged over blocks of ``glow_block`` rows
       for each column. Starting at the left and at the right image edge, columns whose mean
       excess is above ``glow_sigma`` times its scatter form the glowing region of that
       block of rows, up to the first column that is not (hot columns do not break the run,
       so warm columns at the readout edge join the glow). Glow is thus excess charge
       attached to an edge, fading into the interior, at a per-pixel level of about
       ``glow_sigma / sqrt(glow_block)`` σ. Glow that varies only from row to row is
       absorbed by the row pedestal and is not labelled.
    4. Clusters: pixels above ``grow_sigma`` connected (8 neighbours) to a seed above
       ``seed_sigma``, with at least ``min_cluster_pixels`` pixels. Hot and glowing pixels
       can neither seed nor grow a cluster, as the collaborations mask them: an event on a
       masked line or in the glow is lost, and a track crossing a hot column is split.

    A single hot pixel looks like a one-pixel cluster in a single image, so it is labelled
    CLUSTER; pass a calibration defect map as ``hot_mask`` (hot pixels are found from many
    images, as in practice) to label known defects HOT_PIXEL. In skipper images with
    sub-electron noise every single electron (dark current) passes the seed threshold and
    becomes a one-pixel cluster; ``min_cluster_pixels=2`` leaves these out.

    Parameters
    ----------
    image : ndarray (H, W)
        Image in ADU or electrons, pedestal included.
    seed_sigma, grow_sigma : float
        Seed and growth thresholds in units of σ (``grow_sigma <= seed_sigma``).
    hot_sigma : float
        Significance of a hot line relative to the scatter of the line statistic.
    glow_sigma : float
        Significance of the glow excess of a column in a block of rows.
    min_cluster_pixels : int
        Smallest cluster kept (px).
    noise : float, optional
        Pixel noise σ in the unit of ``image``; estimated from the image if None.
    hot_mask : ndarray (H, W) of bool, optional
        Known defects (from calibration), labelled HOT_PIXEL.
    line_block, glow_block : int
        Rows (columns, for hot rows) per block of the hot-line and glow statistics (px).
    baseline_window : int
        Columns (rows) of the running median that the hot-line excess is measured against (px).

    Returns
    -------
    ndarray (H, W), uint8
        Class ids: BACKGROUND, GLOWING, HOT_PIXEL, CLUSTER.
    """
    image = check_image(image)
    if grow_sigma > seed_sigma:
        raise ValueError(f"grow_sigma ({grow_sigma}) must not exceed seed_sigma ({seed_sigma})")
    finite = np.isfinite(image)
    all_finite = bool(finite.all())
    residual = np.asarray(image, dtype=np.float32) - row_pedestal(image).astype(np.float32)[:, None]
    if not all_finite:
        residual[~finite] = np.nan
    sigma = _noise(residual) if noise is None else float(noise)
    if not sigma > 0:
        return np.zeros(image.shape, dtype=np.uint8)

    hot = _hot_lines(residual, hot_sigma, line_block, baseline_window, all_finite)
    hot |= _hot_lines(residual.T, hot_sigma, line_block, baseline_window, all_finite).T
    glow = _glow(residual / sigma, hot, glow_sigma, glow_block)
    hot &= ~glow
    if hot_mask is not None:
        hot |= np.asarray(hot_mask, dtype=bool) & ~glow

    free = ~(hot | glow)
    if not all_finite:
        free &= finite
        residual[~finite] = 0.0
    grow = (residual > grow_sigma * sigma) & free
    seeds = (residual > seed_sigma * sigma) & free
    components, n = ndimage.label(grow, structure=np.ones((3, 3), dtype=bool))
    keep = np.zeros(n + 1, dtype=bool)
    keep[components[seeds]] = True
    if min_cluster_pixels > 1:
        keep &= component_sums(components, n) >= min_cluster_pixels
    keep[0] = False

    labels = np.full(image.shape, BACKGROUND, dtype=np.uint8)
    labels[glow] = GLOWING
    labels[hot] = HOT_PIXEL
    labels[keep[components]] = CLUSTER
    return labels


def _noise(residual):
    """Robust σ of the residual from a subsample of rows (the full-frame MAD costs ~1 s)."""
    return robust_sigma(residual[sample_rows(residual.shape)])


def _blocks(n, block):
    """Block boundaries along an axis of length n: blocks of ``block``, the last one larger."""
    count = max(1, n // max(1, block))
    edges = np.arange(count + 1) * (n // count)
    edges[-1] = n
    return edges


def _reduce_row_blocks(values, edges, reduce):
    """Apply ``reduce(array, axis=1)`` to blocks of rows; returns (n_blocks, W)."""
    size = edges[1] - edges[0]
    main = edges[-2]
    parts = []
    if main > 0:
        parts.append(reduce(values[:main].reshape(-1, size, values.shape[1]), axis=1))
    parts.append(reduce(values[main:], axis=0)[None])
    return np.concatenate(parts)


def _significant(excess, threshold_sigma):
    """Entries of each row of ``excess`` above ``threshold_sigma`` times that row's robust scatter.

    Each block of lines gets its own scatter: a block crossing a steep glow profile has
    noisier medians than a flat one.
    """
    excess = np.atleast_2d(excess)
    scatter = np.array([robust_sigma(row) for row in excess])[:, None]
    with np.errstate(invalid="ignore"):
        return (excess > threshold_sigma * scatter) & (scatter > 0)


def _hot_lines(residual, hot_sigma, block, window, all_finite):
    """Pixel mask of hot columns (whole or in blocks of rows) of the residual."""
    median = np.median if all_finite else np.nanmedian
    edges = _blocks(residual.shape[0], block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # blocks with no finite pixel give nan
        medians = _reduce_row_blocks(residual, edges, median)
    medians = np.where(np.isnan(medians), 0.0, medians)
    # the baseline leaves the column itself out: a hot line cannot raise its own baseline,
    # and the excess has no spike at exactly 0 that would shrink its robust scatter
    half = int(min(window, 2 * medians.shape[1] - 1)) // 2
    footprint = np.ones((1, 2 * half + 1), dtype=bool)
    footprint[0, half] = False
    excess = medians - ndimage.median_filter(medians, footprint=footprint, mode="mirror")
    hot_blocks = _significant(excess, hot_sigma)
    # a track running along a column raises two or three neighbouring columns of a block
    # (diffusion), a defect only its own: partial lines must stand alone
    neighbours = np.zeros_like(hot_blocks)
    neighbours[:, 1:] |= hot_blocks[:, :-1]
    neighbours[:, :-1] |= hot_blocks[:, 1:]
    hot_blocks &= ~neighbours
    hot_blocks |= _significant(np.median(excess, axis=0), hot_sigma)
    return np.repeat(hot_blocks, np.diff(edges), axis=0)


def _glow(z, hot, glow_sigma, block):
    """Pixel mask of glow attached to the left or right edge; ``z`` is the residual in σ."""
    valid = ~hot & np.isfinite(z)
    clipped = np.where(valid, np.clip(z, -_GLOW_CLIP_SIGMA, _GLOW_CLIP_SIGMA), 0.0)
    edges = _blocks(z.shape[0], block)
    counts = _reduce_row_blocks(valid, edges, np.count_nonzero)
    with np.errstate(all="ignore"):
        means = _reduce_row_blocks(clipped, edges, np.sum) / counts
    hot_columns = counts == 0
    scatter = robust_sigma(means)
    if not scatter > 0:
        return np.zeros(z.shape, dtype=bool)
    with np.errstate(invalid="ignore"):
        bright = means > glow_sigma * scatter
    passable = bright | hot_columns
    columns = np.arange(z.shape[1])
    glow_blocks = np.zeros(means.shape, dtype=bool)
    for flip in (False, True):
        side = passable[:, ::-1] if flip else passable
        run = np.where(side.all(axis=1), side.shape[1], np.argmin(side, axis=1))
        inside = columns[None, :] < run[:, None]
        inside = inside[:, ::-1] if flip else inside
        # a run of hot columns alone is not glow
        glow_blocks |= inside & (inside & bright).any(axis=1)[:, None]
    return np.repeat(glow_blocks, np.diff(edges), axis=0)
