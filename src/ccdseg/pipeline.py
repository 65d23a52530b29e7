"""Segment FITS files and write the segmentation, the cluster catalogue and figures for each.

For an input ``NAME.fits`` (or ``.fit``, ``.fits.fz``, ``.fz``, ``.fits.gz``) the outputs in
``out_dir`` are:

``NAME_seg.fits``
    Primary HDU: the input's primary header keys (no data) plus provenance (``CCDSEGV``
    package version, ``CSMODEL`` model file name, ``CSMETHOD`` method). One uint8 image
    extension of class ids per image HDU, of the image's shape, with the image header's keys:
    ``LABELS`` for a file with one image, ``LABELS_<EXTNAME>`` (``LABELS_<index>`` when unnamed)
    for several; its ``GAINUSED`` (ADU/e-, absent when unknown) and ``GAINSRC`` ("option",
    "header", "estimated" or "none") record the gain of the catalogue. With probabilities,
    a float32 (4, H, W) cube per image (``PROB`` / ``PROB_<EXTNAME>``). Last, the table
    ``CLUSTERS``: :func:`ccdseg.catalog.find_clusters` of every image, concatenated (the
    ``hdu`` column names the image; ``id`` restarts at 1 in each).
``NAME_clusters.csv``
    The same catalogue as CSV.
``NAME_clusters.reg``
    DS9 regions, the bounding box of every cluster, one commented block per image.
``NAME.png``
    Every image beside its colour-coded segmentation, with the share of each class.
``NAME_find_<class>.png``
    With ``find``: stamps of the regions of that class (``NAME_find_<class>_<EXTNAME>.png``
    per image for files with several images).

A file is written completely or not at all: every output is first written to a temporary
file, and all are renamed into place only when all are written. Existing outputs are not
replaced without ``overwrite``, and this is checked for all of a file's outputs before any work.

Pixels outside the ``DATASEC`` of an image header (prescan and overscan, in the IRAF/NOAO
convention ``[x1:x2,y1:y2]``, 1-based, inclusive) are left out of every statistic and
labelled background. Other prescan keys are not used: the DAMIC-M header key ``PRESCAN = 8``
describes the sequencer, and in a partial readout (``NCOLPRE = 3900`` in the DAMIC-M test
file) the first columns read are active pixels; their noise and pedestal match the rest
of the image (only the first column sits ~3 ADU higher, a known first-pixel effect).
"""

import contextlib
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import vstack
from tqdm import tqdm

import ccdseg
from ccdseg import catalog, plots
from ccdseg.classes import NAMES, class_id
from ccdseg.errors import CcdsegError, ConfigError, InputError, OutputError
from ccdseg.io import atomic_path, fits_stem, image_header, read_images
from ccdseg.normalize import normalization_stats
from ccdseg.tiling import TILE_SIZE

METHODS = ("network", "classical")
#: Pixels used to estimate the gain from the single-electron peaks: enough for a clear comb,
#: and a full frame would take ~10 s.
_GAIN_SAMPLE_PIXELS = 1 << 20
#: Pixels of context around each region in the ``find`` figures.
_FIND_MARGIN = 5
_DATASEC = re.compile(r"^\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*$")


@dataclass
class ImageResult:
    """Summary of one segmented image HDU."""

    hdu: str
    shape: tuple
    fractions: np.ndarray       # share of the pixels in each class
    n_clusters: int
    gain: float | None          # ADU/e- used for the catalogue
    gain_source: str            # "option", "header", "estimated" or "none"
    sections: list = field(default_factory=list)   # regions of the ``find`` class (catalog.Section)


@dataclass
class FileResult:
    """Summary of one processed file."""

    path: Path
    outputs: list               # written files
    images: list                # ImageResult per image HDU


def output_paths(path, out_dir, n_images=1, labels=(), find=None):
    """The files :func:`process_file` writes for ``path``, by role.

    Parameters
    ----------
    path : str or Path
        Input FITS file.
    out_dir : str or Path
    n_images : int
        Image HDUs to be processed (the ``find`` figure is per image when > 1).
    labels : sequence of str
        Their :attr:`ccdseg.io.ImageData.label`, needed when ``n_images > 1`` and ``find``.
    find : str or int, optional
        Class of the ``find`` figures.

    Returns
    -------
    dict of str -> Path
        Keys "seg", "csv", "reg", "png", and "find:<label>" per image with ``find``.
    """
    out_dir, stem = Path(out_dir), fits_stem(path)
    paths = {"seg": out_dir / f"{stem}_seg.fits", "csv": out_dir / f"{stem}_clusters.csv",
             "reg": out_dir / f"{stem}_clusters.reg", "png": out_dir / f"{stem}.png"}
    if find is not None:
        name = NAMES[class_id(find)].replace(" ", "_")
        for label in (labels if n_images > 1 else [""]):
            suffix = f"_{label}" if label else ""
            paths[f"find:{label}"] = out_dir / f"{stem}_find_{name}{suffix}.png"
    return paths


def data_section(header, shape):
    """Slices of the data section (``DATASEC``) of an image, or None when the header has none.

    Raises
    ------
    ConfigError
        ``DATASEC`` is malformed or outside the image.
    """
    value = header.get("DATASEC")
    if value is None:
        return None
    match = _DATASEC.match(str(value))
    if not match:
        raise ConfigError(f"DATASEC {value!r} is not of the form [x1:x2,y1:y2]")
    x1, x2, y1, y2 = (int(v) for v in match.groups())
    if not (1 <= x1 <= x2 <= shape[1] and 1 <= y1 <= y2 <= shape[0]):
        raise ConfigError(f"DATASEC {value!r} lies outside the {shape[1]} x {shape[0]} image")
    return slice(y1 - 1, y2), slice(x1 - 1, x2)


def _analysed_image(image):
    """The image with pixels outside DATASEC set to NaN (left out of statistics, labelled background)."""
    section = data_section(image.header, image.data.shape)
    if section is None:
        return image.data
    masked = np.full_like(image.data, np.nan)
    masked[section] = image.data[section]
    return masked


def _gain(data, header, primary, gain):
    """Gain (ADU/e-) for the catalogue and where it came from."""
    if gain is not None:
        return float(gain), "option"
    for source in (header, primary):
        value = source.get("GAIN")
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value), "header"
    step = max(1, data.size // _GAIN_SAMPLE_PIXELS)
    sample = data[::step] if step < data.shape[0] else data
    estimate = catalog.estimate_gain(sample)
    return (estimate, "estimated") if estimate is not None else (None, "none")


def _segment(data, method, model, device, tile_size, precision, engine, cluster_threshold):
    """Labels, probabilities (None for the classical method) and the row pedestal (ADU) of an image."""
    if method == "classical":
        from ccdseg.classical import segment_classical
        return segment_classical(data), None, None
    from ccdseg.predict import segment  # torch is imported only for the network method
    stats = normalization_stats(data, model.normalization)
    # probabilities always: the catalogue's mean_prob uses them
    labels, probs = segment(data, model=model, tile_size=tile_size, device=device, precision=precision,
                            return_probabilities=True, engine=engine, stats=stats,
                            cluster_threshold=cluster_threshold)
    return labels, probs, stats.pedestal


def process_file(path, out_dir, model=None, hdu=None, probabilities=False, find=None, gain=None,
                 device="cpu", overwrite=False, method="network", tile_size=TILE_SIZE, precision="bf16", engine="torch",
                 cluster_threshold=None):
    """Segment every image HDU of a FITS file and write the outputs listed in the module docstring.

    Parameters
    ----------
    path : str or Path
        Input FITS file (any image data type or compression).
    out_dir : str or Path
        Output directory (created if missing).
    model : Model, OnnxModel, str, path-like or None
        Network model (see :func:`ccdseg.predict.get_model`); None is the shipped model.
        Unused by the classical method.
    hdu : str or int, optional
        Only this HDU (EXTNAME or index).
    probabilities : bool
        Also write the class probabilities (network method only).
    find : str or int, optional
        Class whose regions are listed and drawn (name or id).
    gain : float, optional
        Gain in ADU/e-; default the header key ``GAIN`` (image header, then primary), else an
        estimate from the single-electron peaks of a skipper image (on ~10^6 pixels, see
        :func:`ccdseg.catalog.estimate_gain`), else none (the electron columns of the
        catalogue are then NaN).
    device : str
        Torch device of the network.
    overwrite : bool
        Replace existing outputs.
    method : {"network", "classical"}
        The U-Net, or the thresholding baseline of :mod:`ccdseg.classical`.
    tile_size : int
        Network tile side (px).
    precision : {"bf16", "fp32"}
        Network arithmetic ("fp32" for the onnx engine).
    engine : {"torch", "onnx"}
        Run the network with PyTorch or ONNX Runtime (see :func:`ccdseg.predict.segment`).
    cluster_threshold : float, optional
        Cluster probability above which a pixel is a cluster (network method; default the
        most probable class, see :func:`ccdseg.predict.decide`).

    Returns
    -------
    FileResult

    Raises
    ------
    CcdsegError
        InputError for an unreadable file, OutputError when an output exists or cannot be
        written, ConfigError for invalid options, ModelFileError for an unusable model.
    """
    path, out_dir = Path(path), Path(out_dir)
    if method not in METHODS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if probabilities and method != "network":
        raise ConfigError("probabilities are only available with method 'network'")
    if cluster_threshold is not None and method != "network":
        raise ConfigError("cluster_threshold is a probability: only with method 'network'")
    if gain is not None and not gain > 0:
        raise ConfigError(f"gain must be positive (ADU/e-), got {gain!r}")
    find_id = None if find is None else _class(find)
    images = read_images(path, hdu)
    primary = _primary_header(path)
    labels_of = [image.label for image in images]
    paths = output_paths(path, out_dir, len(images), labels_of, find_id)
    if not overwrite:
        existing = [p for p in paths.values() if p.exists()]
        if existing:
            more = f" and {len(existing) - 1} more output(s)" if len(existing) > 1 else ""
            raise OutputError(f"{existing[0]}{more}: exists (use --overwrite to replace it)")
    if method == "network":
        from ccdseg.predict import get_model
        model = get_model(model, device, engine)
    try:
        return _process(path, images, primary, paths, model, probabilities, find_id, gain, device, overwrite,
                        method, tile_size, precision, engine, cluster_threshold)
    except CcdsegError:
        raise
    except _UNEXPECTED as error:
        raise InputError(path, f"cannot be processed ({type(error).__name__}: {_first_line(error)})") from error


def try_process_file(path, out_dir, **options):
    """:func:`process_file`, with a failure returned as one line instead of raised.

    Returns
    -------
    result : FileResult or None
        None when the file failed.
    failure : str or None
        ``"PATH: reason"`` when the file failed (a :class:`~ccdseg.errors.CcdsegError`), else None.
    """
    try:
        return process_file(path, out_dir, **options), None
    except CcdsegError as error:
        message = str(error)
        return None, (message if message.startswith(f"{path}:") else f"{path}: {message}")


def process_files(paths, out_dir, model=None, progress=True, workers=None, scheduler=None, **options):
    """Run :func:`process_file` on many files; a failing file does not stop the others.

    Parameters
    ----------
    paths : iterable of str or Path
        Input FITS files.
    out_dir : str or Path
        Output directory.
    model : Model, str, path-like or None
        Loaded once for all files (network method).
    progress : bool
        Show a progress bar over the files (on stderr).
    workers : int, optional
        Process the files in parallel on a local Dask cluster of this many worker processes
        (see :func:`ccdseg.distributed.process_files_dask`).
    scheduler : str, optional
        Process the files on the Dask cluster of this scheduler (``tcp://HOST:PORT``).
    **options
        Further keyword arguments of :func:`process_file`.

    Returns
    -------
    results : list of FileResult
        One per file processed completely.
    failures : list of str
        One line ``"PATH: reason"`` per failed file.

    Raises
    ------
    ModelFileError
        The model cannot be loaded (every file would fail alike).
    ConfigError
        Dask is missing (with ``workers`` or ``scheduler``) or the scheduler cannot be reached.
    """
    paths = list(paths)
    if options.get("method", "network") == "network":
        from ccdseg.predict import get_model
        model = get_model(model, options.get("device", "cpu"), options.get("engine", "torch"))
    if workers is not None or scheduler is not None:
        from ccdseg.distributed import process_files_dask
        return process_files_dask(paths, out_dir, model=model, workers=workers, scheduler=scheduler,
                                  progress=progress, **options)
    results, failures = [], []
    for path in tqdm(paths, desc="ccdseg predict", unit="file", disable=not progress or not paths):
        result, failure = try_process_file(path, out_dir, model=model, **options)
        if failure is None:
            results.append(result)
        else:
            failures.append(failure)
    return results, failures


#: Errors of numpy, astropy, scipy or torch on unusual data; reported as a problem of that file.
_UNEXPECTED = (ValueError, TypeError, OSError, IndexError, KeyError, ArithmeticError, RuntimeError, MemoryError)


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else "no detail"


def _class(find):
    try:
        return class_id(find)
    except ValueError as error:
        raise ConfigError(f"find: {error}") from None


def _primary_header(path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            return fits.getheader(path, 0)
    except _UNEXPECTED as error:
        raise InputError(path, f"cannot read the primary header ({_first_line(error)})") from None


def _process(path, images, primary, paths, model, probabilities, find_id, gain, device, overwrite, method,
             tile_size, precision, engine, cluster_threshold):
    single = len(images) == 1
    label_hdus, prob_hdus, tables, panels, results = [], [], [], [], []
    for image in images:
        data = _analysed_image(image)
        labels, probs, pedestal = _segment(data, method, model, device, tile_size, precision, engine,
                                           cluster_threshold)
        used_gain, source = _gain(data, image.header, primary, gain)
        tables.append(catalog.find_clusters(data, labels, probabilities=probs, gain=used_gain, pedestal=pedestal,
                                            hdu=image.label))
        suffix = "" if single else f"_{image.label}"
        header = image_header(image.header)
        if used_gain is not None:
            header["GAINUSED"] = (used_gain, "[ADU/e-] gain of the cluster catalogue")
        header["GAINSRC"] = (source, "option, header, estimated or none")
        label_hdus.append(fits.ImageHDU(labels, header=header, name=f"LABELS{suffix}"))
        if probabilities:
            prob_hdus.append(fits.ImageHDU(probs, name=f"PROB{suffix}"))
        del probs
        panels.append((image.label, image.data, labels))
        sections = catalog.find_sections(labels, find_id) if find_id is not None else []
        results.append(ImageResult(image.label, image.data.shape, plots.class_fractions(labels), len(tables[-1]),
                                   used_gain, source, sections))

    table = vstack(tables, metadata_conflicts="silent")
    provenance = fits.PrimaryHDU(header=image_header(primary))
    provenance.header["CCDSEGV"] = (ccdseg.__version__, "ccdseg version that wrote this file")
    provenance.header["CSMETHOD"] = (method, "segmentation method")
    provenance.header["CSMODEL"] = (Path(model.path).name if method == "network" else "none", "model file")
    if method == "network":
        provenance.header["CSTILE"] = (tile_size, "[px] tile side")
        provenance.header["CSPREC"] = (precision, "network arithmetic")
        provenance.header["CSENGINE"] = (engine, "torch or onnx (ONNX Runtime)")
        provenance.header["CSCLTHR"] = ("argmax" if cluster_threshold is None else cluster_threshold,
                                        "cluster decision: argmax or min probability")
    provenance.header["CSINPUT"] = (path.name, "input file")
    clusters = fits.table_to_hdu(table)
    clusters.name = "CLUSTERS"
    hdulist = fits.HDUList([provenance, *label_hdus, *prob_hdus, clusters])

    with contextlib.ExitStack() as stack:
        temps = {role: stack.enter_context(atomic_path(target, overwrite)) for role, target in paths.items()}
        hdulist.writeto(temps["seg"], overwrite=True, checksum=True)
        table.write(temps["csv"], format="ascii.csv", overwrite=True)
        Path(temps["reg"]).write_text(_region_text(tables, [image.label for image in images]))
        plots.plot_segmentation_panels(panels, temps["png"], title=path.name)
        for image, (_, _, labels) in zip(images, panels):
            role = "find:" + ("" if single else image.label)
            if role in temps:
                sections = catalog.find_sections(labels, find_id, margin=_FIND_MARGIN)
                plots.plot_sections(image.data, labels, sections, temps[role])
    return FileResult(path, list(paths.values()), results)


def _region_text(tables, names):
    """One DS9 region file for all images: the header once, then a commented block per image."""
    header = catalog.region_file_text(tables[0][:0]).splitlines()
    lines = list(header)
    for table, name in zip(tables, names):
        lines.append(f"# hdu={name}")
        lines.extend(line for line in catalog.region_file_text(table).splitlines() if line not in header)
    return "\n".join(lines) + "\n"


