"""Training tiles: (image in ADU, labels, normalisation statistics) from the simulator or from files.

Every source is an iterator of ``(image float32 (S, S) ADU, labels uint8 (S, S), stats)``
driven by a seed, so the same seed gives the same tiles. ``stats`` are the
:class:`ccdseg.nn.normalize.NormalizationStats` of the tile's rows measured on the *whole* image
it was cut from, as prediction measures them on the whole frame: a tile's own row medians
would be pulled up by glow that covers much of a short row, and the network would learn a
glow level it never sees at prediction. The trainer applies
:func:`ccdseg.nn.normalize.normalize` with these statistics. Augmentation comes in two parts
because they act on different units: :func:`jitter` changes the raw image in ADU (and its
statistics alike), :func:`flip_rotate` moves pixels of image and labels alike (after
normalisation, so that the per-row pedestal is still a row).
"""

import itertools
from pathlib import Path

import numpy as np

from ccdseg.calib.amplifiers import find_segments
from ccdseg.errors import ConfigError, InputError
from ccdseg.io import FITS_SUFFIXES
from ccdseg.nn.normalize import NormalizationStats, network_input
from ccdseg.sim.config import load_config
from ccdseg.sim.readout import random_readout
from ccdseg.sim.simulate import simulate_image
from ccdseg.sim.truth import read_simulation

#: Share of each preset in the simulated training mix.
DEFAULT_PRESETS = {"damic": 0.35, "skipper": 0.25, "damicm": 0.2, "thesis": 0.2}
#: Share of the tiles of a file dataset kept for validation (the 2020 thesis used 21 %).
VAL_FRACTION = 0.21


def simulated_tiles(presets=None, size=128, seed=0, overrides=None, image_size=None, normalization=None, pool=1,
                    readout_share=0.0):
    """Endless, reproducible stream of simulated tiles.

    Each image is simulated with a preset drawn with the given probabilities, then cut into
    a grid of ``size`` x ``size`` tiles; the tiles of ``pool`` images are yielded in a random
    order, so that a batch mixes images (and presets).

    Parameters
    ----------
    presets : dict of str to float, optional
        Preset name -> probability (normalised to sum 1); default :data:`DEFAULT_PRESETS`.
    size : int
        Tile height and width (px).
    seed : int or numpy.random.SeedSequence
        Image i of the stream depends only on (seed, i).
    overrides : dict or list of str, optional
        Simulation config overrides applied to every preset (see :func:`ccdseg.sim.config.load_config`).
    image_size : int, optional
        Height and width of each simulated image (px), a multiple of ``size``; default ``size``.
        Larger images put glow and defects at realistic distances from most tiles.
    normalization : dict, optional
        Normalisation parameters of the statistics (see :mod:`ccdseg.nn.normalize`).
    pool : int
        Images whose tiles are shuffled together.
    readout_share : float
        Share of the images simulated with real-readout effects drawn at random
        (:func:`ccdseg.sim.readout.random_readout`: amplifiers, baselines, odd columns).

    Yields
    ------
    image : ndarray (size, size) float32
        Tile in ADU.
    labels : ndarray (size, size) uint8
        Class of every pixel.
    stats : NormalizationStats
        Pedestal of the tile's rows and noise (ADU), measured on the whole image.
    """
    presets = dict(DEFAULT_PRESETS if presets is None else presets)
    image_size = size if image_size is None else image_size
    if size < 1 or image_size % size:
        raise ConfigError(f"image_size = {image_size}: must be a positive multiple of the tile size {size}")
    names = list(presets)
    weights = np.array([presets[name] for name in names], dtype=float)
    if not names or np.any(weights < 0) or weights.sum() <= 0:
        raise ConfigError(f"presets = {presets!r}: must map preset names to non-negative weights with a positive sum")
    configs = [load_config(name, overrides=_with_shape(overrides, image_size)) for name in names]
    # a fresh copy: spawning from the caller's sequence would change the stream it gets next time
    sequence = (np.random.SeedSequence(seed.entropy, spawn_key=seed.spawn_key)
                if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed))
    if pool < 1:
        raise ConfigError(f"pool = {pool!r}: must be >= 1")
    if not 0.0 <= readout_share <= 1.0:
        raise ConfigError(f"readout_share = {readout_share!r}: must be in [0, 1]")
    while True:
        tiles = []
        for child in sequence.spawn(pool):
            rng = np.random.default_rng(child)
            config = configs[rng.choice(len(names), p=weights / weights.sum())]
            if rng.random() < readout_share:
                config = random_readout(config, rng)
            sim = simulate_image(config, rng=rng)
            tiles.extend(image_tiles(sim.image, sim.labels, size, normalization))
        order = rng.permutation(len(tiles)) if pool > 1 else range(len(tiles))
        yield from (tiles[i] for i in order)


def image_tiles(image, labels, size, normalization=None):
    """(tile, labels, stats) of the tile grid of an image, prepared and measured as a whole frame is predicted."""
    image, stats = prepared(image, normalization)
    return [(image[y:y + size, x:x + size], labels[y:y + size, x:x + size], tile_stats(stats, y, size))
            for y, x in grid_positions(image.shape, size)]


def prepared(image, normalization=None):
    """The image the network sees and its statistics, as the pipeline gives them (amplifiers found in the data)."""
    image, stats, _ = network_input(image, find_segments(image, gain=False), normalization)
    return image, stats


def tile_stats(stats, y, size):
    """Normalisation statistics of the rows ``y:y + size`` of an image."""
    return NormalizationStats(stats.pedestal[y:y + size], stats.sigma)


def _with_shape(overrides, image_size):
    """Overrides (dict or list of "key=value") with the image height and width set."""
    if isinstance(overrides, dict):
        return {**overrides, "detector.height": image_size, "detector.width": image_size}
    return [*(overrides or []), f"detector.height={image_size}", f"detector.width={image_size}"]


def grid_positions(shape, size):
    """Top-left corners (y, x) of the non-overlapping ``size`` tiles that fit in ``shape``."""
    return [(y, x) for y in range(0, shape[0] - size + 1, size) for x in range(0, shape[1] - size + 1, size)]


def read_simulated_dir(directory):
    """Read every simulated image of a directory written by ``ccdseg simulate``.

    Parameters
    ----------
    directory : str or Path
        Holds ``NAME.fits`` images with their ``NAME_truth.fits`` truth files.

    Returns
    -------
    list of (str, ndarray float32, ndarray uint8)
        File name, image (ADU) and labels, sorted by file name.

    Raises
    ------
    InputError
        No simulated image in the directory, or one that :func:`ccdseg.sim.truth.read_simulation` rejects.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(directory, "not a directory")
    files = sorted(p for p in directory.iterdir()
                   if p.name.lower().endswith(FITS_SUFFIXES) and "_truth." not in p.name)
    pairs = []
    for path in files:
        image, labels, _, _ = read_simulation(path)
        pairs.append((path.name, image.data, labels))
    if not pairs:
        raise InputError(directory, "no simulated images (NAME.fits with NAME_truth.fits)")
    return pairs


def split_tiles(pairs, size, val_fraction=VAL_FRACTION, seed=0):
    """Cut images into a grid of tiles and split the tiles at random into training and validation.

    Parameters
    ----------
    pairs : list of (name, image, labels)
        As returned by :func:`read_simulated_dir`.
    size : int
        Tile height and width (px).
    val_fraction : float
        Share of the tiles for validation, in [0, 1).
    seed : int
        Seed of the shuffle.

    Returns
    -------
    train, val : list of (int, int, int)
        Tiles as (image index, y, x).
    """
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction = {val_fraction!r}: must be in [0, 1)")
    tiles = [(i, y, x) for i, (_, image, _) in enumerate(pairs) for y, x in grid_positions(image.shape, size)]
    if not tiles:
        raise InputError(pairs[0][0], f"images are smaller than the tile size {size}")
    order = np.random.default_rng(seed).permutation(len(tiles))
    n_val = int(round(val_fraction * len(tiles)))
    return [tiles[i] for i in order[n_val:]], [tiles[i] for i in order[:n_val]]


def file_tiles(source, size=128, split="train", val_fraction=VAL_FRACTION, seed=0, order_seed=None,
               normalization=None):
    """Tiles of image files with their labels: simulated images or the user's labelled ones.

    Parameters
    ----------
    source : str, Path or list
        A directory of simulated images, or a list of (name, image ADU, labels) as
        :func:`read_simulated_dir` or :func:`ccdseg.nn.labelled.find_labelled_pairs` return it.
    size : int
        Tile height and width (px).
    split : {"train", "val"}
        ``train``: endless, the training tiles in a new random order on every pass;
        ``val``: each validation tile once, in a fixed order.
    val_fraction : float
        Share of the tiles kept for validation (see :func:`split_tiles`).
    seed : int
        Seed of the split.
    order_seed : int or numpy.random.SeedSequence, optional
        Seed of the order of training tiles; default ``seed``.
    normalization : dict, optional
        Normalisation parameters of the statistics (see :mod:`ccdseg.nn.normalize`).

    Yields
    ------
    image : ndarray (size, size) float32
        Tile in ADU.
    labels : ndarray (size, size) uint8
        Class of every pixel, or :data:`ccdseg.classes.IGNORE` where a labelled image says so.
    stats : NormalizationStats
        Pedestal of the tile's rows and noise (ADU), measured on the whole image.
    """
    if split not in ("train", "val"):
        raise ConfigError(f"split = {split!r}: must be 'train' or 'val'")
    pairs = read_simulated_dir(source) if isinstance(source, (str, Path)) else source
    train, val = split_tiles(pairs, size, val_fraction, seed)
    if split == "val":
        order = val
    else:
        if not train:
            raise InputError(pairs[0][0], "no training tiles left after the validation split")
        rng = np.random.default_rng(seed if order_seed is None else order_seed)
        order = (train[i] for _ in itertools.count() for i in rng.permutation(len(train)))
    inputs = {}  # of each image, prepared when its first tile is drawn
    for index, y, x in order:
        _, image, labels = pairs[index]
        if index not in inputs:
            inputs[index] = prepared(image, normalization)
        image, stats = inputs[index]
        yield image[y:y + size, x:x + size], labels[y:y + size, x:x + size], tile_stats(stats, y, size)


def mixed_tiles(streams, shares, seed=0):
    """Endless tiles mixed from several sources in given proportions.

    Parameters
    ----------
    streams : dict of str to iterator
        Source name -> endless stream of (image, labels, stats) tiles, as :func:`simulated_tiles`
        and :func:`file_tiles` yield them.
    shares : dict of str to float
        Source name -> share of the tiles (normalised to sum 1).
    seed : int or numpy.random.SeedSequence
        Seed of the draw that picks the source of each tile.

    Yields
    ------
    (image, labels, stats)
        The next tile of a source drawn with the given probabilities, as that source yields it.
    """
    names = list(streams)
    weights = np.array([shares[name] for name in names], dtype=float)
    if np.any(weights < 0) or weights.sum() <= 0:
        raise ConfigError(f"shares = {shares!r}: must be non-negative with a positive sum")
    rng = np.random.default_rng(seed)
    while True:
        yield next(streams[names[rng.choice(len(names), p=weights / weights.sum())]])


def flip_rotate(image, labels, rng):
    """Apply one of the 8 flips and 90° rotations, drawn with ``rng``, to an image and its labels.

    Parameters
    ----------
    image : ndarray (H, W)
        Any unit; for rotations H must equal W.
    labels : ndarray (H, W)
    rng : numpy.random.Generator

    Returns
    -------
    image, labels : ndarray (H, W)
        Contiguous copies, moved pixel for pixel alike.
    """
    k, flip = rng.integers(4), rng.integers(2)
    image, labels = np.rot90(image, k), np.rot90(labels, k)
    if flip:
        image, labels = image[:, ::-1], labels[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def jitter(image, stats, rng, gain_scale=(0.8, 1.25), pedestal_shift_adu=(-100.0, 100.0), extra_noise=(0.0, 0.3)):
    """Vary the readout of a raw tile: gain, pedestal and noise; its labels stay valid.

    The signal above the tile's median is scaled by a factor (a different gain), the whole
    tile shifted (another pedestal), and Gaussian noise added whose standard deviation is
    a fraction of the image's noise (so it is in the tile's ADU whatever the preset). The
    extra noise is kept small so that labelled charge stays visible. The statistics change
    as the image does, as if they had been measured on the whole changed image.

    Parameters
    ----------
    image : ndarray (H, W)
        Raw tile (ADU).
    stats : NormalizationStats
        Its rows' pedestal and the image noise (ADU).
    rng : numpy.random.Generator
    gain_scale : (float, float)
        Range of the gain factor, drawn log-uniformly.
    pedestal_shift_adu : (float, float)
        Range of the pedestal shift (ADU), drawn uniformly.
    extra_noise : (float, float)
        Range of the added noise as a fraction of the image noise, drawn uniformly.

    Returns
    -------
    image : ndarray (H, W) float32
        The changed tile (ADU).
    stats : NormalizationStats
        Its statistics.
    """
    image = np.asarray(image, dtype=np.float64)
    median = np.median(image)
    gain = np.exp(rng.uniform(np.log(gain_scale[0]), np.log(gain_scale[1])))
    shift = rng.uniform(*pedestal_shift_adu)
    noise = rng.uniform(*extra_noise)
    out = median + shift + gain * (image - median)
    out += rng.normal(0.0, gain * noise * stats.sigma, image.shape)
    changed = NormalizationStats(median + shift + gain * (np.asarray(stats.pedestal) - median),
                                 gain * stats.sigma * np.hypot(1.0, noise))
    return out.astype(np.float32), changed
