"""FITS input and output at the edge of the package.

Reading finds every HDU holding a 2-D image (the primary HDU may be empty, as in DAMIC-M
``.fz`` files), whatever the compression (RICE tiles, gzip) or the data type; writing goes
to a temporary file in the target directory that is renamed into place only when complete,
so a crash or an interrupt never leaves a half-written output and inputs are never opened
for writing.
"""

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from ccdseg.errors import InputError

#: File name endings recognised as FITS, longest first (the stem is what precedes them).
FITS_SUFFIXES = (".fits.fz", ".fits.gz", ".fit.gz", ".fits", ".fit", ".fts", ".fz")
#: astropy's advice for files without a SIMPLE card, which would only hide that the file is not FITS.
_ASTROPY_HINT = re.compile(r"\s*If this is really a FITS file, try with \w+=True\.?")
#: Share of the available memory one image (as float32) may take: the segmentation needs several times that.
_MEMORY_SHARE = 0.25
#: HISTORY lines CFITSIO adds when it compresses an image: they describe the input file, not an output.
_COMPRESSION_HISTORY = re.compile(
    r"compressed by CFITSIO|quantized level scaling parameter|Pixel Quantization Algorithm")


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
        Missing, empty, unreadable, truncated or damaged file (a header that claims more
        data than the file holds, or an image too large for the available memory, is
        refused before its data are read), no 2-D image, or no such HDU; the message
        names the file and the problem.
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
    """Refuse a missing path, a directory or an empty file, naming it."""
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory, not a FITS file")
    if path.stat().st_size == 0:
        raise InputError(path, "empty file")


def reason(error):
    """First line of an error's message, without astropy's advice to read a non-FITS file anyway."""
    text = _ASTROPY_HINT.sub("", str(error)).strip().splitlines()
    return text[0] if text else type(error).__name__


def check_size(path, item, label):
    """Refuse an image HDU too large for the available memory, before its data are read.

    The size comes from the header (for a tile-compressed HDU, from ZNAXISn): the image as
    float32 must fit in a quarter of the available memory. (A header that claims more
    bytes, NAXISn x |BITPIX|/8, than a plain file holds is refused by :func:`read_images` when
    the file is opened.)

    Raises
    ------
    InputError
        Naming the file, the HDU and the sizes.
    """
    header = item.header  # for a compressed HDU, the image header (NAXISn from ZNAXISn)
    shape = [int(header.get(f"NAXIS{axis}", 0)) for axis in range(1, int(header.get("NAXIS", 0)) + 1)]
    pixels = int(np.prod(shape, dtype=object)) if shape else 0
    memory = _available_memory()
    if memory is not None and pixels * 4 > _MEMORY_SHARE * memory:
        raise InputError(path, f"HDU {label} is too large: the header claims {' x '.join(map(str, shape[::-1]))} px, "
                               f"{_size(pixels * 4)} as float32, more than a quarter of the {_size(memory)} "
                               "of memory available")


def _available_memory():
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass  # no readable /proc/meminfo (not Linux): the size check then has no memory limit
    return None


def _size(nbytes):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024


def _select_images(path, hdul, hdu):
    found, skipped = [], []
    for index, item in enumerate(hdul):
        if not isinstance(item, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
            continue
        name = str(item.name if index or item.header.get("EXTNAME") else "").strip()
        if hdu is not None and not _matches(hdu, name, index):
            continue
        check_size(path, item, name or index)
        try:
            data = item.data
        except (AstropyUserWarning, fits.verify.VerifyWarning):
            raise
        except Exception as error:  # noqa: BLE001 - decompression libraries raise their own types
            raise InputError(path, f"damaged data in HDU {name or index} "
                                   f"({type(error).__name__}: {reason(error)})") from error
        if data is None:
            continue
        if data.ndim != 2:
            skipped.append(f"HDU {name or index} has {data.ndim}-D data")
            continue
        if 0 in data.shape:
            skipped.append(f"HDU {name or index} is empty")
            continue
        array = np.asarray(data, dtype=np.float32)
        if not np.isfinite(array).any():  # NaN pixels are left out of every measurement: here none would be left
            raise InputError(path, f"HDU {name or index} has no finite pixel (all NaN or Inf)")
        found.append(ImageData(data=array, header=item.header.copy(), name=name, index=index))
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
    """Copy of an image header without the keys that describe the data array, the HDU kind or its compression."""
    structural = {"SIMPLE", "XTENSION", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "NAXIS3", "EXTEND",
                  "PCOUNT", "GCOUNT", "BZERO", "BSCALE", "BLANK", "EXTNAME", "CHECKSUM", "DATASUM",
                  "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZNAXIS1", "ZNAXIS2", "ZTILE1", "ZTILE2", "ZCMPTYPE",
                  "ZNAME1", "ZVAL1", "ZNAME2", "ZVAL2", "ZQUANTIZ", "ZDITHER0", "ZSIMPLE", "ZEXTEND",
                  "TFIELDS", "TTYPE1", "TFORM1"}
    clean = fits.Header()
    for card in header.cards:
        if card.keyword == "HISTORY" and _COMPRESSION_HISTORY.search(str(card.value)):
            continue
        if card.keyword not in structural and card.keyword:
            clean.append(card)
    return clean
