"""The amplifier segments of an image: the regions read by different amplifiers, each with its own zero and noise.

A CCD read by several amplifiers gives one image whose parts differ in pedestal, noise and gain. The
segments come from the header where it says (in this order):

- ``DATASECA``, ``DATASECB``, ... (one data section per amplifier, IRAF/NOAO style); ``DATASEC`` alone
  is one amplifier's data section;
- LTA (``CCDNCOL``, ``CCDNPRES``): one amplifier per image, the first ``CCDNPRES`` columns prescan and
  the columns after ``CCDNPRES + CCDNCOL / 2`` overscan;
- DAMIC-M (``PRESCAN``, ``PHYSCOL``, ``NCOLPRE``, ``NSBIN``): the columns read before the first physical
  column (``PRESCAN - NCOLPRE`` of them) are prescan and those after ``PRESCAN + PHYSCOL`` overscan; in the
  bundled partial readout (``NCOLPRE = 3900``) every column read is active;

otherwise from the data: a column (row) boundary at an even split of the image (1/2, 1/3, 1/4, ... of
the width, within a few pixels) where the pedestal steps in most rows (columns) by more than the
neighbouring columns of the image ever do, and where the noise does not rise with it (a step of glow
is charge and brings its shot noise; an amplifier's pedestal does not). Sections are in the IRAF/NOAO
convention ``[x1:x2,y1:y2]``: 1-based, inclusive.
"""

import re
from dataclasses import dataclass

import numpy as np

from ccdseg.calib.background import robust_sigma, row_pedestal, sample_rows
from ccdseg.calib.gain import GainEstimate, estimate_gain
from ccdseg.errors import ConfigError

_SECTION = re.compile(r"^\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")
_LAYOUT = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")
#: Layouts of :func:`find_segments` besides ``"COLSxROWS"``.
LAYOUTS = ("auto", "none")
#: Most amplifiers along one axis that the data-driven search considers.
_MAX_SPLIT = 4
#: Columns (rows) on each side of a boundary whose per-row medians are compared.
_STEP_WINDOW = 8


@dataclass(frozen=True)
class Segment:
    """One amplifier's region of an image.

    Attributes
    ----------
    rows, cols : slice
        The region (0-based, end exclusive).
    pedestal : float
        Median pedestal (ADU).
    noise : float
        Robust noise of the row-pedestal-subtracted pixels (ADU).
    gain : GainEstimate or None
        Measured gain, or None where single-electron peaks are not resolved.
    """

    rows: slice
    cols: slice
    pedestal: float
    noise: float
    gain: GainEstimate | None = None

    @property
    def section(self):
        """The region as a FITS section string ``[x1:x2,y1:y2]`` (1-based, inclusive)."""
        return f"[{self.cols.start + 1}:{self.cols.stop},{self.rows.start + 1}:{self.rows.stop}]"


def parse_section(value, shape, key="DATASEC"):
    """Slices ``(rows, cols)`` of a FITS section ``[x1:x2,y1:y2]`` within an image of ``shape``.

    Raises
    ------
    ConfigError
        The section is malformed or lies outside the image.
    """
    match = _SECTION.match(str(value))
    if not match:
        raise ConfigError(f"{key} {value!r} is not of the form [x1:x2,y1:y2]")
    x1, x2, y1, y2 = (int(v) for v in match.groups())
    if not (1 <= x1 <= x2 <= shape[1] and 1 <= y1 <= y2 <= shape[0]):
        raise ConfigError(f"{key} {value!r} lies outside the {shape[1]} x {shape[0]} image")
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def data_section(header, shape):
    """Slices of the data section (``DATASEC``) of an image, or None when the header has none.

    Raises
    ------
    ConfigError
        ``DATASEC`` is malformed or outside the image.
    """
    value = header.get("DATASEC")
    return None if value is None else parse_section(value, shape)


def parse_layout(layout):
    """``"auto"``, ``"none"`` or ``(cols, rows)`` from an amplifier layout option like ``"2x2"``.

    Raises
    ------
    ConfigError
        Anything else.
    """
    if layout in LAYOUTS:
        return layout
    match = _LAYOUT.match(layout) if isinstance(layout, str) else None
    if not match or min(int(v) for v in match.groups()) < 1:
        raise ConfigError(f"amplifiers must be 'auto', 'none' or COLSxROWS like '2x2', got {layout!r}")
    return int(match.group(1)), int(match.group(2))


def header_sections(headers, shape):
    """Amplifier regions ``[(rows, cols), ...]`` that the headers describe, or None when they say nothing.

    Parameters
    ----------
    headers : sequence of astropy.io.fits.Header
        The image's header first, then the primary's; the first that names a key wins.
    shape : tuple
        Image shape (H, W).
    """
    headers = [header for header in headers if header is not None]

    def get(key):
        return next((header[key] for header in headers if key in header), None)

    per_amplifier = [(key, header[key]) for header in headers[:1] for key in header
                     if re.fullmatch(r"DATASEC[A-Z]", key)]
    if per_amplifier:
        return [parse_section(value, shape, key) for key, value in sorted(per_amplifier)]
    if get("DATASEC") is not None:
        return [parse_section(get("DATASEC"), shape)]
    if get("CCDNCOL") is not None and get("CCDNPRES") is not None:
        first = int(get("CCDNPRES"))
        return [_columns(shape, first, first + int(get("CCDNCOL")) // 2)]
    if get("PRESCAN") is not None and get("PHYSCOL") is not None:
        binning, already = max(int(get("NSBIN") or 1), 1), int(get("NCOLPRE") or 0)
        first = int(get("PRESCAN")) - already
        return [_columns(shape, first // binning, (first + int(get("PHYSCOL"))) // binning)]
    return None


def _columns(shape, first, stop):
    """All rows and the columns ``first:stop`` clipped to the image (the whole width when nothing is left)."""
    first, stop = max(first, 0), min(stop, shape[1])
    return (slice(0, shape[0]), slice(first, stop) if stop > first else slice(0, shape[1]))


def grid_sections(shape, cols, rows):
    """Regions ``[(rows, cols), ...]`` of an even ``cols x rows`` grid, row-major from the first pixel."""
    ys = np.linspace(0, shape[0], rows + 1).round().astype(int)
    xs = np.linspace(0, shape[1], cols + 1).round().astype(int)
    return [(slice(ys[j], ys[j + 1]), slice(xs[i], xs[i + 1])) for j in range(rows) for i in range(cols)]


def step_boundaries(image):
    """Columns at which the pedestal steps in most rows, at even splits of the width (0-based, sorted).

    Parameters
    ----------
    image : ndarray (H, W)
        Image in ADU; non-finite pixels are ignored. Transpose it for row boundaries.

    Returns
    -------
    list of int
        Index of the first column of each new amplifier.
    """
    data = np.asarray(image[sample_rows(np.shape(image))], dtype=np.float64)
    width = data.shape[1]
    if width < 4 * _STEP_WINDOW or data.shape[0] < 3:
        return []
    candidates = sorted({round(width * k / n) for n in range(2, _MAX_SPLIT + 1) for k in range(1, n)})
    # the null distribution: steps at columns that are no candidate boundary
    others = np.linspace(2 * _STEP_WINDOW, width - 2 * _STEP_WINDOW, 48).round().astype(int)
    others = [x for x in others if min(abs(x - c) for c in candidates) > 2 * _STEP_WINDOW]
    if not others:
        return []
    null = np.abs(np.concatenate([_row_steps(data, x) for x in others]))
    null = null[np.isfinite(null)]
    if null.size == 0:
        return []
    # three times the 90th percentile (~5 sigma of Gaussian steps): a glow edge or hot column among them is no matter
    threshold = max(3 * np.percentile(null, 90.0), 1e-12)
    found = []
    for candidate in candidates:
        steps = {x: _row_steps(data, x) for x in range(candidate - 2, candidate + 3)}
        shares = {x: np.mean(np.abs(v[np.isfinite(v)]) > threshold) if np.isfinite(v).any() else 0.0
                  for x, v in steps.items()}
        stepping = [x for x, share in shares.items() if share >= 0.4]
        if stepping:
            # the windows see the step from a few columns away: the boundary is where neighbours differ most
            best = max(stepping, key=lambda x: abs(np.nanmedian(data[:, x] - data[:, x - 1])))
            if not _noise_rises(data, best):
                found.append(best)
    return sorted(set(found))


def _row_steps(data, x):
    """Per-row difference of the medians of the ``_STEP_WINDOW`` columns right and left of column ``x``."""
    left = data[:, max(x - _STEP_WINDOW, 0):x]
    right = data[:, x:x + _STEP_WINDOW]
    return np.median(right, axis=1) - np.median(left, axis=1)


def _noise_rises(data, x, factor=1.5, max_noise_e=20.0):
    """Whether a step at column ``x`` is charge (glow), not a pedestal.

    Charge makes the higher side noisier by ``factor``, and the step small enough for the extra noise
    to be its shot noise.
    Charge of N e- at a gain g adds g N to the level and g**2 N to the variance, so the step is the added
    variance over g; with a readout noise below ``max_noise_e`` electrons, g is at least the lower side's
    noise over ``max_noise_e``, which bounds the step that charge can make.
    """
    window = 4 * _STEP_WINDOW
    sides = data[:, max(x - window, 0):x], data[:, x:x + window]
    noise = [robust_sigma(np.diff(side, axis=1)) / np.sqrt(2) for side in sides]
    levels = [np.nanmedian(side) for side in sides]
    higher = int(levels[1] > levels[0])
    low_noise = max(noise[1 - higher], 1e-12)
    added_variance = noise[higher] ** 2 - low_noise ** 2
    step = abs(levels[1] - levels[0])
    return noise[higher] > factor * low_noise and step <= max_noise_e * added_variance / low_noise


def detect_sections(image):
    """Amplifier regions ``[(rows, cols), ...]`` from the pedestal steps of the image (one region if none)."""
    xs = [0, *step_boundaries(image), image.shape[1]]
    ys = [0, *step_boundaries(np.asarray(image).T), image.shape[0]]
    return [(slice(ys[j], ys[j + 1]), slice(xs[i], xs[i + 1])) for j in range(len(ys) - 1) for i in range(len(xs) - 1)]


def find_segments(image, headers=(), *, layout="auto", gain=True):
    """The amplifier segments of an image, each with its pedestal, noise and (when resolved) gain.

    Parameters
    ----------
    image : ndarray (H, W)
        Image in ADU; NaN pixels (e.g. outside ``DATASEC``) are left out of the statistics.
    headers : sequence of astropy.io.fits.Header
        Image header first, then the primary header; consulted with ``layout="auto"``.
    layout : {"auto", "none"} or str
        ``"auto"``: from the headers, else from the data; ``"none"``: one segment, the ``DATASEC`` of
        the image header or else the whole image;
        ``"COLSxROWS"`` (e.g. ``"2x2"``): an even grid.
    gain : bool
        Measure each segment's gain (:func:`ccdseg.calib.gain.estimate_gain`).

    Returns
    -------
    list of Segment
        Row-major, covering the analysed part of the image.
    """
    layout = parse_layout(layout)
    shape = np.shape(image)
    if layout == "none":
        section = data_section(headers[0], shape) if headers and headers[0] is not None else None
        sections = [section or (slice(0, shape[0]), slice(0, shape[1]))]
    elif layout == "auto":
        sections = header_sections(headers, shape) or detect_sections(image)
    else:
        sections = grid_sections(shape, *layout)
    return [_measure(image, rows, cols, gain) for rows, cols in sections]


def _measure(image, rows, cols, gain):
    block = np.asarray(image[rows, cols], dtype=np.float64)
    sample = block[sample_rows(block.shape)]
    finite = sample[np.isfinite(sample)]
    pedestal = float(np.median(finite)) if finite.size else 0.0
    noise = robust_sigma(sample - row_pedestal(sample)[:, None])
    return Segment(rows, cols, pedestal, noise, estimate_gain(sample) if gain else None)
