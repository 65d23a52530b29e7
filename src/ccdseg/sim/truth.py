"""Simulated files: ``NAME.fits`` holds the image, ``NAME_truth.fits`` its exact labels and events."""

import contextlib
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ccdseg.errors import InputError
from ccdseg.io.atomic import atomic_path
from ccdseg.io.fits import check_readable, fits_stem, read_images, reason

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
    and noise, plus ``keys`` (a dict or :class:`astropy.io.fits.Header` of extra cards, which win
    over the simulated ones); the truth file has the extensions of :data:`TRUTH_LAYOUT`.
    """
    det = simulation.config.detector
    primary = fits.PrimaryHDU(simulation.image)
    for key, value, comment in (("GAIN", det.gain_adu_per_e, "[ADU/e-] simulated gain"),
                                ("PEDESTAL", det.pedestal_adu, "[ADU] simulated pedestal"),
                                ("RDNOISE", det.noise_e, "[e-] effective readout noise"),
                                ("NSAMP", det.n_samples, "skipper samples per pixel"),
                                ("EXPOSURE", det.exposure_s, "[s] exposure")):
        primary.header[key] = (value, comment)
    # a real frame's own header (events pasted onto it) says more about its readout than the config
    primary.header.extend(keys if isinstance(keys, fits.Header) else list((keys or {}).items()), update=True)
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
    check_readable(path)
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
        raise InputError(path, f"not a readable FITS file ({reason(error)})") from None
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
