"""The zero of a readout: per-row pedestal plus a baseline along the row, removed before segmentation.

Some electronics (LTA skipper readouts among them) add an offset that changes along the row, the same in
every row: a saw-tooth that jumps and decays every few hundred columns, or steps. It moves the zero of
whole columns without adding charge. Glow, hot columns and dark current are charge: they raise a
column's level *and* its spread (shot noise). So the baseline is taken from the robust medians of the
columns whose spread is that of the readout noise, each column its own (a running median across columns
would cut the top off every jump of a saw-tooth). A column that carries charge in some rows only (corner
glow) takes its baseline from the bands of rows where it is quiet; columns charged all along and stuck
columns without any spread (saturated) get the baseline interpolated from quiet columns beyond as many again
on each side (the faint tail of glow). The excess of both stays in the image to be labelled. A baseline is
removed only where it is significant; otherwise the image is left exactly as it was. The noise of the image is
measured again after it is removed: the saw-tooth had widened it.

Under glow that covers whole columns the baseline of a conventional frame cannot be observed, only
interpolated. A skipper frame that resolves single electrons shows it anyway: every pixel sits on a comb of
whole electrons, and the comb's phase in each column is that column's zero (:func:`comb_offsets`).
"""

import warnings

import numpy as np
from scipy import ndimage

from ccdseg.calib.background import robust_sigma, row_pedestal, sample_rows
from ccdseg.calib.gain import estimate_gain

#: Fewest quiet columns for a baseline; columns within half of it beside a column holding charge (which may
#: hold the faint tail of glow) anchor no interpolation.
BASELINE_WINDOW = 5
#: Pixels this many noise sigmas above their column's median are events, left out of the column statistics.
EVENT_SIGMA = 4.0
#: Rows of a band in which a column holding charge elsewhere may be quiet, and the most bands.
BAND_ROWS, MAX_BANDS = 48, 4
#: Standard errors between a column's highest and lowest band that show charge held in some rows only.
LOCALISED = 6.0
#: Pixels of at most this many electrons place the comb of a skipper frame.
COMB_ELECTRONS = 2


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
        Fewest quiet columns for a baseline; ``window // 2`` columns beside a charged one (at least) anchor
        no interpolation.

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
    error = _median_error(noise, rows)
    quiet = (rows >= 5) & _spread_of_noise(spread, noise, rows)
    # columns beside charge may hold the faint tail of glow: they do not anchor the baseline under it
    anchors = quiet & ~_widened(~quiet, window // 2)
    if np.count_nonzero(anchors) < window:
        return None
    # each quiet column's own median: a running median across columns would cut the top off every jump,
    # and a tail too faint to widen a column is too faint to be labelled glow
    observed = np.where(quiet, medians, _quiet_band_medians(data, valid, medians, quiet, noise))
    seen = np.isfinite(observed)
    known = anchors | (seen & ~quiet)
    columns = np.arange(medians.size)
    baseline = np.where(seen, observed, np.interp(columns, columns[known], observed[known]))
    baseline -= np.median(baseline[anchors])
    if np.max(np.abs(baseline[known])) <= max(5 * np.median(error[anchors]), 0.5 * noise):
        return None
    if _spread_follows_level(medians[anchors], spread[anchors], noise):
        return None
    return baseline


def _quiet_band_medians(data, valid, medians, quiet, noise):
    """Baseline (ADU) of the columns holding charge, from the bands of rows where they are quiet (NaN elsewhere).

    Amplifier glow fills a corner: a column it crosses is quiet in the rows far from that corner, and the
    baseline, the same in every row, shows there. Only columns whose bands differ by far more than their
    errors qualify (charge along the whole column, however faint, leaves no band quiet); each band is aligned
    to the whole columns on the columns quiet throughout, and of a column's bands quiet by their spread, those
    within two standard errors of the lowest are averaged, as charge too faint to widen a band still raises it.
    """
    out = np.full(medians.size, np.nan)
    n_bands = min(MAX_BANDS, data.shape[0] // BAND_ROWS)
    charged = np.flatnonzero(~quiet)
    if n_bands < 2 or charged.size == 0:
        return out
    levels, quiet_bands, errors = [], [], []
    for rows in np.array_split(np.arange(data.shape[0]), n_bands):
        low, middle, high = _column_quantiles(data[rows], valid[rows], (15.87, 50.0, 84.13))
        count = np.maximum(valid[rows].sum(axis=0), 1)
        offset = np.nanmedian(middle[quiet] - medians[quiet])  # the rows' pedestals see the glow in them
        spread = (high - low) / 2
        levels.append((middle - offset)[charged])
        quiet_bands.append(((count >= BAND_ROWS // 2) & _spread_of_noise(spread, noise, count))[charged])
        errors.append(_median_error(np.maximum(spread, noise), count)[charged])
    levels, quiet_bands, errors = np.array(levels), np.array(quiet_bands), np.array(errors)
    values = np.where(quiet_bands, levels, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # columns quiet in no band stay NaN
        lowest = np.nanmin(values, axis=0)
        chosen = np.nanmean(np.where(values <= lowest + 2 * errors, values, np.nan), axis=0)
        localised = np.nanmax(levels, axis=0) - np.nanmin(levels, axis=0) > LOCALISED * np.sqrt(2) * errors.max(axis=0)
    out[charged] = np.where(localised, chosen, np.nan)
    return out


def comb_offsets(residual, gain, *, iterations=3):
    """Offsets (ADU) of the electron comb of every column and of the sampled rows.

    A skipper pixel reads its row's and its column's zero plus a whole number of electrons times the gain,
    so ``exp(2 pi i residual / gain)`` is the product of a row phase and a column phase, however many
    electrons a pixel holds: the zero of a column under glow, where no quiet pixel shows it, is still
    measured. Both phases come from the best rank-one fit of that matrix (alternating projections).

    Parameters
    ----------
    residual : ndarray (H, W)
        Zeroed image (ADU) of a frame whose single-electron peaks are resolved; NaN pixels are ignored.
    gain : float
        Gain (ADU/e-).
    iterations : int
        Alternating projections; three converge for a comb that is clear at all.

    Returns
    -------
    rows : ndarray
        Offset (ADU) of each row of ``sample_rows`` of the image.
    columns : ndarray (W,)
        Offset (ADU) of each column, around a circular mean of zero over the columns.
    """
    data = np.asarray(residual[sample_rows(np.shape(residual))], dtype=np.float64)
    finite = np.isfinite(data)
    phases = np.where(finite, np.exp(2j * np.pi * np.where(finite, data, 0.0) / gain), 0.0)
    rows = np.ones(phases.shape[0], dtype=np.complex128)
    for _ in range(iterations):
        columns = _unit(phases.T @ rows.conj())
        rows = _unit(phases @ columns.conj())
    common = _unit(np.array([columns.sum()]))[0]  # the split of a common phase between rows and columns
    columns, rows = columns * common.conj(), rows * common
    return gain * np.angle(rows) / (2 * np.pi), gain * np.angle(columns) / (2 * np.pi)


def _unit(values):
    """Complex values scaled to modulus one (one where zero)."""
    size = np.abs(values)
    return np.where(size > 0, values / np.where(size > 0, size, 1.0), 1.0)


def _comb_columns(sample, *, iterations=3):
    """Column offsets (ADU) of a zeroed skipper sample of rows from its comb, None where peaks are not resolved.

    The row medians and the baseline under glow smear the peaks of the zeroed block, which biases the
    spacing by several per cent; so the gain is measured again on the sample with every row and column
    on its comb, a few times. The offsets come from the pixels of the first electrons only: a pixel's
    phase error from a wrong gain grows with its electrons. The comb fixes each zero only modulo one
    electron; the whole electrons follow from the 0 e- peak being the lowest one (:func:`_lowest_level`).
    """
    # where the zero under glow smears the comb too much, each column on its own median shows it
    medians = _column_quantiles(sample, np.isfinite(sample), (50.0,))[0]
    estimate = estimate_gain(sample) or estimate_gain(sample - medians)
    for _ in range(iterations):
        if estimate is None:
            return None
        gain = estimate.value
        dim = np.where(np.abs(sample) < (COMB_ELECTRONS + 0.5) * gain, sample, np.nan)
        rows, columns = comb_offsets(dim, gain)
        aligned = sample - rows[:, None] - columns[None, :]
        estimate = estimate_gain(aligned)
    if estimate is None:
        return None
    electrons = aligned / gain
    # whole electrons of the columns and rows in turn; only their sum is fixed, and most columns are right
    shifts = np.zeros(electrons.shape[1])
    for _ in range(3):
        column_shifts = _lowest_level(electrons, axis=0)
        electrons -= column_shifts[None, :]
        shifts += column_shifts
        electrons -= _lowest_level(electrons, axis=1)[:, None]
    return columns + gain * (shifts - np.median(shifts))


def _lowest_level(electrons, axis, *, populated=0.05, empty=0.01):
    """Whole electrons to add to the zero of each line so that its lowest populated peak is 0 e-.

    Charge (dark, glow, events) only adds electrons: a line whose pixels fill a peak below its zero had its
    zero set an electron too high. One whose 0 e- peak is empty while the 1 e- peak is not had it set one
    too low: Poisson charge never leaves the 0 e- peak empty (under 1 %) with 5 % at 1 e-.
    """
    levels = np.round(electrons)
    finite = np.maximum(np.count_nonzero(np.isfinite(electrons), axis=axis), 1)

    def share(level):
        return np.count_nonzero(levels == level, axis=axis) / finite

    shift = np.zeros(finite.shape)
    for _ in range(3):
        below = share(np.expand_dims(shift, axis) - 1) >= populated
        if not below.any():
            break
        shift -= below
    above = (share(0) < empty) & (share(1) >= populated) & (shift == 0)
    return shift + above


def _spread_of_noise(spread, noise, count):
    """Whether spreads of ``count`` pixels each are those of the readout noise alone.

    Charge adds its shot noise: a spread beyond ~3 standard errors of the noise holds charge; and one with no
    spread at all is stuck (saturated, at the ADC limit). Neither shows a baseline.
    """
    return np.abs(spread / noise - 1) <= 3.3 / np.sqrt(np.maximum(count, 1))


def _median_error(sigma, count):
    """Standard error of the median of ``count`` Gaussian values of standard deviation ``sigma``."""
    return 1.2533 * sigma / np.sqrt(np.maximum(count, 1))


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
    the segment's columns only) plus its column baseline (:func:`column_baseline`, where significant),
    refined to each column's electron comb (:func:`comb_offsets`) where single-electron peaks are resolved.

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
        if baseline is not None:
            block -= baseline[None, :]
            # and the row pedestal again: the baseline's zero is arbitrary, the rows' is not
            pedestal = row_pedestal(block, row_window)
            # under glow the baseline was interpolated from quiet columns; a skipper comb measures it there
            rows = sample_rows(block.shape)
            offsets = _comb_columns(block[rows] - pedestal[rows, None])
            if offsets is not None:
                block -= offsets[None, :]
                baseline = baseline + offsets
                pedestal = row_pedestal(block, row_window)
            block -= pedestal[:, None]
            sigma = robust_sigma(block[sample_rows(block.shape)])  # the baseline's swing had widened it
        zeroed[segment.rows, segment.cols] = block
        noise.append(sigma)
        baselines.append(baseline)
    return zeroed, noise, baselines
