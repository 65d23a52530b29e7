"""The detector's own signals: dark current, glow, hot pixels/columns/rows/streaks, bleeding, CTI.

All maps are expected charge in electrons per pixel (the simulator draws Poisson electrons
from them), so the labels can be decided from the expectation, not from a noisy draw.
"""

import numpy as np


def dark_current_map(shape, detector):
    """Expected dark + spurious charge (e-/pix), with the readout ramp.

    A pixel read later integrates longer: exposure = t_exp + t_row·(y + x/ncols) (SENSEI rate model);
    ``dark_column_ramp_e`` adds a linear rise across the columns (charge collected while waiting in
    the serial register).
    """
    rows = np.arange(shape[0], dtype=np.float64)[:, None]
    cols = np.arange(shape[1], dtype=np.float64)[None, :]
    seconds = detector.exposure_s + detector.row_readout_s * (rows + cols / shape[1])
    seconds = np.broadcast_to(seconds, shape)
    column_ramp = detector.dark_column_ramp_e * cols / max(shape[1] - 1, 1)
    return detector.dark_current_e_per_day / 86400.0 * seconds + detector.spurious_charge_e + column_ramp


def _log_uniform(rng, low, high, size=None):
    return np.exp(rng.uniform(np.log(low), np.log(high), size))


def glow_map(shape, glow, rng):
    """Expected glow excess (e-/pix): amplifier light falling off from a readout corner or edge.

    Shapes: ``corner`` (A·exp(-r/L) from one corner), ``edge`` (A·exp(-d/L) from the left or
    right readout edge) and ``band`` (the thesis's constant band of columns at an edge).
    Warm columns (one or two at the readout edge) are added to corner and edge glow.
    """
    excess = np.zeros(shape)
    if rng.random() >= glow.probability:
        return excess
    shape_name = glow.shapes[rng.integers(len(glow.shapes))]
    amplitude = _log_uniform(rng, *glow.amplitude_e) if glow.amplitude_e[0] > 0 else rng.uniform(*glow.amplitude_e)
    right = rng.random() < 0.5
    cols = np.arange(shape[1], dtype=np.float64)
    edge_distance = (shape[1] - 1 - cols) if right else cols
    if shape_name == "band":
        width = rng.integers(glow.band_columns[0], glow.band_columns[1] + 1)
        excess[:, edge_distance < width] = amplitude
        return excess
    length = rng.uniform(*glow.length_px)
    if shape_name == "edge":
        excess += amplitude * np.exp(-edge_distance / length)[None, :]
    else:
        top = rng.random() < 0.5
        rows = np.arange(shape[0], dtype=np.float64)
        row_distance = (shape[0] - 1 - rows) if top else rows
        excess += amplitude * np.exp(-np.hypot(row_distance[:, None], edge_distance[None, :]) / length)
    n_warm = rng.integers(glow.warm_columns[0], glow.warm_columns[1] + 1)
    if n_warm:
        excess[:, edge_distance < n_warm] += amplitude * rng.uniform(0.2, 1.0)
    return excess


def hot_pixel_map(shape, hot, rng):
    """Expected excess charge of defects (e-/pix): single pixels, columns, rows, one-row streaks.

    A partial hot column runs from its defect to one end of the column (charge dragged along
    by the transfer); a partial row likewise. Zero outside the defects.
    """
    height, width = shape
    excess = np.zeros(shape)
    mpix = height * width / 1e6

    def amplitude(size=None):
        return _log_uniform(rng, *hot.amplitude_e, size)

    n_pixels = rng.poisson(rng.uniform(*hot.pixels_per_mpix) * mpix)
    flat = rng.integers(0, height * width, n_pixels)
    excess.flat[flat] = np.maximum(excess.flat[flat], amplitude(n_pixels))
    for axis, (low, high) in ((1, hot.columns), (0, hot.rows)):
        along, across = shape[1 - axis], shape[axis]
        for _ in range(rng.integers(low, high + 1)):
            line = rng.integers(across)
            start, stop = 0, along
            if rng.random() < hot.partial_fraction:
                cut = rng.integers(1, along) if along > 1 else 0
                start, stop = (cut, along) if rng.random() < 0.5 else (0, cut)
            index = (slice(start, stop), line) if axis == 1 else (line, slice(start, stop))
            excess[index] = np.maximum(excess[index], amplitude())
    n_streaks = rng.poisson(rng.uniform(*hot.streaks_per_mpix) * mpix)
    for _ in range(n_streaks):
        length = rng.integers(hot.streak_length_px[0], hot.streak_length_px[1] + 1)
        row, col = rng.integers(height), rng.integers(width)
        segment = (row, slice(col, min(col + length, width)))
        excess[segment] = np.maximum(excess[segment], amplitude())
    return excess


def bleed(charge, full_well_e):
    """Spill charge above the full well along its column, half up and half down, until none is left.

    Returns the new charge image; charge leaving the top or bottom of the image is lost, as
    it is in the serial register's overflow. Only columns that saturate are touched.
    """
    charge = charge.copy()
    columns = np.flatnonzero((charge > full_well_e).any(axis=0))
    if columns.size == 0:
        return charge
    sub = charge[:, columns]
    while True:
        excess = np.maximum(sub - full_well_e, 0.0)
        # stop at a thousandth of an electron: rounding can bounce ulp-sized excess forever
        if excess.max() <= 1e-3:
            break
        sub -= excess
        sub[1:] += excess[:-1] / 2
        sub[:-1] += excess[1:] / 2
    charge[:, columns] = sub
    return charge


def transfer_trail(charge, cti):
    """Charge transfer inefficiency: a pixel moved n times leaves n·cti of its charge one row behind.

    Rows are read towards row 0 and columns towards column 0, so a pixel at (y, x) makes
    y + x transfers; the deferred charge appears in the next row read after it.
    """
    if cti == 0:
        return charge
    rows, cols = np.indices(charge.shape)
    deferred = charge * np.minimum(cti * (rows + cols), 1.0)
    trailed = charge - deferred
    trailed[1:] += deferred[:-1]
    return trailed
