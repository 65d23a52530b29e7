"""Real readouts in the simulator: several amplifiers, baselines along the row, odd columns, RICE quantisation.

:func:`simulate_readout` is what :func:`ccdseg.sim.simulate.simulate_image` does when the config's
``readout`` section (:class:`ccdseg.sim.config.ReadoutConfig`) switches anything on. Each amplifier's
region is simulated as a CCD of its own (own pedestal, noise and gain; its glow and prescan at the
readout corner, which faces out of the image), then the readout effects are added to it in its own
readout order, and the regions are put together. Labels stay exact: electronic effects leave them
alone, dead and negative columns are background, saturated columns hot pixels.
"""

import copy
import dataclasses

import numpy as np
from astropy.table import vstack

from ccdseg.classes import BACKGROUND, HOT_PIXEL
from ccdseg.sim.config import ReadoutConfig
from ccdseg.sim.simulate import Simulation, rice_quantise


def simulate_readout(config, rng):
    """Simulate an image read out as ``config.readout`` says (see the module docstring).

    Parameters
    ----------
    config : SimConfig
        Validated configuration with ``config.readout.enabled``.
    rng : numpy.random.Generator

    Returns
    -------
    Simulation
        The whole image; ``config`` is the one given (the amplifiers' own readouts are not kept).
    """
    from ccdseg.sim.simulate import simulate_image  # the single-amplifier simulation this builds on

    readout, det = config.readout, config.detector
    ys = np.linspace(0, det.height, readout.amplifier_rows + 1).round().astype(int)
    xs = np.linspace(0, det.width, readout.amplifier_cols + 1).round().astype(int)
    image = np.empty((det.height, det.width), np.float32)
    labels = np.empty(image.shape, np.uint8)
    ids = np.zeros(image.shape, np.int32)
    charge, tables, next_id = {}, [], 0
    for j in range(readout.amplifier_rows):
        for i in range(readout.amplifier_cols):
            amp = _amplifier_config(config, ys[j + 1] - ys[j], xs[i + 1] - xs[i], first=i == j == 0, rng=rng)
            sim = simulate_image(amp, rng=rng)
            _add_readout_effects(sim, amp.detector, readout, rng, rice_q=det.rice_q)
            # the readout corner, and the glow with it, faces out of the image
            sim = _flipped(sim, *(_faces_start(sim.charge["glow_expected"], axis) != (k < n / 2)
                                  if n > 1 else False
                                  for axis, k, n in ((1, i, readout.amplifier_cols), (0, j, readout.amplifier_rows))))
            region = (slice(ys[j], ys[j + 1]), slice(xs[i], xs[i + 1]))
            image[region], labels[region] = sim.image, sim.labels
            ids[region] = np.where(sim.ids > 0, sim.ids + next_id, 0)
            for name, values in sim.charge.items():
                charge.setdefault(name, np.zeros(image.shape, np.float32))[region] = values
            table = sim.truth.copy()
            table["id"] += next_id
            for key, offset in (("x", xs[i]), ("xmin", xs[i]), ("xmax", xs[i]), ("y", ys[j]), ("ymin", ys[j]),
                                ("ymax", ys[j])):
                table[key] += offset
            tables.append(table)
            next_id += len(sim.truth) and int(np.max(sim.truth["id"]))
    return Simulation(image=image, labels=labels, ids=ids, truth=vstack(tables, metadata_conflicts="silent"),
                      charge=charge, config=config)


#: Amplifier layouts (columns, rows) of :func:`random_readout`.
_LAYOUTS = ((1, 1), (2, 1), (1, 2), (2, 2))


def random_readout(config, rng):
    """``config`` with real-readout effects drawn at random, sized by its readout noise: the training mix.

    An amplifier layout of up to 2 x 2; on half of the frames a saw-tooth baseline of 1-8 noise sigma per
    tooth, on the other half none; up to 3 baseline steps of 1-5 sigma; on a third a prescan transient of up
    to 20 sigma; up to one dead, one negative and one saturated column.

    Parameters
    ----------
    config : SimConfig
    rng : numpy.random.Generator

    Returns
    -------
    SimConfig
        A copy; ``config`` is not changed.
    """
    noise = config.detector.noise_e
    cols, rows = _LAYOUTS[rng.integers(len(_LAYOUTS))]
    sawtooth = (noise, 8 * noise) if rng.random() < 0.5 else (0.0, 0.0)
    transient = (0.0, 20 * noise) if rng.random() < 1 / 3 else (0.0, 0.0)
    readout = dataclasses.replace(config.readout, amplifier_cols=cols, amplifier_rows=rows, sawtooth_e=sawtooth,
                                  sawtooth_period_px=(60, 350), baseline_jumps=(0, 3), jump_e=(noise, 5 * noise),
                                  prescan_transient_e=transient, dead_columns=(0, 1), negative_columns=(0, 1),
                                  saturated_columns=(0, 1))
    return dataclasses.replace(config, readout=readout)


def _amplifier_config(config, height, width, first, rng):
    """The config of one amplifier's region: its size, its own pedestal, noise and gain.

    Its readout section is off: :func:`_add_readout_effects` adds the effects afterwards.
    """
    amp = copy.deepcopy(config)
    det, readout = amp.detector, amp.readout
    det.height, det.width = int(height), int(width)
    amp.readout = ReadoutConfig()
    det.rice_q = 0.0  # quantised once, after the readout effects
    if not first:
        det.pedestal_adu += rng.uniform(*readout.pedestal_offset_adu)
        det.read_noise_e *= 1 + rng.uniform(-1, 1) * readout.noise_spread
        det.gain_adu_per_e *= 1 + rng.uniform(-1, 1) * readout.gain_spread
    if det.adc_max_adu is not None:
        det.adc_max_adu = max(det.adc_max_adu, det.pedestal_adu + 1.0)
    return amp


def _faces_start(glow, axis):
    """Whether the glow (and so the readout) is at the start of ``axis`` (the first column or row read)."""
    profile = glow.sum(axis=1 - axis)
    half = profile.size // 2
    return profile[:half].sum() >= profile[profile.size - half:].sum()


def sawtooth(width, rng, *, amplitude_e, period_px, decay_px):
    """A baseline saw-tooth along a row (e-): teeth that jump up and decay exponentially, one after another.

    Parameters
    ----------
    width : int
        Columns.
    rng : numpy.random.Generator
    amplitude_e, period_px, decay_px : (low, high)
        Ranges of each tooth's jump (e-, uniform), length (px, whole, inclusive) and e-folding length (px).

    Returns
    -------
    ndarray (width,)
    """
    columns = np.arange(width, dtype=np.float64)
    baseline = np.zeros(width)
    start = 0
    while start < width:
        period = int(rng.integers(period_px[0], period_px[1] + 1))
        decay = rng.uniform(*decay_px)
        tooth = columns[start:start + period] - start
        baseline[start:start + period] += rng.uniform(*amplitude_e) * np.exp(-tooth / decay)
        start += period
    return baseline


def _add_readout_effects(sim, det, readout, rng, *, rice_q=0.0):
    """Add one amplifier's baseline, transient, odd columns and quantisation to its simulation, in place."""
    height, width = sim.image.shape
    gain, noise_adu = det.gain_adu_per_e, det.noise_e * det.gain_adu_per_e
    columns = np.arange(width, dtype=np.float64)
    baseline = np.zeros(width)
    if readout.sawtooth_e[1] > 0:
        baseline += sawtooth(width, rng, amplitude_e=readout.sawtooth_e, period_px=readout.sawtooth_period_px,
                             decay_px=readout.sawtooth_decay_px)
    for _ in range(rng.integers(readout.baseline_jumps[0], readout.baseline_jumps[1] + 1)):
        baseline[rng.integers(1, width):] += rng.choice((-1, 1)) * rng.uniform(*readout.jump_e)
    if readout.prescan_transient_e[1] > 0:
        baseline += rng.uniform(*readout.prescan_transient_e) * np.exp(-columns / readout.prescan_transient_px)
    image = sim.image.astype(np.float64)
    counts = [rng.integers(low, high + 1) for low, high in
              (readout.dead_columns, readout.negative_columns, readout.saturated_columns)]
    odd = rng.choice(width, size=min(sum(counts), width), replace=False)
    dead, negative, saturated = np.split(odd, np.cumsum(counts)[:2])
    # dead and negative columns lose their charge: they read the row's pedestal and noise (a negative one less)
    lost = np.concatenate([dead, negative]).astype(int)
    image[:, lost] = np.median(image, axis=1)[:, None] + rng.normal(0.0, noise_adu, (height, lost.size))
    image[:, negative] -= gain * rng.uniform(*readout.negative_e, size=negative.size)
    sim.labels[:, lost], sim.ids[:, lost] = BACKGROUND, 0
    image += gain * baseline[None, :]
    if rice_q > 0:
        image = rice_quantise(image, rice_q, rng)
    image[:, saturated] = det.adc_max_adu if det.adc_max_adu is not None else det.pedestal_adu + gain * det.full_well_e
    sim.labels[:, saturated], sim.ids[:, saturated] = HOT_PIXEL, 0
    if det.adc_max_adu is not None:
        image = np.clip(image, 0.0, det.adc_max_adu)
    sim.image = image.astype(np.float32)


def _flipped(sim, flip_x, flip_y):
    """The simulation mirrored left-right and/or top-bottom (image, labels, ids, charge and truth)."""
    if not (flip_x or flip_y):
        return sim
    axes = tuple(axis for axis, flip in ((0, flip_y), (1, flip_x)) if flip)
    height, width = sim.image.shape
    truth = sim.truth.copy()
    for flip, size, (centre, low, high) in ((flip_x, width, ("x", "xmin", "xmax")),
                                            (flip_y, height, ("y", "ymin", "ymax"))):
        if flip:
            truth[centre] = size - 1 - truth[centre]
            truth[low], truth[high] = size - 1 - truth[high], size - 1 - truth[low]
    return Simulation(image=np.flip(sim.image, axes), labels=np.flip(sim.labels, axes), ids=np.flip(sim.ids, axes),
                      truth=truth, charge={k: np.flip(v, axes) for k, v in sim.charge.items()}, config=sim.config)
