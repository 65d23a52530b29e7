"""FITS input and output at the edge of the package.

Reading finds every HDU holding a 2-D image (the primary HDU may be empty, as in DAMIC-M
``.fz`` files), whatever the compression (RICE tiles, gzip) or the data type; writing goes
to a temporary file in the target directory that is renamed into place only when complete,
so a crash or an interrupt never leaves a half-written output and inputs are never opened
for writing.
"""

import contextlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.utils.exceptions import AstropyUserWarning

from ccdseg.errors import InputError, OutputError

#: File name endings recognised as FITS, longest first (the stem is what precedes them).
FITS_SUFFIXES = (".fits.fz", ".fits.gz", ".fit.gz", ".fits", ".fit", ".fts", ".fz")


@dataclass
class ImageData:
    """One 2-D image HDU of a file."""

    data: np.ndarray      # float32, native byte order, NaN/Inf kept as they are
    header: fits.Header   # the HDU's header (for compressed HDUs, the image header)
    name: str             # EXTNAME without trailing spaces, or "" when unnamed
    index: int            # position of the HDU in the file

    @property
    def label(self):
        """Name for messages and output extensions: the EXTNAME or the index."""
        return self.name or str(self.index)


def fits_stem(path):
    """File name without its FITS ending: ``run1.fits.fz`` -> ``run1``."""
    name = Path(path).name
    for suffix in FITS_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def read_images(path, hdu=None):
    """Read the 2-D image HDUs of a FITS file.

    Parameters
    ----------
    path : str or Path
        FITS file: plain, multi-extension, tile-compressed (``.fz``) or gzipped.
    hdu : str or int, optional
        Only this HDU: an EXTNAME (case and trailing spaces ignored) or an index.

    Returns
    -------
    list of ImageData
        In file order; HDUs without data or with other than 2 dimensions are skipped.

    Raises
    ------
    InputError
        Missing, empty, unreadable or truncated file, no 2-D image, or no such HDU; the
        message names the file and the problem.
    """
    path = Path(path)
    _check_readable(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            warnings.filterwarnings("error", "File may have been truncated", AstropyUserWarning)
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
                return _select_images(path, hdul, hdu)
    except InputError:
        raise
    except AstropyUserWarning as warning:
        detail = _reason(warning).removeprefix("File may have been truncated: ")
        raise InputError(path, f"truncated file ({detail})") from None
    except (OSError, ValueError, TypeError, IndexError, EOFError, fits.verify.VerifyError,
            fits.verify.VerifyWarning) as error:
        raise InputError(path, f"not a readable FITS file ({_reason(error)})") from None


def _check_readable(path):
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, not a FITS file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file")


def _reason(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _select_images(path, hdul, hdu):
    found, skipped = [], []
    for index, item in enumerate(hdul):
        if not isinstance(item, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
            continue
        name = str(item.name if index or item.header.get("EXTNAME") else "").strip()
        if hdu is not None and not _matches(hdu, name, index):
            continue
        data = item.data
        if data is None:
            continue
        if data.ndim != 2:
            skipped.append(f"HDU {name or index} has {data.ndim}-D data")
            continue
        if 0 in data.shape:
            skipped.append(f"HDU {name or index} is empty")
            continue
        found.append(ImageData(data=np.asarray(data, dtype=np.float32), header=item.header.copy(),
                               name=name, index=index))
    if found:
        return found
    if hdu is not None and not skipped:
        names = ", ".join(f"{i}:{(h.name or '').strip() or '-'}" for i, h in enumerate(hdul))
        raise InputError(path, f"no HDU {hdu!r} (the file has {names})")
    detail = f" ({'; '.join(skipped)})" if skipped else ""
    raise InputError(path, f"no 2-D image data{detail}")


def _matches(hdu, name, index):
    if isinstance(hdu, (int, np.integer)) or str(hdu).isdigit():
        return int(hdu) == index
    return str(hdu).strip().upper() == name.upper()


@contextlib.contextmanager
def atomic_path(path, overwrite=False):
    """Yield a temporary path beside ``path`` that is renamed onto ``path`` on success.

    On any exception (KeyboardInterrupt included) the temporary file is removed and
    ``path`` is left as it was.

    Raises
    ------
    OutputError
        ``path`` exists and ``overwrite`` is false, or its directory cannot be written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: exists (use --overwrite to replace it)")
    blocked = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)
    if blocked is not None:
        raise OutputError(f"{path}: cannot write ({blocked} is not a directory)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    os.close(handle)
    try:
        yield Path(temp)
        os.replace(temp, path)
    except OSError as error:
        raise OutputError(f"{path}: cannot write ({error.strerror or error})") from None
    finally:
        if os.path.exists(temp):
            os.remove(temp)


def write_fits_atomic(path, hdus, overwrite=False):
    """Write an HDUList (or list of HDUs) to ``path`` atomically."""
    hdul = hdus if isinstance(hdus, fits.HDUList) else fits.HDUList(list(hdus))
    with atomic_path(path, overwrite) as temp:
        hdul.writeto(temp, overwrite=True, checksum=True)


def write_text_atomic(path, text, overwrite=False):
    """Write a text file (CSV, DS9 regions, JSON) atomically."""
    with atomic_path(path, overwrite) as temp:
        Path(temp).write_text(text)


def image_header(header):
    """Copy of an image header without the keys that describe the data array or the HDU kind."""
    structural = {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND",
                  "PCOUNT", "GCOUNT", "BZERO", "BSCALE", "BLANK", "EXTNAME", "CHECKSUM", "DATASUM",
                  "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZNAXIS1", "ZNAXIS2", "ZTILE1", "ZTILE2", "ZCMPTYPE",
                  "ZNAME1", "ZVAL1", "ZNAME2", "ZVAL2", "ZQUANTIZ", "ZDITHER0", "ZSIMPLE", "ZEXTEND",
                  "TFIELDS", "TTYPE1", "TFORM1"}
    clean = fits.Header()
    for card in header.cards:
        if card.keyword not in structural and card.keyword:
            clean.append(card)
    return clean


# --- simulated files: NAME.fits holds the image, NAME_truth.fits its truth -----------------

#: Extensions of a truth file, beside the image file ``NAME.fits``.
TRUTH_LAYOUT = {"LABELS": "uint8 class of every pixel", "IDS": "int32 truth-cluster id of every cluster pixel",
                "TRUTH": "table, one row per simulated event"}


def truth_path(image_path):
    """``DIR/NAME.fits`` -> ``DIR/NAME_truth.fits``."""
    image_path = Path(image_path)
    return image_path.with_name(f"{fits_stem(image_path)}_truth.fits")


def write_simulation(simulation, path, keys=None, overwrite=False):
    """Write a simulated image to ``path`` and its truth to :func:`truth_path` (``NAME_truth.fits``).

    The image file has one primary HDU (float32, ADU) whose header records the gain, pedestal
    and noise, plus ``keys`` (a dict of extra header keys); the truth file has the extensions
    of :data:`TRUTH_LAYOUT`.
    """
    det = simulation.config.detector
    primary = fits.PrimaryHDU(simulation.image)
    for key, value in (keys or {}).items():
        primary.header[key] = value
    for key, value, comment in (("GAIN", det.gain_adu_per_e, "[ADU/e-] simulated gain"),
                                ("PEDESTAL", det.pedestal_adu, "[ADU] simulated pedestal"),
                                ("RDNOISE", det.noise_e, "[e-] effective readout noise"),
                                ("NSAMP", det.n_samples, "skipper samples per pixel"),
                                ("EXPOSURE", det.exposure_s, "[s] exposure")):
        primary.header[key] = (value, comment)
    truth = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(simulation.labels, name="LABELS"),
                          fits.ImageHDU(simulation.ids, name="IDS"), fits.BinTableHDU(simulation.truth, name="TRUTH")])
    # both files or neither: an image without its truth (or with a stale one) must not be left behind
    with contextlib.ExitStack() as stack:
        temps = [stack.enter_context(atomic_path(target, overwrite)) for target in (path, truth_path(path))]
        fits.HDUList([primary]).writeto(temps[0], overwrite=True, checksum=True)
        truth.writeto(temps[1], overwrite=True, checksum=True)


def read_truth(image_path):
    """Read the truth of a simulated image: (labels uint8, ids int32, truth Table).

    Raises
    ------
    InputError
        The truth file is missing or lacks an extension of :data:`TRUTH_LAYOUT`.
    """
    path = truth_path(image_path)
    _check_readable(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            missing = [name for name in TRUTH_LAYOUT if name not in hdul]
            if missing:
                raise InputError(path, f"not a truth file: no {', '.join(missing)} extension")
            labels = np.asarray(hdul["LABELS"].data, dtype=np.uint8)
            ids = np.asarray(hdul["IDS"].data, dtype=np.int32)
            truth = Table.read(hdul["TRUTH"])
    except InputError:
        raise
    except (OSError, ValueError, TypeError) as error:
        raise InputError(path, f"not a readable FITS file ({_reason(error)})") from None
    return labels, ids, truth


def read_simulation(path):
    """Read a simulated image file with its truth: (image ImageData, labels, ids, truth Table).

    Raises
    ------
    InputError
        The image or its truth is unreadable, the file holds more than one image, or the
        truth's shape differs from the image's.
    """
    images = read_images(path)
    if len(images) != 1:
        raise InputError(path, f"has {len(images)} images; a simulated file has one")
    labels, ids, truth = read_truth(path)
    if labels.shape != images[0].data.shape or ids.shape != images[0].data.shape:
        raise InputError(truth_path(path), f"truth shape {labels.shape} does not match the image shape "
                                           f"{images[0].data.shape} of {Path(path).name}")
    return images[0], labels, ids, truth
