"""Simulate CCD images with exact labels and a truth catalog of clusters.

Charge is built in electrons from its components (ionisation events, glow, hot pixels,
dark current), bled and transferred, then read out with Gaussian noise and turned into
ADU with the gain and a (drifting) pedestal. Labels come from the components themselves,
never from the noisy image; the rule is :class:`ccdseg.sim.config.LabelConfig`'s.
"""

import copy
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL
from ccdseg.errors import ConfigError
from ccdseg.sim import artefacts, events
from ccdseg.sim.config import SimConfig, load_config, validate


@dataclass
class Simulation:
    """One simulated image and everything known about it.

    Attributes
    ----------
    image : ndarray (H, W) float32
        The image in ADU.
    labels : ndarray (H, W) uint8
        Class of every pixel (see :mod:`ccdseg.classes`).
    ids : ndarray (H, W) int32
        Truth id of the cluster that deposited most charge in each cluster pixel, 0 elsewhere.
    truth : astropy.table.Table
        One row per event with charge in the image: id, kind, energy_ev, charge_e, x, y
        (charge-weighted centroid, px), depth_um, npix (its cluster pixels), bounding box.
    charge : dict of ndarray (H, W) float32
        Electrons per pixel of each component: ``cluster`` (after bleeding), ``glow``,
        ``hot``, ``dark`` (drawn), and the expected ``dark_expected``, ``glow_expected`` and
        ``hot_expected``.
    config : SimConfig
    """

    image: np.ndarray
    labels: np.ndarray
    ids: np.ndarray
    truth: Table
    charge: dict
    config: SimConfig


def label_thresholds(config, dark_e=0.0):
    """Charge thresholds (e-) of the label rule: (cluster, glow).

    ``dark_e`` is the expected dark charge (e-/pix, scalar or map): its shot noise adds to
    the readout noise, and the thresholds have its shape.
    """
    noise, rule = np.sqrt(config.detector.noise_e ** 2 + np.asarray(dark_e, dtype=np.float64)), config.labels
    return (np.maximum(rule.cluster_min_e, rule.cluster_min_sigma * noise),
            np.maximum(rule.glow_min_e, rule.glow_min_sigma * noise))


def simulate_image(config=None, seed=None, rng=None):
    """Simulate one CCD image with its labels and truth catalog.

    Parameters
    ----------
    config : SimConfig or str, optional
        Configuration or preset name; default the ``damic`` preset.
    seed : int, optional
        Seed of the random generator; the same seed gives the same image.
    rng : numpy.random.Generator, optional
        Generator to draw from instead of ``seed``.

    Returns
    -------
    Simulation
    """
    config = load_config(config) if isinstance(config, str) or config is None else validate(config)
    rng = np.random.default_rng(seed) if rng is None else rng
    if config.readout.enabled:
        from ccdseg.sim.readout import simulate_readout  # it simulates each amplifier with this function
        return simulate_readout(config, rng)
    det = config.detector
    active = (det.height, det.width - det.prescan_columns - det.overscan_columns)
    if active[1] < 1:
        raise ConfigError(f"detector.width = {det.width}: must exceed prescan_columns + overscan_columns")

    drawn = draw_event_charge(active, config, rng)
    cluster = drawn.image

    glow_expected = artefacts.glow_map(active, config.glow, rng)
    hot_expected = artefacts.hot_pixel_map(active, config.hot, rng)
    glow = poisson_where_positive(glow_expected, rng)
    hot = poisson_where_positive(hot_expected, rng)
    dark_expected = artefacts.dark_current_map(active, det)
    if det.dark_charge_e[1] > 0:  # drawn only where configured, so that other presets keep their images
        dark_expected = dark_expected + rng.uniform(*det.dark_charge_e)
    dark = rng.poisson(dark_expected).astype(np.float64)

    unbled = cluster + glow + hot + dark
    total = artefacts.transfer_trail(artefacts.bleed(unbled, det.full_well_e), det.cti)
    # charge moved by bleeding and transfer belongs to the component that dominated its source
    moved = total - unbled
    source_is_cluster = _bleed_source_is_cluster(unbled, cluster, det.full_well_e)
    cluster = cluster + np.where(source_is_cluster, moved, 0.0)
    hot = hot + np.where(source_is_cluster, 0.0, moved)

    cluster_threshold, glow_threshold = label_thresholds(config, dark_expected)
    labels = np.full(active, BACKGROUND, np.uint8)
    labels[glow_expected >= glow_threshold] = GLOWING
    labels[(hot_expected > 0) | (~source_is_cluster & (moved >= cluster_threshold))] = HOT_PIXEL
    labels[cluster >= cluster_threshold] = CLUSTER

    ids, truth = cluster_truth(drawn, labels == CLUSTER)

    image_e = total + rng.normal(0.0, det.noise_e, active)
    image_e[:, 0] += det.first_column_offset_e
    pad = ((0, 0), (det.prescan_columns, det.overscan_columns))
    if det.prescan_columns or det.overscan_columns:
        image_e = np.pad(image_e, pad)
        image_e[:, :det.prescan_columns] = rng.normal(0.0, det.noise_e, (det.height, det.prescan_columns))
        image_e[:, det.width - det.overscan_columns:] = rng.normal(0.0, det.noise_e, (det.height, det.overscan_columns))
        truth["x"] += det.prescan_columns
        truth["xmin"] += det.prescan_columns
        truth["xmax"] += det.prescan_columns
    pedestal = det.pedestal_adu + np.cumsum(rng.normal(0.0, det.pedestal_drift_adu, det.height))
    if det.gain_spread > 0:  # this frame's gain, recorded in its config (and so in the GAIN header key)
        config = copy.deepcopy(config)
        config.detector.gain_adu_per_e *= max(1.0 + det.gain_spread * rng.standard_normal(), 0.5)
    image = pedestal[:, None] + config.detector.gain_adu_per_e * image_e
    if det.adc_max_adu is not None:
        image = np.clip(image, 0.0, det.adc_max_adu)
    if det.rice_q > 0:
        image = rice_quantise(image, det.rice_q, rng)

    def full(array, dtype):
        return (np.pad(array, pad) if det.prescan_columns or det.overscan_columns else array).astype(dtype, copy=False)

    charge = {"cluster": cluster, "glow": glow, "hot": hot, "dark": dark, "dark_expected": dark_expected,
              "glow_expected": glow_expected, "hot_expected": hot_expected}
    return Simulation(image=image.astype(np.float32), labels=full(labels, np.uint8), ids=full(ids, np.int32),
                      truth=truth, charge={k: full(v, np.float32) for k, v in charge.items()}, config=config)


@dataclass
class EventCharge:
    """Ionisation events of one image diffused into its pixels (see :func:`draw_event_charge`).

    Attributes
    ----------
    deposits : ccdseg.sim.events.Deposits
        The events' charge steps and truth.
    pixel, charge, event : ndarray
        Flat pixel index, electrons and event index of every diffused sample.
    image : ndarray (H, W) float64
        Whole electrons per pixel (stochastically rounded sum of the samples).
    """

    deposits: events.Deposits
    pixel: np.ndarray
    charge: np.ndarray
    event: np.ndarray
    image: np.ndarray


def draw_event_charge(shape, config, rng):
    """Draw the ionisation events of an image of ``shape`` at the config's rates, diffuse and bin them.

    Parameters
    ----------
    shape : (int, int)
        Height and width of the pixel array (px).
    config : SimConfig
        Its ``clusters`` section and the detector's pixel size and thickness are used.
    rng : numpy.random.Generator

    Returns
    -------
    EventCharge
    """
    deposits = _draw_events(shape, config, rng)
    pixel, charge, event = events.diffuse(deposits, shape, config.clusters, config.detector.pixel_size_um, rng)
    n_pix = shape[0] * shape[1]
    image = _stochastic_round(np.bincount(pixel, weights=charge, minlength=n_pix), rng).reshape(shape)
    return EventCharge(deposits, pixel, charge, event, image)


def cluster_truth(drawn, cluster_mask):
    """Owner id of every cluster pixel and the truth table of the events of ``drawn``.

    Parameters
    ----------
    drawn : EventCharge
    cluster_mask : ndarray (H, W) bool
        The pixels labelled cluster (charge moved there by bleeding included).

    Returns
    -------
    ids : ndarray (H, W) int32
        Id of the event with most charge in each cluster pixel, 0 elsewhere.
    truth : astropy.table.Table
        One row per event with charge in the image (see :class:`Simulation`).
    """
    shape = cluster_mask.shape
    ids = _cluster_owner(drawn.pixel, drawn.charge, drawn.event, shape[0] * shape[1]).reshape(shape)
    ids = _fill_bled_owner(ids, cluster_mask)
    ids[~cluster_mask] = 0
    return ids, _truth_table(drawn.deposits, drawn.pixel, drawn.charge, drawn.event, ids, shape)


def iter_simulations(config=None, seed=0):
    """Endless, reproducible stream of simulations: image i depends only on (seed, i)."""
    config = load_config(config) if isinstance(config, str) or config is None else validate(config)
    sequence = np.random.SeedSequence(seed)
    while True:
        yield simulate_image(config, rng=np.random.default_rng(sequence.spawn(1)[0]))


def _draw_events(shape, config, rng):
    det, cl = config.detector, config.clusters
    mpix = shape[0] * shape[1] / 1e6

    def count(per_mpix):
        return rng.poisson(rng.uniform(*per_mpix) * mpix)

    parts = [
        events.point_events(count(cl.points_per_mpix), shape, cl, det.thickness_um, rng),
        events.worm_events(count(cl.worms_per_mpix), shape, cl, det.thickness_um, det.pixel_size_um, rng),
        events.muon_events(count(cl.muons_per_mpix), shape, cl, det.thickness_um, det.pixel_size_um, rng),
        events.alpha_events(count(cl.alphas_per_mpix), shape, cl, det.thickness_um, rng),
    ]
    if cl.fe55_per_mpix[1] > 0:  # drawn only where configured, so that other presets keep their images
        parts.append(events.fe55_events(count(cl.fe55_per_mpix), shape, cl, det.thickness_um, rng))
    return events.Deposits.concatenate(parts)


def rice_quantise(image, q, rng):
    """Round an image as fpack's lossy RICE compression does: to steps of the row's noise / q, dithered.

    Each row (fpack's tile) gets the step ``noise / q`` with the noise estimated as CFITSIO does
    (0.6052 · median |2 x_i - x_{i-2} - x_{i+2}|, which in a skipper frame counts the dark electrons
    too), and the subtractive dither: uniform noise added before rounding and taken off after.
    """
    second = 2 * image[:, 2:-2] - image[:, :-4] - image[:, 4:]
    step = 0.6052 * np.median(np.abs(second), axis=1, keepdims=True) / q
    step = np.where(step > 0, step, 1.0)
    dither = rng.random(image.shape)
    return (np.rint(image / step + dither - 0.5) - dither + 0.5) * step


def poisson_where_positive(expected, rng):
    """Poisson draw of a sparse expectation map, drawing only where it is positive."""
    drawn = np.zeros(expected.shape)
    where = expected > 0
    drawn[where] = rng.poisson(expected[where])
    return drawn


def _stochastic_round(values, rng):
    """Round to whole electrons keeping the expectation: floor plus a Bernoulli of the fraction."""
    floor = np.floor(values)
    return floor + (rng.random(values.shape) < values - floor)


def _bleed_source_is_cluster(unbled, cluster, full_well_e):
    """For every pixel, whether the nearest saturated pixel in its column is mostly cluster charge."""
    saturated = unbled > full_well_e
    result = np.ones(unbled.shape, bool)
    columns = np.flatnonzero(saturated.any(axis=0))
    if columns.size == 0:
        return result
    sub = saturated[:, columns]
    rows = np.arange(unbled.shape[0])[:, None]
    above = np.maximum.accumulate(np.where(sub, rows, -1), axis=0)
    below = np.minimum.accumulate(np.where(sub, rows, unbled.shape[0])[::-1], axis=0)[::-1]
    use_above = (above >= 0) & ((rows - above) <= (below - rows))
    nearest = np.where(use_above, above, np.minimum(below, unbled.shape[0] - 1))
    source_cluster = cluster[:, columns] * 2 >= unbled[:, columns]
    result[:, columns] = np.take_along_axis(source_cluster, nearest, axis=0)
    return result


def _cluster_owner(pixel, charge, event, n_pix):
    """Event id (index + 1) with the most charge in each pixel; 0 where no event deposited."""
    owner = np.zeros(n_pix, np.int32)
    owner[pixel] = event + 1
    # only pixels shared by several events need the charge comparison
    shared = np.zeros(n_pix, bool)
    shared[pixel[owner[pixel] != event + 1]] = True
    pick = shared[pixel]
    if not pick.any():
        return owner
    pixel, charge, event = pixel[pick], charge[pick], event[pick]
    key = event * n_pix + pixel
    unique, inverse = np.unique(key, return_inverse=True)
    pair_charge = np.bincount(inverse, weights=charge)
    pair_pixel, pair_event = unique % n_pix, unique // n_pix
    order = np.lexsort((pair_charge, pair_pixel))  # last entry of each pixel has most charge
    last = np.r_[pair_pixel[order][1:] != pair_pixel[order][:-1], True]
    owner[pair_pixel[order][last]] = pair_event[order][last] + 1
    return owner


def _fill_bled_owner(ids, cluster_mask):
    """Cluster pixels reached only by bleeding take the id of the nearest owned pixel in their column."""
    orphan = cluster_mask & (ids == 0)
    if not orphan.any():
        return ids
    rows = np.arange(ids.shape[0])[:, None]
    owned = ids > 0
    above = np.maximum.accumulate(np.where(owned, rows, -1), axis=0)
    below = np.minimum.accumulate(np.where(owned, rows, ids.shape[0])[::-1], axis=0)[::-1]
    use_above = (above >= 0) & ((rows - above) <= (below - rows) | (below >= ids.shape[0]))
    nearest = np.clip(np.where(use_above, above, below), 0, ids.shape[0] - 1)
    filled = np.take_along_axis(ids, nearest, axis=0)
    return np.where(orphan, filled, ids)


def _truth_table(deposits, pixel, charge, event, ids, shape):
    n_events = deposits.kind.size
    charge_e = np.bincount(event, weights=charge, minlength=n_events)
    row, col = np.divmod(pixel, shape[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.bincount(event, weights=charge * col, minlength=n_events) / charge_e
        y = np.bincount(event, weights=charge * row, minlength=n_events) / charge_e
    npix = np.bincount(ids.ravel(), minlength=n_events + 1)[1:]
    flat_ids = ids.ravel()
    owned = np.flatnonzero(flat_ids)
    o_row, o_col = np.divmod(owned, shape[1])
    o_event = flat_ids[owned] - 1
    big = np.iinfo(np.int64).max
    bounds = {}
    for name, values, reduce, fill in (("xmin", o_col, np.minimum, big), ("xmax", o_col, np.maximum, -1),
                                       ("ymin", o_row, np.minimum, big), ("ymax", o_row, np.maximum, -1)):
        out = np.full(n_events, fill, np.int64)
        reduce.at(out, o_event, values)
        bounds[name] = np.where(npix > 0, out, -1)
    keep = charge_e > 0
    return Table({
        "id": np.arange(1, n_events + 1)[keep],
        "kind": np.asarray(events.KINDS)[deposits.kind[keep]],
        "energy_ev": deposits.energy_ev[keep],
        "charge_e": charge_e[keep],
        "x": x[keep], "y": y[keep],
        "depth_um": deposits.depth_um[keep],
        "npix": npix[keep],
        **{name: values[keep] for name, values in bounds.items()},
    })
