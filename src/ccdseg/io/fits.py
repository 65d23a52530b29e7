"""FITS input and output at the edge of the package.

Reading finds every HDU holding a 2-D image (the primary HDU may be empty, as in DAMIC-M
``.fz`` files), whatever the compression (RICE tiles, gzip) or the data type; writing goes
to a temporary file in the target directory that is renamed into place only when complete,
so a crash or an interrupt never leaves a half-written output and inputs are never opened
for writing.
"""

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from ccdseg.errors import InputError

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
    check_readable(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", fits.verify.VerifyWarning)
            warnings.filterwarnings("error", "File may have been truncated", AstropyUserWarning)
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
                return _select_images(path, hdul, hdu)
    except InputError:
        raise
    except AstropyUserWarning as warning:
        detail = reason(warning).removeprefix("File may have been truncated: ")
        raise InputError(path, f"truncated file ({detail})") from None
    except (OSError, ValueError, TypeError, IndexError, EOFError, fits.verify.VerifyError,
            fits.verify.VerifyWarning) as error:
        raise InputError(path, f"not a readable FITS file ({reason(error)})") from None


def check_readable(path):
    """Raise :class:`~ccdseg.errors.InputError` unless ``path`` is an existing, non-empty file."""
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, not a FITS file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file")


def reason(error):
    """First line of an exception's message (its type name when it has none), for a one-line report."""
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
