"""Low-energy events: 2-4 e- deposits in a few neighbouring pixels, where a frame resolves electrons.

The segmentation's cluster class starts at a few electrons over several noise widths; a search's
signal starts at 2 e-. In the exposed pixels of a frame that resolves electrons (no mask bit set), a
low-energy event is a connected group (8 neighbours) of pixels holding >= 1 e- each (rounded) that
fits in a ``box`` x ``box`` square and holds ``min_e`` to ``max_e`` electrons in all, as in the 2 e-
search of SENSEI (Barak et al., PRL 125, 171802 (2020)). Dark charge makes such groups by chance;
:func:`expected_dark_events` counts those of a dark-only frame with the same mask.
"""

import numpy as np
from scipy import ndimage

from ccdseg.calib.background import row_bands
from ccdseg.checks import check_image
from ccdseg.errors import ConfigError
from ccdseg.measure.sections import component_sums, structure

#: Largest charge (e-) of a low-energy event: above it the segmentation's clusters are masked.
LOW_ENERGY_MAX_E = 4
#: Pixels of dark-only frames :func:`expected_dark_events` draws: a few frames of a small image, or ``_BANDS``
#: bands of rows spread over a large one (the count scaled to all its exposed pixels; memory stays bounded).
_SIMULATED_PIX, _BANDS = 4_000_000, 8


def find_low_energy_events(electrons, mask, *, min_e=2, max_e=LOW_ENERGY_MAX_E, box=3):
    """Pixels of the low-energy events of the exposed pixels of an image.

    Parameters
    ----------
    electrons : ndarray (H, W)
        Pedestal-subtracted charge (e-) of a frame resolving electrons; NaN pixels are ignored.
    mask : ndarray (H, W) of int
        Analysis mask (:func:`ccdseg.measure.mask.build_mask`); only pixels where it is 0 take part.
    min_e, max_e : int
        Range of the event's total charge (e-, whole electrons, inclusive).
    box : {2, 3}
        Side of the square the event must fit in (px).

    Returns
    -------
    ndarray (H, W) of int32
        Event number (1, 2, ...) of each event pixel, 0 elsewhere.
    """
    electrons = check_image(electrons, "electrons")
    mask = check_image(mask, "mask", shape=electrons.shape)
    if box not in (2, 3):
        raise ConfigError(f"box must be 2 or 3 pixels, got {box!r}")
    if not 1 <= min_e <= max_e:
        raise ConfigError(f"need 1 <= min_e <= max_e electrons, got {min_e!r} and {max_e!r}")
    counts = _exposed_counts(electrons, mask)
    components, n = ndimage.label(counts > 0, structure=structure(2))
    if n == 0:
        return components
    total = component_sums(components, n, counts)[1:]
    boxes = ndimage.find_objects(components)
    fits = np.array([rows.stop - rows.start <= box and cols.stop - cols.start <= box for rows, cols in boxes])
    keep = fits & (total >= min_e) & (total <= max_e)
    number = np.zeros(n + 1, np.int32)
    number[1:][keep] = np.arange(1, keep.sum() + 1)
    return number[components]


def _exposed_counts(electrons, mask):
    """Whole electrons (rounded, 0 ... 255; uint8) of the finite exposed pixels, 0 elsewhere; a band of rows at a time.

    An event holds at most a few electrons, so a pixel's count saturating at 255 changes no event.
    """
    counts = np.zeros(electrons.shape, np.uint8)
    for rows in row_bands(electrons.shape[0]):
        block = np.round(electrons[rows])
        exposed = np.isfinite(block) & (mask[rows] == 0)
        counts[rows] = np.where(exposed, np.clip(np.nan_to_num(block), 0, 255), 0)
    return counts


def expected_dark_events(mask, dark_e, noise_e, *, min_e=2, max_e=LOW_ENERGY_MAX_E, box=3, seed=0):
    """Low-energy events that dark charge alone makes in the exposed pixels of ``mask``.

    Dark-only frames (Poisson ``dark_e`` electrons per pixel plus Gaussian ``noise_e``) with the same
    mask go through :func:`find_low_energy_events`: enough frames for 4 Mpix in all, or for a frame
    larger than that, 8 bands of rows spread over it holding 4 Mpix; the count per exposed pixel times
    the frame's exposed pixels is returned.

    Parameters
    ----------
    mask : ndarray (H, W) of int
        Analysis mask; 0 where a pixel is exposed.
    dark_e : float or ndarray (H, 1) or (H, W)
        Dark charge (e-/pix).
    noise_e : float
        Readout noise (e-).
    min_e, max_e, box
        As in :func:`find_low_energy_events`.
    seed : int
        Seed of the dark-only frames.

    Returns
    -------
    float
        Expected number of events from dark-charge coincidences.
    """
    mask = check_image(mask, "mask")
    rng = np.random.default_rng(seed)
    dark = np.broadcast_to(np.clip(np.nan_to_num(np.asarray(dark_e, dtype=np.float64)), 0, None), mask.shape)
    height, width = mask.shape
    if mask.size <= _SIMULATED_PIX:
        bands = [slice(0, height)] * -(-_SIMULATED_PIX // max(mask.size, 1))
    else:  # a large frame: bands of rows spread over it, their count scaled to all its exposed pixels
        rows = -(-_SIMULATED_PIX // (_BANDS * width))
        bands = [slice(start, start + rows) for start in np.linspace(0, height - rows, _BANDS).astype(int)]
    found, exposed = 0, 0
    for rows in bands:
        frame = rng.poisson(dark[rows]) + rng.normal(0.0, max(noise_e, 0.0), dark[rows].shape)
        found += find_low_energy_events(frame, mask[rows], min_e=min_e, max_e=max_e, box=box).max()
        exposed += np.count_nonzero(mask[rows] == 0)
    return float(found * np.count_nonzero(mask == 0) / exposed) if exposed else 0.0
