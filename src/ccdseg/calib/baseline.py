"""The zero of a readout: per-row pedestal plus a baseline along the row, removed before segmentation.

Some electronics (LTA skipper readouts among them) add an offset that changes along the row, the same in
every row: a saw-tooth that jumps and decays every few hundred columns, or steps. It moves the zero of
whole columns without adding charge. Glow, hot columns and dark current are charge: they raise a
column's level *and* its spread (shot noise). So the baseline is taken from the robust medians of the
columns whose spread is that of the readout noise, each column its own (a running median across columns
would cut the top off every jump of a saw-tooth); columns that carry charge (and as many again on each
side, for the faint tail of glow) and stuck columns without any spread (saturated) get the baseline of
their neighbours, and their excess stays in the image to be labelled. A baseline is removed only where it
is significant; otherwise the image is left exactly as it was. The noise of the image is measured again
after it is removed: the saw-tooth had widened it.
"""

import numpy as np
from scipy import ndimage

from ccdseg.calib.background import robust_sigma, row_pedestal, sample_rows

#: Fewest quiet columns for a baseline; columns within half of it beside a column holding charge take their
#: neighbours' baseline.
BASELINE_WINDOW = 5
#: Pixels this many noise sigmas above their column's median are events, left out of the column statistics.
EVENT_SIGMA = 4.0


def column_baseline(residual, noise, *, window=BASELINE_WINDOW):
    """Electronic baseline of every column of a row-pedestal-subtracted image, or None when insignificant.

    Parameters
    ----------
    residual : ndarray (H, W)
        Image minus its per-row pedestal (ADU); NaN pixels (reference columns, overscan) are ignored.
    noise : float
        Noise of one pixel (ADU); the columns' own median spread when smaller (glow inflates the noise of
        the whole image, not that of most columns).
    window : int
        Fewest quiet columns for a baseline; ``window // 2`` columns beside a charged one are left out too.

    Returns
    -------
    ndarray (W,) or None
        Baseline (ADU) to subtract from every row, or None when it stays within the larger of 5 standard
        errors of a column median and half the noise.
    """
    data = np.asarray(residual[sample_rows(np.shape(residual))], dtype=np.float64)
    if noise <= 0 or data.shape[1] < window or not np.isfinite(data).any():
        return None
    valid = np.isfinite(data)
    first = _column_quantiles(data, valid, (50.0,))[0]
    with np.errstate(invalid="ignore"):
        valid &= ~(data > first + EVENT_SIGMA * noise)  # events and other charge: one-sided, above
    low, medians, high = _column_quantiles(data, valid, (15.87, 50.0, 84.13))
    rows = valid.sum(axis=0)
    spread = (high - low) / 2
    noise = min(noise, float(np.nanmedian(spread))) if np.isfinite(spread).any() else noise
    if noise <= 0:
        return None
    # charge adds its shot noise: a column spread beyond ~3 standard errors of the noise holds charge
    error = 1.2533 * noise / np.sqrt(np.maximum(rows, 1))
    # and a column with no spread at all is stuck (saturated, at the ADC limit): neither is a baseline
    quiet = (rows >= 5) & (np.abs(spread / noise - 1) <= 3.3 / np.sqrt(np.maximum(rows, 1)))
    quiet &= ~_widened(~quiet, window // 2)
    if np.count_nonzero(quiet) < window:
        return None
    # each quiet column's own median: a running median across columns would cut the top off every jump
    columns = np.arange(medians.size)
    baseline = np.interp(columns, columns[quiet], medians[quiet])
    baseline -= np.median(baseline[quiet])
    if np.max(np.abs(baseline[quiet])) <= max(5 * np.median(error[quiet]), 0.5 * noise):
        return None
    if _spread_follows_level(medians[quiet], spread[quiet], noise):
        return None
    return baseline


def _spread_follows_level(level, spread, noise):
    """Whether the columns' variance rises with their level, as the shot noise of charge makes it (glow).

    Charge of g e- adds g e-² of variance (gain x level in ADU²); an electronic baseline adds none. Where no
    column of an image is free of glow, the noise measured is already widened and glow passes the spread
    test; its level-variance slope still gives it away.
    """
    level = level - np.median(level)
    if np.ptp(level) <= 0 or level.size < 5:
        return False
    (slope, _), covariance = np.polyfit(level, spread ** 2, 1, cov=True)
    return slope > 5 * np.sqrt(covariance[0, 0]) and slope * np.ptp(level) > 0.25 * noise ** 2


def _widened(charged, margin):
    """``charged`` with every run of columns widened on both sides by its own length (at least ``margin``).

    The faint tail of glow fading away from a readout edge is as long as the part bright enough to see.
    """
    runs, n = ndimage.label(charged)
    wide = charged.copy()
    for run in ndimage.find_objects(runs)[:n]:
        reach = max(run[0].stop - run[0].start, margin)
        wide[max(run[0].start - reach, 0):run[0].stop + reach] = True
    return wide


def _column_quantiles(data, valid, quantiles):
    """Quantiles (per cent) of each column over its ``valid`` pixels, one sort for all (NaN where none)."""
    ordered = np.sort(np.where(valid, data, np.inf), axis=0)
    count = valid.sum(axis=0)
    columns = np.arange(data.shape[1])
    out = []
    for q in quantiles:
        position = np.clip(q / 100 * (count - 1), 0, None)
        below = np.floor(position).astype(int)
        above = np.minimum(below + 1, np.maximum(count - 1, 0))
        fraction = position - below
        with np.errstate(invalid="ignore"):
            value = ordered[below, columns] * (1 - fraction) + ordered[above, columns] * fraction
        out.append(np.where(count > 0, value, np.nan))
    return out


def subtract_zero(image, segments, *, row_window=15):
    """The image minus the zero of every amplifier segment, and the noise of each segment.

    The zero of a segment is its per-row pedestal (:func:`ccdseg.calib.background.row_pedestal`, on
    the segment's columns only) plus its column baseline (:func:`column_baseline`, where significant).

    Parameters
    ----------
    image : ndarray (H, W)
        Image in ADU; NaN pixels stay NaN.
    segments : sequence of ccdseg.calib.amplifiers.Segment
        Regions with their own zero; pixels outside every segment become NaN.
    row_window : int
        Rows of the running median of the row pedestal.

    Returns
    -------
    zeroed : ndarray (H, W) float32
        Charge above the zero (ADU).
    noise : list of float
        Robust noise (ADU) of each zeroed segment.
    baselines : list of ndarray or None
        Column baseline (ADU) removed from each segment, None where none was significant.
    """
    zeroed = np.full(np.shape(image), np.nan, dtype=np.float32)
    noise, baselines = [], []
    for segment in segments:
        block = np.array(image[segment.rows, segment.cols], dtype=np.float32)  # float32: a whole frame of it
        block -= row_pedestal(block, row_window)[:, None]
        sigma = robust_sigma(block[sample_rows(block.shape)])
        baseline = column_baseline(block, sigma)
        if baseline is not None:  # and the row pedestal again: the baseline's zero is arbitrary, the rows' is not
            block -= baseline[None, :]
            block -= row_pedestal(block, row_window)[:, None]
            sigma = robust_sigma(block[sample_rows(block.shape)])  # the baseline's swing had widened it
        zeroed[segment.rows, segment.cols] = block
        noise.append(sigma)
        baselines.append(baseline)
    return zeroed, noise, baselines
