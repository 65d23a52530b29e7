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
    ``CLUSTERS``: :func:`ccdseg.measure.catalog.find_clusters` of every image, concatenated (the
    ``hdu`` column names the image; ``id`` restarts at 1 in each).
``NAME_clusters.csv``
    The same catalogue as CSV.
``NAME_clusters.reg``
    DS9 regions, the bounding box of every cluster, one commented block per image.
``NAME.png``
    Every image beside its colour-coded segmentation, with the share of each class.
``NAME_spectrum.png``
    The energy spectrum per image and particle kind and the point fit's width against energy
    (:func:`ccdseg.plots.plot_spectrum`; empty panels when the gain is unknown).
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
import functools
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import vstack

from ccdseg import plots
from ccdseg._version import __version__
from ccdseg.calib.gain import resolve_gain
from ccdseg.classes import NAMES, class_id
from ccdseg.errors import CcdsegError, ConfigError, InputError
from ccdseg.io import atomic_path, check_absent, fits_stem, image_header, read_images
from ccdseg.io import output_paths as files
from ccdseg.io.regions import region_file_text
from ccdseg.measure import catalog
from ccdseg.measure.objects import resolve_objects
from ccdseg.measure.sections import find_sections
from ccdseg.nn.normalize import normalization_stats
from ccdseg.pipeline import runners
from ccdseg.pipeline.options import ProcessOptions

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


def output_paths(path, out_dir, labels=("",), find=None):
    """The files :func:`process_file` writes for ``path``, by role.

    Parameters
    ----------
    path : str or Path
        Input FITS file.
    out_dir : str or Path
    labels : sequence of str
        The :attr:`ccdseg.io.ImageData.label` of each image HDU to be processed (the ``find``
        figure is per image when there are several).
    find : str or int, optional
        Class of the ``find`` figures.

    Returns
    -------
    dict of str -> Path
        Keys "seg", "csv", "reg", "png", "spectrum", and "find:<label>" per image with ``find``.
    """
    suffixes = {"seg": "_seg.fits", "csv": "_clusters.csv", "reg": "_clusters.reg", "png": ".png",
                "spectrum": "_spectrum.png"}
    if find is not None:
        name = NAMES[class_id(find)].replace(" ", "_")
        for label in (labels if len(labels) > 1 else [""]):
            suffixes[f"find:{label}"] = f"_find_{name}{'_' + label if label else ''}.png"
    return files(out_dir, fits_stem(path), suffixes)


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


def _segment(data, model, options):
    """Labels, probabilities (None for the classical method) and the row pedestal (ADU) of an image."""
    if options.method == "classical":
        from ccdseg.measure.classical import segment_classical
        return segment_classical(data), None, None
    from ccdseg.infer.predict import segment  # torch is imported only for the network method
    stats = normalization_stats(data, model.normalization)
    # probabilities always: the catalogue's mean_prob uses them
    labels, probs = segment(data, model=model, tile_size=options.tile_size, device=options.device,
                            precision=options.precision, return_probabilities=True, engine=options.engine,
                            stats=stats, cluster_threshold=options.cluster_threshold)
    return labels, probs, stats.pedestal


def process_file(path, out_dir, options=None, *, model=None, **changes):
    """Segment every image HDU of a FITS file and write the outputs listed in the module docstring.

    Parameters
    ----------
    path : str or Path
        Input FITS file (any image data type or compression).
    out_dir : str or Path
        Output directory (created if missing).
    options : ProcessOptions, optional
        What to do (default :class:`ProcessOptions()`).
    model : Model, OnnxModel, str, path-like or None
        Network model (see :func:`ccdseg.infer.predict.get_model`); None is the shipped model.
        Unused by the classical method.
    **changes
        Fields of :class:`ProcessOptions` to change, e.g. ``gain=1.3``.

    Returns
    -------
    FileResult

    Raises
    ------
    CcdsegError
        InputError for an unreadable file, OutputError when an output exists or cannot be
        written, ConfigError for invalid options, ModelFileError for an unusable model.
    """
    options = (options or ProcessOptions()).replace(**changes)
    path, out_dir = Path(path), Path(out_dir)
    images = read_images(path, options.hdu)
    primary = _primary_header(path)
    paths = output_paths(path, out_dir, [image.label for image in images], options.find)
    check_absent(paths.values(), options.overwrite)
    if options.method == "network":
        from ccdseg.infer.predict import get_model
        model = get_model(model, options.device, options.engine)
    try:
        return _process(path, images, primary, paths, model, options)
    except CcdsegError:
        raise
    except _UNEXPECTED as error:
        raise InputError(path, f"cannot be processed ({type(error).__name__}: {_first_line(error)})") from error


def try_process_file(path, out_dir, options=None, *, model=None):
    """:func:`process_file`, with a failure returned as one line instead of raised.

    Returns
    -------
    result : FileResult or None
        None when the file failed.
    failure : str or None
        ``"PATH: reason"`` when the file failed (a :class:`~ccdseg.errors.CcdsegError`), else None.
    """
    try:
        return process_file(path, out_dir, options, model=model), None
    except CcdsegError as error:
        message = str(error)
        return None, (message if message.startswith(f"{path}:") else f"{path}: {message}")


def process_files(paths, out_dir, options=None, *, model=None, progress=True, workers=None, scheduler=None,
                  **changes):
    """Run :func:`process_file` on many files; a failing file does not stop the others.

    Parameters
    ----------
    paths : iterable of str or Path
        Input FITS files.
    out_dir : str or Path
        Output directory.
    options : ProcessOptions, optional
        What to do with each file; ``**changes`` are applied to it.
    model : Model, str, path-like or None
        Loaded once for all files (network method).
    progress : bool
        Show a progress bar over the files (on stderr).
    workers : int, optional
        Process the files in parallel on a local Dask cluster of this many worker processes
        (see :func:`ccdseg.pipeline.runners.run_dask`).
    scheduler : str, optional
        Process the files on the Dask cluster of this scheduler (``tcp://HOST:PORT``).

    Returns
    -------
    results : list of FileResult
        One per file processed completely.
    failures : list of str
        One line ``"PATH: reason"`` per failed file.

    Raises
    ------
    ConfigError
        Invalid options, Dask missing (with ``workers`` or ``scheduler``), or the scheduler cannot be reached.
    ModelFileError
        The model cannot be loaded (every file would fail alike).
    """
    options = (options or ProcessOptions()).replace(**changes)
    paths = [Path(path) for path in paths]
    if options.method == "network":
        from ccdseg.infer.predict import get_model
        model = get_model(model, options.device, options.engine)
    if workers is None and scheduler is None:
        job = functools.partial(try_process_file, out_dir=out_dir, options=options, model=model)
        return runners.run_serial(job, paths, progress=progress)
    # workers load the model from its file: a loaded model does not travel
    model = None if model is None else Path(getattr(model, "path", model)).absolute()
    job = functools.partial(try_process_file, out_dir=Path(out_dir).absolute(), options=options, model=model)
    return runners.run_dask(job, [path.absolute() for path in paths], workers=workers, scheduler=scheduler,
                            progress=progress)


#: Errors of numpy, astropy, scipy or torch on unusual data; reported as a problem of that file.
_UNEXPECTED = (ValueError, TypeError, OSError, IndexError, KeyError, ArithmeticError, RuntimeError, MemoryError)


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else "no detail"


def _primary_header(path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fits.verify.VerifyWarning)
            return fits.getheader(path, 0)
    except _UNEXPECTED as error:
        raise InputError(path, f"cannot read the primary header ({_first_line(error)})") from None


def _process(path, images, primary, paths, model, options):
    single = len(images) == 1
    label_hdus, prob_hdus, tables, panels, results = [], [], [], [], []
    for image in images:
        data = _analysed_image(image)
        labels, probs, pedestal = _segment(data, model, options)
        if options.objects:
            labels = resolve_objects(labels, probs)
        used_gain, source = resolve_gain(data, (image.header, primary), options.gain)
        tables.append(catalog.find_clusters(data, labels, probabilities=probs, gain=used_gain, pedestal=pedestal,
                                            hdu=image.label))
        suffix = "" if single else f"_{image.label}"
        header = image_header(image.header)
        if used_gain is not None:
            header["GAINUSED"] = (used_gain, "[ADU/e-] gain of the cluster catalogue")
        header["GAINSRC"] = (source, "option, header, estimated or none")
        label_hdus.append(fits.ImageHDU(labels, header=header, name=f"LABELS{suffix}"))
        if options.probabilities:
            prob_hdus.append(fits.ImageHDU(probs, name=f"PROB{suffix}"))
        del probs
        panels.append((image.label, image.data, labels))
        sections = find_sections(labels, options.find) if options.find is not None else []
        results.append(ImageResult(image.label, image.data.shape, plots.class_fractions(labels), len(tables[-1]),
                                   used_gain, source, sections))

    table = vstack(tables, metadata_conflicts="silent")
    provenance = fits.PrimaryHDU(header=image_header(primary))
    provenance.header["CCDSEGV"] = (__version__, "ccdseg version that wrote this file")
    provenance.header["CSMETHOD"] = (options.method, "segmentation method")
    provenance.header["CSMODEL"] = (Path(model.path).name if options.method == "network" else "none", "model file")
    if options.method == "network":
        provenance.header["CSTILE"] = (options.tile_size, "[px] tile side")
        provenance.header["CSPREC"] = (options.precision, "network arithmetic")
        provenance.header["CSENGINE"] = (options.engine, "torch or onnx (ONNX Runtime)")
        provenance.header["CSCLTHR"] = ("argmax" if options.cluster_threshold is None else options.cluster_threshold,
                                        "cluster decision: argmax or min probability")
    provenance.header["CSINPUT"] = (path.name, "input file")
    clusters = fits.table_to_hdu(table)
    clusters.name = "CLUSTERS"
    hdulist = fits.HDUList([provenance, *label_hdus, *prob_hdus, clusters])

    with contextlib.ExitStack() as stack:
        temps = {role: stack.enter_context(atomic_path(target, options.overwrite)) for role, target in paths.items()}
        hdulist.writeto(temps["seg"], overwrite=True, checksum=True)
        table.write(temps["csv"], format="ascii.csv", overwrite=True)
        Path(temps["reg"]).write_text(_region_text(tables, [image.label for image in images]))
        plots.plot_segmentation_panels(panels, temps["png"], title=path.name)
        plots.plot_spectrum(table, temps["spectrum"], title=path.name)
        for image, (_, _, labels) in zip(images, panels, strict=False):
            role = "find:" + ("" if single else image.label)
            if role in temps:
                sections = find_sections(labels, options.find, margin=_FIND_MARGIN)
                plots.plot_sections(image.data, labels, sections, temps[role])
    return FileResult(path, list(paths.values()), results)


def _region_text(tables, names):
    """One DS9 region file for all images: the header once, then a commented block per image."""
    header = region_file_text(tables[0][:0]).splitlines()
    lines = list(header)
    for table, name in zip(tables, names, strict=False):
        lines.append(f"# hdu={name}")
        lines.extend(line for line in region_file_text(table).splitlines() if line not in header)
    return "\n".join(lines) + "\n"


