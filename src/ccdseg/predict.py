"""Segment a whole CCD image with a trained network, tile by tile.

The normalisation statistics (per-row pedestal, noise) are computed once on the whole image,
so that every tile is scaled alike and no seam appears where a tile's own statistics would
differ from its neighbour's. Tiles overlap and are blended with Gaussian weights
(:mod:`ccdseg.tiling`). On the CPU the network runs in channels_last layout under bf16
autocast (about 2x and 1.7x faster on AVX-512 CPUs, see ``perf-notes.md``); softmax and
blending are in float32.
"""

from pathlib import Path

import numpy as np
import torch

from ccdseg.classes import BACKGROUND, N_CLASSES
from ccdseg.errors import ConfigError
from ccdseg.model import Model, load_model
from ccdseg.normalize import normalization_stats, normalize
from ccdseg.tiling import blend, pad_image, tile_grid

PRECISIONS = ("bf16", "fp32")
#: Rows normalised (and labelled) at a time: bounds the float64 temporaries of a full frame.
_ROW_BLOCK = 512

_MODELS = {}


def get_model(model=None, device="cpu"):
    """The :class:`~ccdseg.model.Model` to use, loading model files once per process.

    Parameters
    ----------
    model : Model, str, path-like or None
        A loaded model (moved to ``device``), a model file, or None for the shipped model.
    device : str or torch.device

    Returns
    -------
    Model
        In eval mode, on ``device``, with its network in channels_last layout.

    Raises
    ------
    ModelFileError
        The file is missing or not a usable ccdseg model.
    """
    if isinstance(model, Model):
        return _prepare(model, device)
    key = (None, str(device)) if model is None else _file_key(model, device)
    if key not in _MODELS:
        _MODELS[key] = _prepare(load_model(model, device=device), device)
    return _MODELS[key]


def _file_key(path, device):
    # the modification time makes a rewritten model file (retraining) load afresh
    path = Path(path).resolve()
    stamp = path.stat().st_mtime_ns if path.is_file() else None
    return (str(path), stamp, str(device))


def _prepare(model, device):
    model.net.to(device=device, memory_format=torch.channels_last).eval()
    return model


def segment(image, model=None, tile_size=256, overlap=None, batch_size=8, device="cpu", precision="bf16",
            return_probabilities=True):
    """Label every pixel of a raw image as background, glowing, hot pixel or cluster.

    Parameters
    ----------
    image : ndarray (H, W)
        Raw image in ADU, any pedestal and gain; any size (images smaller than a tile are
        padded by mirroring). NaN/Inf pixels are left out of the normalisation statistics and
        labelled BACKGROUND (set pixels to NaN to exclude them, e.g. an overscan).
    model : Model, str, path-like or None
        See :func:`get_model`; None is the model shipped with ccdseg.
    tile_size : int
        Tile side (px), rounded up to a multiple of ``2**depth`` of the network.
    overlap : int, optional
        Pixels shared by neighbouring tiles (0 <= overlap < tile_size); default a quarter of
        the tile (64 px for 256 px tiles: 1.8x the work of tiles without overlap). Neighbouring tiles'
        Gaussian weights cross over in the middle of the overlap, so each pixel is mostly
        predicted at least ``overlap / 2`` px from a tile edge.
    batch_size : int
        Tiles per forward pass.
    device : str or torch.device
        "cpu" or "cuda".
    precision : {"bf16", "fp32"}
        bf16 autocast of the network (convolutions in bfloat16, softmax in float32) or plain
        float32.
    return_probabilities : bool
        Also return the class probabilities.

    Returns
    -------
    labels : ndarray (H, W), uint8
        Class ids of :mod:`ccdseg.classes`.
    probabilities : ndarray (N_CLASSES, H, W), float32, or None
        Blended softmax probabilities (1 for BACKGROUND at NaN/Inf pixels).

    Raises
    ------
    ConfigError
        On a non-2-D or empty image or an invalid option.
    ModelFileError
        If ``model`` names a missing or unusable model file.
    """
    image = np.asarray(image)
    if image.ndim != 2 or 0 in image.shape:
        raise ConfigError(f"image must be a non-empty 2-D array, got shape {image.shape}")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    model = get_model(model, device)
    overlap = tile_size // 4 if overlap is None else overlap
    grid = tile_grid(image.shape, tile_size, overlap, multiple=2 ** model.arch["depth"])
    network_input = pad_image(_normalized(image, model.normalization), grid)
    outputs = _tile_outputs(model.net, network_input, grid, batch_size, device, precision)
    probabilities = blend(outputs, grid, N_CLASSES)
    del network_input
    labels = np.empty(image.shape, dtype=np.uint8)
    for y0 in range(0, image.shape[0], _ROW_BLOCK):
        rows = slice(y0, y0 + _ROW_BLOCK)
        labels[rows] = np.argmax(probabilities[:, rows], axis=0)
        invalid = ~np.isfinite(image[rows])
        if invalid.any():
            labels[rows][invalid] = BACKGROUND
            probabilities[:, rows][:, invalid] = 0.0
            probabilities[BACKGROUND, rows][invalid] = 1.0
    return labels, (probabilities if return_probabilities else None)


def _normalized(image, params):
    """Network input of the whole image, float32, with statistics of the whole image."""
    stats = normalization_stats(image, params)
    out = np.empty(image.shape, dtype=np.float32)
    for y0 in range(0, image.shape[0], _ROW_BLOCK):
        rows = slice(y0, y0 + _ROW_BLOCK)
        out[rows] = normalize(image[rows], params, stats=(stats.pedestal[rows], stats.sigma))
    return out


def _tile_outputs(net, network_input, grid, batch_size, device, precision):
    """Yield ``(start, probabilities (C, th, tw) float32)`` for every tile of ``grid``."""
    th, tw = grid.tile_shape
    starts = grid.starts
    device_type = torch.device(device).type
    with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        for first in range(0, len(starts), batch_size):
            batch = starts[first:first + batch_size]
            tiles = np.stack([network_input[y0:y0 + th, x0:x0 + tw] for y0, x0 in batch])
            x = torch.from_numpy(tiles[:, None]).to(device).contiguous(memory_format=torch.channels_last)
            probabilities = torch.softmax(net(x).float(), dim=1).cpu().numpy()
            yield from zip(batch, probabilities)

