"""Segment a whole CCD image with a trained network, tile by tile.

The normalisation statistics (per-row pedestal, noise) are computed once on the whole image,
so that every tile is scaled alike and no seam appears where a tile's own statistics would
differ from its neighbour's. Tiles overlap and are blended with Gaussian weights
(:mod:`ccdseg.infer.tiling`). On the CPU the network runs in channels_last layout under bf16
autocast (about 2x and 1.7x faster on AVX-512 CPUs, see ``perf-notes.md``); softmax and
blending are in float32. With ``engine="onnx"`` the tiles go through ONNX Runtime instead
(:mod:`ccdseg.infer.onnx`; always float32); only the step "batch of normalised tiles ->
probabilities" differs between the engines.
"""

import contextlib
import ctypes
import functools
import platform
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ccdseg.checks import check_image
from ccdseg.classes import BACKGROUND, CLUSTER, N_CLASSES
from ccdseg.errors import ConfigError, ModelFileError
from ccdseg.infer import ENGINES, PRECISIONS, TILE_SIZE
from ccdseg.infer.onnx import OnnxModel, is_onnx_path, load_onnx_model
from ccdseg.infer.tiling import blend_bands, default_overlap, pad_to, tile_grid
from ccdseg.nn.model import Model, input_multiple, load_model
from ccdseg.nn.normalize import normalization_stats, normalize

_MODELS = {}


def get_model(model=None, device="cpu", engine="torch"):
    """The model to use, loading model files once per process.

    Parameters
    ----------
    model : Model, OnnxModel, str, path-like or None
        A loaded model (moved to ``device``), a model file, or None for the shipped model;
        with ``engine="onnx"`` also an ``.onnx`` file (:func:`ccdseg.infer.onnx.export_onnx`).
    device : str or torch.device
    engine : {"torch", "onnx"}
        PyTorch, or ONNX Runtime (a ccdseg model file is then exported in memory).

    Returns
    -------
    Model or OnnxModel
        A :class:`~ccdseg.nn.model.Model` in eval mode, on ``device``, with its network in
        channels_last layout; an :class:`~ccdseg.infer.onnx.OnnxModel` for the onnx engine.

    Raises
    ------
    ModelFileError
        The file is missing or not a usable ccdseg model (or an ONNX file for the torch engine).
    ConfigError
        An unknown engine or device, a CUDA device on a machine without CUDA, or the onnx
        engine without onnxruntime installed.
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    _check_device(device, engine)
    if engine == "torch":
        if isinstance(model, OnnxModel) or is_onnx_path(model):
            raise ModelFileError(getattr(model, "path", model), "an ONNX model runs only with engine 'onnx'")
        if isinstance(model, Model):
            return _prepare(model, device)
    elif isinstance(model, OnnxModel):
        return model
    elif isinstance(model, Model):  # exported afresh: the network may have changed since it was loaded
        return load_onnx_model(model, device)
    key = (None, str(device), engine) if model is None else _file_key(model, device, engine)
    if key not in _MODELS:
        _MODELS[key] = (load_onnx_model(model, device) if engine == "onnx"
                        else _prepare(load_model(model, device=device), device))
    return _MODELS[key]


def _check_device(device, engine):
    """Refuse a device this machine lacks in words (loading onto it fails like a damaged model file)."""
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be cpu, cuda or cuda:N, got {device!r}") from None
    if kind == "cuda" and engine == "torch" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine (no GPU, no driver, "
                          "or a CPU-only PyTorch)")


def _file_key(path, device, engine):
    # the modification time makes a rewritten model file (retraining) load afresh
    path = Path(path).resolve()
    stamp = path.stat().st_mtime_ns if path.is_file() else None
    return (str(path), stamp, str(device), engine)


def _prepare(model, device):
    model.net.to(device=device, memory_format=torch.channels_last).eval()
    return model


def segment(image, model=None, tile_size=TILE_SIZE, overlap=None, batch_size=1, device="cpu", precision="bf16",
            return_probabilities=True, engine="torch", stats=None, cluster_threshold=None, progress=False):
    """Label every pixel of a raw image as background, glowing, hot pixel or cluster.

    The frame is processed in bands of one row of tiles: each band is normalised, run through
    the network, blended and decided before the next, so the memory beyond the image, the
    labels and what ``return_probabilities`` asks for is a few tile rows, at any frame size.

    Parameters
    ----------
    image : ndarray (H, W)
        Raw image in ADU, any pedestal and gain; any size (images smaller than a tile are
        padded by mirroring). NaN/Inf pixels are left out of the normalisation statistics and
        labelled BACKGROUND (set pixels to NaN to exclude them, e.g. an overscan).
    model : Model, OnnxModel, str, path-like or None
        See :func:`get_model`; None is the model shipped with ccdseg.
    tile_size : int
        Tile side (px), rounded up to a multiple of the network's input multiple. Larger tiles
        spend less of the work on overlap (64 px overlap: 1.27x the work of no overlap for
        512 px tiles on a 4096 x 4096 frame, 1.72x for 256 px tiles).
    overlap : int, optional
        Pixels shared by neighbouring tiles (0 <= overlap < tile_size); default 64 px (at
        most a quarter of the tile). Neighbouring tiles'
        Gaussian weights cross over in the middle of the overlap, so each pixel is mostly
        predicted at least ``overlap / 2`` px from a tile edge.
    batch_size : int
        Tiles per forward pass. On the CPU one 512 px tile keeps every activation buffer of
        the default network below glibc's reuse limit (32 MiB); larger batches were no faster.
    device : str or torch.device
        "cpu" or "cuda".
    precision : {"bf16", "fp32"}
        bf16 autocast of the network (convolutions in bfloat16, softmax in float32) or plain
        float32; the onnx engine needs "fp32". On a CPU without native bf16 arithmetic
        (no AVX-512 BF16 or AMX, e.g. AVX2 only) "bf16" runs in float32: emulated bf16 was
        6-8x slower there (``benchmarks/results/network_choice.md``).
    return_probabilities : bool or "cluster"
        True: also return the class probabilities (N_CLASSES, H, W) float32. "cluster": only
        the cluster probability (H, W) as float16 (what the catalogue uses, 2 bytes a pixel).
        False: None.
    engine : {"torch", "onnx"}
        Run the network with PyTorch or with ONNX Runtime (see :func:`get_model`).
    stats : NormalizationStats, optional
        ``normalization_stats(image, model.normalization)`` when the caller has it already
        (the pipeline's catalogue uses the same pedestal); computed here otherwise.
    cluster_threshold : float, optional
        Operating point of the cluster class (see :func:`decide`): None labels every pixel
        with its most probable class; a probability in (0, 1] labels CLUSTER wherever the
        cluster probability reaches it, trading false clusters for fainter ones found.
    progress : bool
        Show a progress bar over the tiles (on stderr).

    Returns
    -------
    labels : ndarray (H, W), uint8
        Class ids of :mod:`ccdseg.classes`.
    probabilities : ndarray (N_CLASSES, H, W) float32, ndarray (H, W) float16, or None
        Blended softmax probabilities (1 for BACKGROUND at NaN/Inf pixels), as
        ``return_probabilities`` asks.

    Raises
    ------
    ConfigError
        On a non-2-D or empty image or an invalid option.
    ModelFileError
        If ``model`` names a missing or unusable model file.
    """
    image = check_image(image)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if cluster_threshold is not None and not 0 < cluster_threshold <= 1:
        raise ConfigError(f"cluster_threshold must be a probability in (0, 1], got {cluster_threshold!r}")
    if return_probabilities not in (True, False, "cluster"):
        raise ConfigError(f"return_probabilities must be True, False or 'cluster', got {return_probabilities!r}")
    if engine == "onnx" and precision != "fp32":
        raise ConfigError(f"the onnx engine computes in float32: use precision 'fp32', not {precision!r}")
    model = get_model(model, device, engine)
    run_batch = model.probabilities if engine == "onnx" else _torch_engine(model.net, device, precision)
    overlap = default_overlap(tile_size) if overlap is None else overlap
    grid = tile_grid(image.shape, tile_size, overlap, multiple=input_multiple(model.arch))
    stats = normalization_stats(image, model.normalization) if stats is None else stats
    labels = np.empty(image.shape, dtype=np.uint8)
    probabilities = {True: np.empty((N_CLASSES, *image.shape), dtype=np.float32),
                     "cluster": np.empty(image.shape, dtype=np.float16), False: None}[return_probabilities]
    outputs = _tile_outputs(run_batch, image, model.normalization, stats, grid, batch_size)
    # one refresh per band of tiles: few enough to draw every one, so the bar ends at its total
    bar = tqdm(total=len(grid.rows) * len(grid.cols), desc="tiles", unit="tile", disable=not progress,
               leave=False, mininterval=0)
    with _freed_memory_kept(engine == "torch" and torch.device(device).type == "cpu"):
        for rows, band in blend_bands(outputs, grid, N_CLASSES):
            bar.update(len(grid.cols))
            invalid = ~np.isfinite(image[rows])
            labels[rows] = decide(band, cluster_threshold)
            labels[rows][invalid] = BACKGROUND
            if return_probabilities is True:
                probabilities[:, rows] = band
                probabilities[:, rows][:, invalid] = 0.0
                probabilities[BACKGROUND, rows][invalid] = 1.0
            elif return_probabilities == "cluster":
                probabilities[rows] = band[CLUSTER]
                probabilities[rows][invalid] = 0.0
    bar.close()
    return labels, probabilities


def decide(probabilities, cluster_threshold=None):
    """Class of every pixel from its class probabilities.

    Parameters
    ----------
    probabilities : ndarray (N_CLASSES, H, W)
    cluster_threshold : float, optional
        None: the most probable class. A probability: CLUSTER wherever the cluster
        probability is at least this, else the most probable class. Below 0.5 it finds
        fainter clusters and more false ones (``benchmarks/accuracy.py`` compares methods at
        equal false-cluster rates this way).

    Returns
    -------
    ndarray (H, W) uint8
    """
    labels = _argmax(probabilities)
    if cluster_threshold is not None:
        labels[probabilities[CLUSTER] >= cluster_threshold] = CLUSTER
    return labels


def _argmax(probabilities):
    """``np.argmax(probabilities, axis=0)`` as uint8, ~3x faster than numpy's reduction across planes."""
    labels = np.zeros(probabilities.shape[1:], dtype=np.uint8)
    best = probabilities[0].copy()
    for c in range(1, len(probabilities)):
        labels[probabilities[c] > best] = c  # strictly greater: a tie keeps the lower class, as argmax does
        np.maximum(best, probabilities[c], out=best)
    return labels


def _torch_engine(net, device, precision):
    """Function from normalised tiles (N, 1, H, W) float32 to probabilities (N, C, H, W) float32."""
    device_type = torch.device(device).type
    bf16 = precision == "bf16"
    if device_type == "cpu":
        bf16 = bf16 and _native_bf16()

    def run_batch(tiles):
        with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
            x = torch.from_numpy(tiles).to(device).contiguous(memory_format=torch.channels_last)
            return torch.softmax(net(x).float(), dim=1).cpu().numpy()

    return run_batch


@functools.cache
def _native_bf16():
    """Whether this CPU computes bf16 convolutions natively (AVX-512 BF16 or AMX); else oneDNN emulates them."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return True


#: glibc mallopt parameters.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@contextlib.contextmanager
def _freed_memory_kept(enabled=True):
    """While the network runs, make glibc's malloc keep freed memory for reuse; hand it back after.

    By default large activation buffers are mapped afresh and zeroed by the kernel at every
    forward pass: ~1.4 million page faults and seconds of system time per 4096 x 4096 frame
    (``perf-notes.md``). Raising the mmap threshold to its maximum (32 MiB) and the trim threshold
    far above it cuts the faults ~10x. Kept after the network, the same settings would hold every
    freed band of the catalogue's whole-frame work (GBs on a 10000 x 10000 frame): on leaving, arrays
    from 1 MiB are mapped again (returned when freed) and the heap is trimmed. Other C libraries (or a
    preloaded tcmalloc, which is faster still) are left alone.
    """
    libc = _glibc() if enabled else None
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 20)
        libc.mallopt(_M_TRIM_THRESHOLD, 8 << 20)
        libc.malloc_trim(0)


@functools.cache
def _glibc():
    """The C library when it is glibc, else None."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _tile_outputs(run_batch, image, params, stats, grid, batch_size):
    """Yield ``(start, probabilities (C, th, tw) float32)`` for every tile of ``grid``, in raster order.

    The network input is made one row of tiles at a time (normalised with the statistics of
    the whole image, padded by mirroring where the image is shorter than a tile).
    """
    th, tw = grid.tile_shape
    for y0 in grid.rows:
        rows = slice(y0, y0 + th)
        band = normalize(image[rows], params, stats=(stats.pedestal[rows], stats.sigma))
        band = pad_to(band, (th, grid.padded_shape[1]))
        starts = [(y0, x0) for x0 in grid.cols]
        for first in range(0, len(starts), batch_size):
            batch = starts[first:first + batch_size]
            tiles = np.stack([band[:, x0:x0 + tw] for _, x0 in batch])
            yield from zip(batch, run_batch(tiles[:, None]), strict=True)
