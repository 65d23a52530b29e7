"""Run-level defect maps: a defect comes back frame after frame, an event does not.

In one frame a bright pixel may be a shallow event or a defect. Across the frames of one detector
(same shape and EXTNAME) a pixel is *bright* in frame f when its charge reaches a threshold t, which
happens to any pixel with the frame's rate p_f(t) (dark charge and events). A pixel bright in k of n
frames is a defect when k is improbable under a binomial distribution of n trials at the mean rate
(conservative for rates that differ between frames), tested at the thresholds t = 1 ... 5 e- so that
faint and bright defects are both seen. A column is *excessive* in a frame when it holds improbably many
bright pixels outside the pixel defects, and a defect when it is excessive in more frames than chance
(events, such as a track along the column, make it excessive once).
"""

import numpy as np
from astropy.io import fits
from scipy import ndimage, stats

from ccdseg.calib.background import MAD_TO_SIGMA
from ccdseg.calib.electrons import to_electrons
from ccdseg.calib.gain import resolve_gain
from ccdseg.classes import CLUSTER, HOT_PIXEL
from ccdseg.errors import ConfigError, InputError
from ccdseg.io import atomic_path, read_images
from ccdseg.measure.sections import component_sums, structure

#: Values of a run mask: a pixel defect, a column defect.
PIXEL_DEFECT, COLUMN_DEFECT = 1, 2
#: Thresholds (e-) at which pixels count as bright in a frame resolving electrons.
THRESHOLDS_E = (1, 2, 3, 4, 5)
#: Threshold (noise widths) of a bright pixel in a frame that does not resolve electrons.
UNRESOLVED_SIGMA = 5.0
#: Chance at which a column counts as excessive in one frame.
_COLUMN_FRAME_P = 1e-3
#: Largest bright component (px) that a single frame may call an event when a run mask is applied.
EVENT_MAX_PX = 4


def defect_map(frames, *, alpha=1e-3):
    """Defects of one detector from its frames in electrons.

    Parameters
    ----------
    frames : sequence of (ndarray (H, W), bool)
        Charge (e-) of every frame and whether it resolves electrons (:func:`ccdseg.calib.electrons.to_electrons`).
    alpha : float
        Chance that a run of pure dark charge and events has any pixel or column flagged (the
        per-pixel test is at ``alpha / (H * W * n_thresholds)``, the per-column at ``alpha / (W * ...)``).

    Returns
    -------
    ndarray (H, W) uint8
        :data:`PIXEL_DEFECT` and/or :data:`COLUMN_DEFECT` per pixel, 0 elsewhere.
    """
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha!r}")
    n = len(frames)
    shape = frames[0][0].shape
    result = np.zeros(shape, np.uint8)
    thresholds = THRESHOLDS_E if all(resolved for _, resolved in frames) else (None,)
    bright_sets = []
    for threshold in thresholds:
        bright = np.stack([_bright(electrons, resolved, threshold) for electrons, resolved in frames])
        bright_sets.append(bright)
        rate = bright.mean()
        count = bright.sum(axis=0)
        p_pixel = stats.binom.sf(count - 1, n, rate)
        result[p_pixel < alpha / (count.size * len(thresholds))] |= PIXEL_DEFECT
    # a column is excessive in a frame when it holds improbably many bright pixels outside the pixel defects;
    # an event (a track along the column) makes that once, a defect column in frame after frame
    pixels = (result & PIXEL_DEFECT) > 0
    trials = (~pixels).sum(axis=0)
    for bright in bright_sets:
        outside = (bright & ~pixels[None]).sum(axis=1)
        rate = outside.sum(axis=1, keepdims=True) / max(trials.sum(), 1)
        excessive = stats.binom.sf(outside - 1, trials[None], rate) < _COLUMN_FRAME_P
        hits = excessive.sum(axis=0)
        p_column = stats.binom.sf(hits - 1, n, max(excessive.mean(), _COLUMN_FRAME_P))
        result[:, p_column < alpha / (shape[1] * len(thresholds))] |= COLUMN_DEFECT
    return result


def _bright(electrons, resolved, threshold):
    finite = np.isfinite(electrons)
    if resolved:
        return finite & (np.round(np.where(finite, electrons, 0)) >= threshold)
    noise = MAD_TO_SIGMA * np.median(np.abs(electrons[finite] - np.median(electrons[finite])))
    return finite & (np.where(finite, electrons, 0) >= UNRESOLVED_SIGMA * noise)


def build_run_mask(paths, *, gain=None, alpha=1e-3, hdu=None):
    """Run-level defect maps of the detectors of a run of FITS frames.

    Parameters
    ----------
    paths : sequence of str or Path
        Frames of one run (at least 2); images are grouped by EXTNAME (or index) and must agree in shape.
    gain : float, optional
        Gain (ADU/e-) of every image; default :func:`ccdseg.calib.gain.resolve_gain` per image.
    alpha : float
        Family-wise false-flag probability of each map (see :func:`defect_map`).
    hdu : str or int, optional
        Only this image HDU.

    Returns
    -------
    dict of str -> ndarray (H, W) uint8
        Defect map per image label.

    Raises
    ------
    InputError
        A frame cannot be read or its images differ in shape from the first frame's.
    ConfigError
        Fewer than 2 frames, or a gain is unknown and not measurable.
    """
    paths = list(paths)
    if len(paths) < 2:
        raise ConfigError(f"a run mask needs at least 2 frames, got {len(paths)}")
    frames, shapes = {}, {}
    for path in paths:
        images = read_images(path, hdu)
        primary = fits.getheader(path, 0)
        for image in images:
            shape = shapes.setdefault(image.label, image.data.shape)
            if image.data.shape != shape:
                raise InputError(path, f"image {image.label} has shape {image.data.shape}, the run's is {shape}")
            used, _ = resolve_gain(image.data, (image.header, primary), gain, required=True)
            frames.setdefault(image.label, []).append(to_electrons(image.data, used))
    return {label: defect_map(run, alpha=alpha) for label, run in frames.items()}


def write_run_mask(maps, path, *, n_frames, overwrite=False):
    """Write defect maps atomically: one uint8 extension per image, named by its label."""
    primary = fits.PrimaryHDU()
    primary.header["NFRAMES"] = (n_frames, "frames of the run")
    primary.header["DEFPIX"] = (PIXEL_DEFECT, "value bit of a pixel defect")
    primary.header["DEFCOL"] = (COLUMN_DEFECT, "value bit of a column defect")
    hdus = [fits.ImageHDU(defects, name=label) for label, defects in maps.items()]
    with atomic_path(path, overwrite) as temp:
        fits.HDUList([primary, *hdus]).writeto(temp, overwrite=True, checksum=True)


def read_run_mask(path, label, shape):
    """The defect map of image ``label`` from a run mask file (the only one when the file holds one).

    Raises
    ------
    InputError
        The file cannot be read, holds no map for ``label``, or the map's shape differs.
    """
    try:
        with fits.open(path) as hdul:
            maps = {hdu.name: hdu.data for hdu in hdul[1:] if hdu.data is not None}
    except (OSError, ValueError) as error:
        raise InputError(path, f"cannot read the run mask ({error})") from None
    defects = maps.get(str(label).upper(), next(iter(maps.values())) if len(maps) == 1 else None)
    if defects is None:
        raise InputError(path, f"no run mask for image {label} (has {', '.join(maps) or 'none'})")
    if defects.shape != tuple(shape):
        raise InputError(path, f"run mask of {label} has shape {defects.shape}, the image {tuple(shape)}")
    return np.asarray(defects) != 0


def apply_run_mask(labels, defects):
    """Relabel with a run's defects: a bright pixel seen in many frames is a defect, one seen once an event.

    Cluster pixels on a run defect become hot pixels; small hot-pixel components (at most
    :data:`EVENT_MAX_PX` pixels) that touch no run defect become cluster pixels (events).
    """
    labels = np.array(labels, copy=True)
    defects = np.asarray(defects, bool)
    components, n = ndimage.label(labels == HOT_PIXEL, structure=structure(2))
    if n:
        size = component_sums(components, n)
        touches = np.bincount(components[defects], minlength=n + 1) > 0
        event = (size <= EVENT_MAX_PX) & ~touches
        event[0] = False
        labels[event[components]] = CLUSTER
    labels[defects & (labels == CLUSTER)] = HOT_PIXEL
    return labels

