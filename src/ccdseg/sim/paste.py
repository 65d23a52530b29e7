"""Simulated events pasted onto real CCD frames: real noise and readout, exactly labelled events.

A real frame brings what the simulator only approximates: the detector's noise, dark
current, pedestal drift and readout quirks. :func:`paste_events` adds simulated ionisation
events (and optionally simulated glow and hot pixels) to it as whole electrons times the
frame's gain, and labels the pasted pixels with the simulator's own rule.

The real frame's own pixels have no known class. The rule used here:

- ``BACKGROUND``: real pixels within ``background_sigma`` times the noise of the pedestal
  (they hold no charge) and more than ``margin`` pixels from any pixel above that level (so
  the faint tails of real clusters, glow and defects are not called background);
- ``IGNORE`` (255): every other real pixel, and non-finite ones: they may be real clusters,
  glow, hot pixels or dark-current electrons. The loss and the metrics skip them.

A pasted pixel takes the simulator's label wherever its pasted charge reaches the label
threshold (cluster over hot pixel over glowing), whatever lies beneath it.
"""

import copy
import itertools

import numpy as np
from scipy import ndimage

from ccdseg.calib.background import MAD_TO_SIGMA, row_pedestal
from ccdseg.calib.gain import check_gain, resolve_gain
from ccdseg.checks import check_image
from ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL, IGNORE
from ccdseg.errors import ConfigError
from ccdseg.io import image_header
from ccdseg.sim import artefacts
from ccdseg.sim.config import load_config, validate
from ccdseg.sim.simulate import Simulation, cluster_truth, draw_event_charge, label_thresholds, poisson_where_positive


def frame_noise(residual):
    """Readout noise of a pedestal-subtracted frame, from the pixels below the pedestal.

    Charge only adds to a pixel, so the negative half of the residuals is pure noise:
    its median absolute value is the noise's median absolute deviation.
    """
    below = -residual[np.isfinite(residual) & (residual < 0)]
    return MAD_TO_SIGMA * float(np.median(below)) if below.size else 0.0


def paste_events(frame, config=None, gain=None, seed=None, rng=None, with_artefacts=False,
                 background_sigma=3.0, margin=2):
    """Add simulated events to a real frame and label them exactly.

    Parameters
    ----------
    frame : ndarray (H, W)
        Real image (ADU).
    config : SimConfig or str, optional
        Simulation config or preset of the pasted events (rates, energies, diffusion, label
        rule, and glow/defects with ``with_artefacts``); default ``"skipper"``. Its readout
        (gain, noise, pedestal) is replaced by the frame's.
    gain : float
        Gain of the frame (ADU/e-); see :func:`ccdseg.calib.gain.resolve_gain`.
    seed : int, optional
        Seed of the events; the same seed and frame give the same result.
    rng : numpy.random.Generator, optional
        Generator to draw from instead of ``seed``.
    with_artefacts : bool
        Also paste simulated glow and hot pixels (labelled glowing and hot pixel).
    background_sigma : float
        Real pixels within this many noise sigma of the pedestal may be labelled background.
    margin : int
        ... if no real pixel above that level lies within this many pixels (chessboard distance).

    Returns
    -------
    Simulation
        ``image`` (ADU, the frame plus the pasted charge), ``labels`` (the pasted pixels'
        classes, real pixels background or :data:`ccdseg.classes.IGNORE`), ``ids`` and
        ``truth`` of the pasted events, ``charge`` (pasted e- per component) and ``config``
        (with the frame's size, gain, pedestal and noise).
    """
    frame = check_image(frame, "frame", dtype=np.float64)
    if gain is None:
        raise ConfigError("gain: required, in ADU/e- (see ccdseg.calib.gain.resolve_gain)")
    gain = check_gain(gain)
    config = copy.deepcopy(load_config(config or "skipper") if isinstance(config, str) or config is None
                           else validate(config))
    rng = np.random.default_rng(seed) if rng is None else rng
    shape = frame.shape

    # the frame's readout replaces the config's, so the label thresholds follow its real noise
    pedestal = row_pedestal(frame)
    residual = frame - pedestal[:, None]
    noise_adu = frame_noise(residual)
    det = config.detector
    det.height, det.width, det.prescan_columns, det.overscan_columns = shape[0], shape[1], 0, 0
    det.gain_adu_per_e, det.pedestal_adu = float(gain), float(np.median(pedestal))
    det.read_noise_e, det.n_samples = noise_adu / gain, 1

    drawn = draw_event_charge(shape, config, rng)
    zero = np.zeros(shape)
    glow_expected = artefacts.glow_map(shape, config.glow, rng) if with_artefacts else zero
    hot_expected = artefacts.hot_pixel_map(shape, config.hot, rng) if with_artefacts else zero
    glow = poisson_where_positive(glow_expected, rng)
    hot = poisson_where_positive(hot_expected, rng)
    # a pasted alpha saturates and bleeds along its column like a simulated one
    cluster = artefacts.bleed(drawn.image, det.full_well_e)

    finite = np.isfinite(frame)
    quiet = finite & (np.abs(residual) <= background_sigma * noise_adu)
    near_charge = ndimage.binary_dilation(finite & ~quiet, np.ones((3, 3), bool), iterations=margin) \
        if margin else finite & ~quiet
    labels = np.where(quiet & ~near_charge, BACKGROUND, IGNORE).astype(np.uint8)
    cluster_threshold, glow_threshold = label_thresholds(config)
    labels[glow_expected >= glow_threshold] = GLOWING
    labels[hot_expected > 0] = HOT_PIXEL
    labels[cluster >= cluster_threshold] = CLUSTER
    ids, truth = cluster_truth(drawn, labels == CLUSTER)

    image = frame + gain * (cluster + glow + hot)
    charge = {"cluster": cluster, "glow": glow, "hot": hot, "glow_expected": glow_expected,
              "hot_expected": hot_expected}
    return Simulation(image=image.astype(np.float32), labels=labels, ids=ids.astype(np.int32), truth=truth,
                      charge={k: v.astype(np.float32) for k, v in charge.items()}, config=config)


def iter_pasted(frames, config=None, *, gain=None, seed=0, with_artefacts=False, source="", primary=None):
    """Endless (Simulation, header) of events pasted onto the frames in turn.

    The header is the frame's own (every card but the structural ones, after those of ``primary``),
    plus ``BKGFILE``, ``BKGHDU``, ``GAIN`` (the gain used) and ``GAINSRC`` (where it came from: the
    option, the frame's header, or measured from resolved single-electron peaks; never guessed).

    Parameters
    ----------
    frames : sequence of ccdseg.io.ImageData
        Real frames (image HDUs); image ``i`` is pasted onto frame ``i mod len(frames)``.
    config : SimConfig or str, optional
        Events to paste (default the ``skipper`` preset).
    gain : float, optional
        Gain of every frame (ADU/e-); default each frame's ``GAIN`` or its measurement.
    seed : int
        The same seed and frames give the same stream.
    with_artefacts : bool
        Also paste simulated glow and hot pixels.
    source : str
        Name of the frames' file, recorded as ``BKGFILE`` in the header keys.
    primary : astropy.io.fits.Header, optional
        The primary header of the frames' file, kept as well.

    Raises
    ------
    ConfigError
        A frame's gain is neither given nor measurable (:func:`ccdseg.calib.gain.resolve_gain`).
    """
    gains = [resolve_gain(frame.data, (frame.header,), gain, required=True) for frame in frames]
    sequence = np.random.SeedSequence(seed)
    for index in itertools.count():
        frame, (frame_gain, source_of_gain) = frames[index % len(frames)], gains[index % len(frames)]
        rng = np.random.default_rng(sequence.spawn(1)[0])
        keys = image_header(primary if primary is not None else frame.header[:0])
        keys.extend(image_header(frame.header), update=True)
        keys["BKGFILE"], keys["BKGHDU"] = source[:68], frame.label
        keys["GAIN"] = (frame_gain, "[ADU/e-] gain of the pasted events")
        keys["GAINSRC"] = (source_of_gain, "option, header or estimated")
        yield paste_events(frame.data, config, frame_gain, rng=rng, with_artefacts=with_artefacts), keys
