"""Pixel values in electrons: the pedestal of a skipper image found on its comb of electron peaks.

A row median lands on the 0 e- peak in some rows and on the 1 e- peak in others once the dark
charge approaches 1 e-/pix, so it cannot be the pedestal of a charge count. In a frame that resolves
electrons every pixel is a whole number of electrons plus a small noise, so the fractional part of
``(adu - pedestal) / gain`` measures the pedestal modulo one electron without knowing the charges; the
whole electrons are then fixed by putting each row's lowest well-populated peak at 0 e-.
"""

import numpy as np

from ccdseg.calib.background import row_bands, row_pedestal

#: Noise (e-) below which the peaks are resolved enough to count electrons pixel by pixel.
RESOLVED_NOISE_E = 0.3
#: Share of a row's pixels that makes its lowest peak the 0 e- peak (the 0 e- peak holds e^-dark of them).
_ZERO_PEAK_SHARE = 0.05


def to_electrons(image, gain, *, window=15):
    """Pedestal-subtracted image in electrons, and whether it resolves single electrons.

    Parameters
    ----------
    image : ndarray (H, W)
        Raw image in ADU; NaN pixels stay NaN.
    gain : float
        Gain in ADU/e-.
    window : int
        Rows of the running median that smooths the per-row pedestal (rows).

    Returns
    -------
    electrons : ndarray (H, W) float32
        Charge per pixel (e-), in the precision of the image read from a FITS file. For a resolving
        frame the 0 e- peak of every row sits at 0.
    resolved : bool
        The noise is below :data:`RESOLVED_NOISE_E`, so rounding gives each pixel's electrons.
    """
    electrons = np.array(image, dtype=np.float32)  # a copy: the input is never changed
    electrons -= row_pedestal(electrons, window)[:, None]
    electrons /= gain
    # whole electrons do not change the phase 2 pi e; its spread is the noise, its mean the sub-electron offset
    row_phase, finite_rows = _row_phases(electrons)
    total = row_phase.sum()
    resultant = np.abs(total) / max(finite_rows.sum(), 1)
    noise = np.sqrt(-2 * np.log(max(resultant, 1e-300))) / (2 * np.pi)
    if not noise < RESOLVED_NOISE_E:
        return electrons, False
    # each row's offset relative to the frame's (within +-0.5 e-, so no wrap), smoothed like the pedestal
    relative = np.angle(row_phase * np.conj(total)) / (2 * np.pi)
    offset = np.angle(total) / (2 * np.pi) + row_pedestal(relative[:, None], window)
    electrons -= offset[:, None]
    # whole electrons, row by row (the row median jumps between peaks): the lowest peak holding a few
    # per cent of the row's pixels is its 0 e- peak
    for rows in row_bands(electrons.shape[0]):
        block = electrons[rows]
        finite = np.isfinite(block)
        ordered = np.sort(np.where(finite, np.round(block), np.inf), axis=1)
        index = np.minimum((_ZERO_PEAK_SHARE * finite.sum(axis=1)).astype(int), block.shape[1] - 1)
        zero = ordered[np.arange(block.shape[0]), index]
        block -= np.where(np.isfinite(zero), zero, 0.0)[:, None]
    return electrons, True


def _row_phases(electrons):
    """Sum over each row of exp(2 pi i e) of its finite pixels, and the number of those pixels."""
    sums, counts = np.zeros(electrons.shape[0], complex), np.zeros(electrons.shape[0], int)
    for rows in row_bands(electrons.shape[0]):
        block = electrons[rows].astype(np.float64)  # the phase of a bright pixel needs the digits
        finite = np.isfinite(block)
        sums[rows] = np.where(finite, np.exp(2j * np.pi * np.where(finite, block, 0.0)), 0).sum(axis=1)
        counts[rows] = finite.sum(axis=1)
    return sums, counts
