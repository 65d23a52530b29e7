"""The 2020 thesis's labelling: a pixel's class from the intensity window its value falls in.

It works only for images whose classes have known, separated intensities (the thesis's
recipe: glow +1400-1500 ADU, hot lines +2200 ADU above an 8800 ADU pedestal); real images
and the other presets overlap in intensity, which is why the simulator labels pixels from
its components instead. Offered for users whose images allow it.
"""

import numpy as np

from ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL


def label_by_intensity(image, windows):
    """Label pixels by the intensity window their value falls in.

    Parameters
    ----------
    image : ndarray
        Image in ADU.
    windows : list of (class_id, low, high)
        Inclusive ADU windows, applied in order: a later window wins where they overlap.
        Pixels in no window (and NaN pixels) are background.

    Returns
    -------
    ndarray of uint8, the shape of ``image``.
    """
    image = np.asarray(image)
    labels = np.full(image.shape, BACKGROUND, np.uint8)
    for class_id, low, high in windows:
        labels[(image >= low) & (image <= high)] = class_id
    return labels


def thesis_windows(config, n_sigma=5.0):
    """The thesis's windows for a :class:`~ccdseg.sim.config.SimConfig` (``thesis`` preset).

    Background is the pedestal ± n_sigma·noise; glow and hot lines are their known excess
    ± n_sigma·noise; everything brighter than background outside those windows is cluster.
    """
    det = config.detector
    pedestal, gain, noise = det.pedestal_adu, det.gain_adu_per_e, n_sigma * det.noise_e * det.gain_adu_per_e
    glow_lo, glow_hi = (pedestal + gain * a for a in config.glow.amplitude_e)
    hot_lo, hot_hi = (pedestal + gain * a for a in config.hot.amplitude_e)
    return [(CLUSTER, pedestal + noise, np.inf),
            (GLOWING, glow_lo - noise, glow_hi + noise),
            (HOT_PIXEL, hot_lo - noise, hot_hi + noise)]
