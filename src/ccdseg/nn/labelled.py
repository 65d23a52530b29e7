"""The user's own labelled images: image and label files paired by name, checked before training.

Naming convention (both layouts may be mixed in one directory):

- ``DIR/NAME.fits`` with ``DIR/NAME_labels.fits`` (or ``.png``, ``.npy``);
- ``DIR/images/NAME.fits`` with ``DIR/labels/NAME.fits`` (or ``.png``, ``.npy``, or ``NAME_labels.*``).

Images are FITS files of any size (``.fits``, ``.fits.fz``, ``.fits.gz``, ...); a file with
several 2-D HDUs pairs each with the same-position 2-D HDU of a FITS label file. Labels hold
the class ids of :mod:`ccdseg.classes` (0 background, 1 glowing, 2 hot pixel, 3 cluster, 255
unknown/ignored): as integers in FITS or NPY, as grey levels in a PNG, or as the display
colours :data:`ccdseg.classes.COLORS` in an RGB(A) PNG, where fully transparent pixels are
unknown.
"""

from pathlib import Path

import numpy as np
from matplotlib import image as mpl_image

from ccdseg.classes import IGNORE, N_CLASSES, rgb_table
from ccdseg.errors import InputError
from ccdseg.io import FITS_SUFFIXES, fits_stem, read_images

#: Label file endings, in the order they are looked for.
LABEL_SUFFIXES = (".fits", ".fits.gz", ".fits.fz", ".png", ".npy")
_VALID = np.array([*range(N_CLASSES), IGNORE])


def find_labelled_pairs(directory):
    """Pair the images of ``directory`` with their label files, and list what does not fit.

    Parameters
    ----------
    directory : str or Path
        Laid out as the module docstring says.

    Returns
    -------
    pairs : list of (str, ndarray float32, ndarray uint8)
        Name (``NAME`` or ``NAME[HDU]``), image (ADU) and labels, sorted by name.
    problems : list of str
        One line per image or label file that cannot be used: a missing partner, an
        unreadable file, a shape mismatch or class values outside 0-3 and 255.

    Raises
    ------
    InputError
        ``directory`` is not a directory.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(directory, "not a directory")
    images, labels = {}, {}
    for folder, in_labels_dir in ((directory, False), (directory / "images", False), (directory / "labels", True)):
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.iterdir() if p.is_file()):
            stem, is_label = _label_stem(path)
            if is_label or (in_labels_dir and stem is not None):
                labels.setdefault(stem, path)
            elif path.name.lower().endswith(FITS_SUFFIXES):
                images.setdefault(fits_stem(path), path)
    pairs, problems = [], []
    for stem in sorted(set(images) | set(labels)):
        if stem not in labels:
            problems.append(f"{images[stem]}: no label file (expected {stem}_labels.fits/.png/.npy "
                            f"or labels/{stem}.*)")
            continue
        if stem not in images:
            problems.append(f"{labels[stem]}: no image {stem}.fits for these labels")
            continue
        try:
            pairs.extend(read_labelled_pair(images[stem], labels[stem]))
        except InputError as error:
            problems.append(str(error))
    return pairs, problems


def _label_stem(path):
    """``(stem, True)`` for ``STEM_labels.EXT``, ``(stem, False)`` for another label-type file, ``(None, False)``."""
    name = path.name
    suffix = next((s for s in LABEL_SUFFIXES if name.lower().endswith(s)), None)
    if suffix is None:
        return None, False
    stem = name[: -len(suffix)]
    if stem.endswith("_labels"):
        return stem[: -len("_labels")], True
    return stem, False


def read_labelled_pair(image_path, labels_path):
    """Read an image file and its label file as ``[(name, image, labels), ...]``, one per HDU.

    Raises
    ------
    InputError
        Unreadable file, different numbers of HDUs, different shapes or unknown class values;
        the message names the file.
    """
    images = read_images(image_path)
    label_maps = read_labels(labels_path)
    if len(label_maps) != len(images):
        raise InputError(labels_path, f"{len(label_maps)} label map(s) for the {len(images)} image HDU(s) "
                                      f"of {Path(image_path).name}")
    stem = fits_stem(image_path)
    pairs = []
    for hdu, labels in zip(images, label_maps, strict=True):
        if labels.shape != hdu.data.shape:
            raise InputError(labels_path, f"labels of shape {labels.shape} but image {Path(image_path).name}"
                                          f"[{hdu.label}] has shape {hdu.data.shape}")
        name = stem if len(images) == 1 else f"{stem}[{hdu.label}]"
        pairs.append((name, hdu.data, labels))
    return pairs


def read_labels(path):
    """Label maps (uint8 class ids, 255 unknown) of a FITS, NPY or PNG label file.

    Raises
    ------
    InputError
        Unreadable file, not 2-D, or values that are not class ids (or class colours).
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(".png"):
        return [_png_labels(path)]
    if name.endswith(".npy"):
        try:
            values = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputError(path, f"not a readable NPY file ({error})") from None
        if values.ndim != 2:
            raise InputError(path, f"labels must be a 2-D array, got shape {values.shape}")
        return [_class_ids(path, values)]
    return [_class_ids(path, hdu.data) for hdu in read_images(path)]


def _class_ids(path, values):
    values = np.asarray(values)
    unknown = np.setdiff1d(np.unique(values[np.isfinite(values)] if values.dtype.kind == "f" else values), _VALID)
    if values.dtype.kind == "f" and not np.all(np.isfinite(values)):
        unknown = np.append(unknown, np.nan)
    if unknown.size:
        shown = ", ".join(f"{v:g}" for v in unknown[:5]) + (", ..." if unknown.size > 5 else "")
        raise InputError(path, f"unknown class values {shown} (expected 0-{N_CLASSES - 1} or {IGNORE})")
    return values.astype(np.uint8)


def _png_labels(path):
    try:
        values = mpl_image.imread(path)
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(path, f"not a readable PNG file ({error})") from None
    if values.dtype.kind == "f":  # matplotlib returns 8-bit PNGs as 0-1 floats
        values = np.rint(values * 255)
    values = values.astype(np.int64)
    if values.ndim == 2:
        return _class_ids(path, values)
    labels = np.full(values.shape[:2], IGNORE, np.uint8)
    matched = values[..., 3] == 0 if values.shape[2] == 4 else np.zeros(labels.shape, bool)
    for class_id, colour in enumerate(rgb_table()):
        hit = np.all(values[..., :3] == colour, axis=-1) & ~matched
        labels[hit] = class_id
        matched |= hit
    if not matched.all():
        colours = np.unique(values[~matched][:, :3], axis=0)
        shown = ", ".join("#" + "".join(f"{c:02x}" for c in colour) for colour in colours[:5])
        raise InputError(path, f"unknown class colours {shown}{', ...' if len(colours) > 5 else ''} "
                               f"(expected the colours of ccdseg.classes.COLORS)")
    return labels
