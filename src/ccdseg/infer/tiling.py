"""Cut an image of any size into overlapping tiles and blend per-tile outputs back together.

A network sees only a tile at a time; near a tile's edge it lacks context, so tiles overlap
and each tile's output is weighted by a Gaussian centred on the tile (as in nnU-Net) before
the weighted outputs are averaged. The tile positions form a Cartesian product of one start
list per axis, and the weight is a product of one 1-D Gaussian per axis, so the sum of the
weights at a pixel is the product of two 1-D sums: blending needs no (H, W) weight array.
Tiles arrive in raster order, so once a row of tiles is added, every image row above the next
row of tiles is final: :func:`blend_bands` keeps a (C, tile height, W) float32 accumulator only.
"""

from dataclasses import dataclass

import numpy as np

from ccdseg.errors import ConfigError
from ccdseg.infer import TILE_SIZE

#: Gaussian width as a fraction of the tile length (nnU-Net uses 1/8).
SIGMA_FRACTION = 1.0 / 8.0


def default_overlap(tile_size):
    """Overlap (px) used when none is given: 64 px, at most a quarter of the tile."""
    return min(64, tile_size // 4)


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one image lie.

    Attributes
    ----------
    shape : (int, int)
        Image shape (H, W).
    padded_shape : (int, int)
        Shape after padding: larger than ``shape`` only along an axis shorter than the tile.
    tile_shape : (int, int)
        Tile height and width (px); multiples of the ``multiple`` given to :func:`tile_grid`.
    rows, cols : tuple of int
        First row and first column of the tiles; every tile is ``rows x cols``.
    """

    shape: tuple
    padded_shape: tuple
    tile_shape: tuple
    rows: tuple
    cols: tuple

    @property
    def starts(self):
        """(row, column) of the top-left pixel of every tile, in raster order."""
        return [(y0, x0) for y0 in self.rows for x0 in self.cols]

    def __len__(self):
        return len(self.rows) * len(self.cols)


def _axis(n, tile, overlap, multiple):
    """Tile length, padded length and tile starts along one axis of length ``n``."""
    length = min(tile, -(-n // multiple) * multiple)  # short axis: one tile, rounded up to ``multiple``
    padded = max(n, length)
    if padded == length:
        return length, padded, (0,)
    starts = list(range(0, padded - length + 1, length - overlap))
    if starts[-1] != padded - length:
        starts.append(padded - length)
    return length, padded, tuple(starts)


def tile_grid(shape, tile_size=TILE_SIZE, overlap=64, multiple=1):
    """Tiles of ``tile_size`` px every ``tile_size - overlap`` px, the last one flush with the edge.

    Parameters
    ----------
    shape : (int, int)
        Image shape (H, W), each >= 1.
    tile_size : int
        Tile side (px); rounded up to a multiple of ``multiple``. An axis shorter than the tile
        gets a single tile of its length rounded up to ``multiple`` (the image is padded).
    overlap : int
        Pixels shared by neighbouring tiles, 0 <= overlap < tile_size.
    multiple : int
        Tile sides must be multiples of this (``2**depth`` for a U-Net).

    Returns
    -------
    TileGrid

    Raises
    ------
    ConfigError
        On a non-positive size or an overlap outside [0, tile_size).
    """
    height, width = (int(n) for n in shape)
    if height < 1 or width < 1:
        raise ConfigError(f"image shape must be positive, got {tuple(shape)}")
    if multiple < 1 or tile_size < 1:
        raise ConfigError(f"tile_size and multiple must be positive, got {tile_size} and {multiple}")
    tile = -(-int(tile_size) // multiple) * multiple
    if not 0 <= overlap < tile:
        raise ConfigError(f"overlap must be in [0, tile_size = {tile}) px, got {overlap}")
    th, hp, rows = _axis(height, tile, overlap, multiple)
    tw, wp, cols = _axis(width, tile, overlap, multiple)
    return TileGrid((height, width), (hp, wp), (th, tw), rows, cols)


def pad_image(image, grid):
    """Pad ``image`` at its bottom and right to ``grid.padded_shape`` by mirroring (see :func:`pad_to`)."""
    return pad_to(image, grid.padded_shape)


def pad_to(image, shape):
    """Pad ``image`` at its bottom and right to ``shape`` by mirroring.

    The mirror includes the edge pixel (``numpy.pad`` mode ``symmetric``) and repeats as often as
    needed, so an image smaller than the padding (5 x 7 into 16 x 16) works. Returns ``image``
    itself when no padding is needed.
    """
    image = np.asarray(image)
    extra = [(0, p - n) for p, n in zip(shape, image.shape, strict=True)]
    if not any(after for _, after in extra):
        return image
    return np.pad(image, extra, mode="symmetric")


def gaussian_weights(length, sigma_fraction=SIGMA_FRACTION):
    """1-D blending weights of a tile: a Gaussian of width ``length * sigma_fraction``, peak 1.

    Returns
    -------
    ndarray (length,), float32
        All > 0 (about 3e-4 at the tile edges for the default width).
    """
    u = np.arange(length, dtype=np.float64) - (length - 1) / 2
    return np.exp(-0.5 * (u / (sigma_fraction * length)) ** 2).astype(np.float32)


def blend(outputs, grid, channels):
    """Gaussian-weighted average of overlapping tile outputs over the whole image.

    Parameters
    ----------
    outputs : iterable of ((int, int), ndarray (channels, th, tw))
        ``(start, output)`` per tile, in the raster order of ``grid.starts``.
    grid : TileGrid
    channels : int
        Channels of every tile output.

    Returns
    -------
    ndarray (channels, H, W), float32
        The blended output (see :func:`blend_bands`), whole.
    """
    total = np.empty((channels, *grid.shape), dtype=np.float32)
    for rows, band in blend_bands(outputs, grid, channels):
        total[:, rows] = band
    return total


def blend_bands(outputs, grid, channels):
    """Gaussian-weighted average of overlapping tile outputs, yielded band by band of image rows.

    Parameters
    ----------
    outputs : iterable of ((int, int), ndarray (channels, th, tw))
        ``(start, output)`` per tile, in the raster order of ``grid.starts``; consumed one at a
        time (a generator keeps only one batch of tile outputs in memory).
    grid : TileGrid
    channels : int
        Channels of every tile output.

    Yields
    ------
    rows : slice
        Image rows of the band; the bands cover rows 0 to H - 1 in order.
    band : ndarray (channels, rows, W), float32
        The blended output of those rows, cropped to the image width. Pixels covered by one
        tile get that tile's value; where tiles overlap, the one whose centre is nearer
        dominates. Valid until the next band is requested.

    Raises
    ------
    ValueError
        If the outputs do not come in raster order.
    """
    th, tw = grid.tile_shape
    wy, wx = gaussian_weights(th), gaussian_weights(tw)
    weight = np.outer(wy, wx)
    norm_rows = np.zeros(grid.padded_shape[0], dtype=np.float32)
    norm_cols = np.zeros(grid.padded_shape[1], dtype=np.float32)
    for y0 in grid.rows:
        norm_rows[y0:y0 + th] += wy
    for x0 in grid.cols:
        norm_cols[x0:x0 + tw] += wx
    height, width = grid.shape
    # rows top .. top + th of the padded image; rows above the current tile row are final
    total = np.zeros((channels, th, grid.padded_shape[1]), dtype=np.float32)
    weighted = np.empty((channels, th, tw), dtype=np.float32)
    outputs = iter(outputs)
    for index, top in enumerate(grid.rows):
        for x0 in grid.cols:
            start, output = next(outputs)
            if start != (top, x0):
                raise ValueError(f"tile outputs must come in raster order: expected {(top, x0)}, got {start}")
            np.multiply(output, weight, out=weighted)
            total[:, :, x0:x0 + tw] += weighted
        last = index == len(grid.rows) - 1
        done = min(height, top + th) - top if last else grid.rows[index + 1] - top
        band = total[:, :done, :width]
        band /= norm_rows[top:top + done, None]
        band /= norm_cols[:width]
        yield slice(top, top + done), band
        # the rows below the band carry over to the next row of tiles
        total[:, :th - done] = total[:, done:].copy()
        total[:, th - done:] = 0.0
