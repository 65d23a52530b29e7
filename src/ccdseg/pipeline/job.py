"""Segment FITS files and write the segmentation, the cluster catalogue and figures for each.

For an input ``NAME.fits`` (or ``.fit``, ``.fits.fz``, ``.fz``, ``.fits.gz``) the outputs in
``out_dir`` are:

``NAME_seg.fits``
    Primary HDU: the input's primary header keys (no data) plus provenance (``CCDSEGV``
    package version, ``CSMODEL`` model file name, ``CSMETHOD`` method). One uint8 image
    extension of class ids per image HDU, of the image's shape, with the image header's keys
    (less CFITSIO's compression HISTORY): ``LABELS`` for a file with one image,
    ``LABELS_<EXTNAME>`` (``LABELS_<index>`` when unnamed) for several. Its ``CLASS0``..``CLASS3``
    name the class ids, ``CSHDU``/``CSEXTN`` the input HDU (index, EXTNAME), ``GAINUSED``
    (ADU/e-, absent when unknown) and ``GAINSRC`` ("option", "header", "estimated" or "none")
    the gain of the catalogue. With probabilities, a float32 (4, H, W) cube per image
    (``PROB`` / ``PROB_<EXTNAME>``) whose ``PLANE1``..``PLANE4`` name the class of each plane.
    Last, the table ``CLUSTERS``: :func:`ccdseg.measure.catalog.find_clusters` of every image,
    concatenated; ``id`` runs 1..N over the whole file and the ``hdu`` column names the image.
    Then the search products (:mod:`ccdseg.measure.summary`): a uint16 bitmask per image (``MASK`` /
    ``MASK_<EXTNAME>``, bits named ``MASKBn`` in its header), the low-energy events appended to
    ``CLUSTERS`` (column ``low_energy``), and the table ``SUMMARY``, one row per image.
``NAME_clusters.csv``
    The same catalogue as CSV.
``NAME_summary.csv``
    The ``SUMMARY`` table as CSV.
``NAME_clusters.reg``
    DS9 regions (:func:`ccdseg.io.regions.region_file_text`): the bounding box of every cluster,
    coloured by flag, labelled with its energy (keV) or id. One file per image for files with
    several images, ``NAME_clusters_<EXTNAME>.reg``, to load on that image.
``NAME.png``
    Every image beside its colour-coded segmentation, with the share of each class.
``NAME_spectrum.png``
    The energy spectrum per image and particle kind and the point fit's width against energy
    (:func:`ccdseg.plots.plot_spectrum`; empty panels when the gain is unknown).
``NAME_find_<class>.png``
    With ``find``: stamps of the largest regions of that class (``NAME_find_<class>_<EXTNAME>.png``
    per image for files with several images).

A file is written completely or not at all: every output is first written to a temporary
file, and all are renamed into place only when all are written (a journal lists them during
the renames, so a job killed between two renames is redone cleanly, see
:func:`ccdseg.io.atomic.atomic_paths`). Outputs get the permissions the umask gives new files.
Existing outputs are not replaced without ``overwrite``, and this is checked for all of a
file's outputs before any work. :func:`process_files` keeps a run log of file statuses
(:mod:`ccdseg.pipeline.batch`) from which ``skip_existing`` resumes an interrupted batch.

Each image is cut into its amplifier segments (:func:`ccdseg.calib.amplifiers.find_segments`, option
``amplifiers``). Pixels outside every segment (prescan and overscan named by the header: ``DATASEC`` in
the IRAF/NOAO convention ``[x1:x2,y1:y2]``, 1-based, inclusive, or the LTA and DAMIC-M keys) are left
out of every statistic and labelled background; in the DAMIC-M test file's partial readout
(``NCOLPRE = 3900``) every column read is active. A single segment without a significant baseline
along the row is normalised as a whole, exactly as the network was trained; otherwise every segment's
zero (row pedestal and column baseline, :func:`ccdseg.calib.baseline.subtract_zero`) is removed and
its noise equalised, so that the network sees each amplifier normalised on its own, and the catalogue
measures charge above the same zero. The layout goes into each ``LABELS`` header: ``CSAMPS`` (e.g.
``'2x2'``), ``CSAMPn`` (section of segment n, 1-based) and, where measured, ``CSGAINn`` (ADU/e-).
"""

import functools
import os
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import vstack

from ccdseg import plots
from ccdseg._version import __version__
from ccdseg.calib.amplifiers import find_segments
from ccdseg.calib.gain import resolve_gain
from ccdseg.classes import NAMES, class_id
from ccdseg.errors import CcdsegError, InputError
from ccdseg.io import check_absent, fits_stem, image_header, read_images
from ccdseg.io import output_paths as files
from ccdseg.io.atomic import atomic_paths, recover_group
from ccdseg.io.regions import region_file_text
from ccdseg.measure import catalog
from ccdseg.measure.catalog import saturated_pixels
from ccdseg.measure.diffusion import DAMIC_A_UM2, DAMIC_B_PER_UM
from ccdseg.measure.mask import mask_hdu
from ccdseg.measure.objects import resolve_objects
from ccdseg.measure.run_mask import apply_run_mask, read_run_mask
from ccdseg.measure.sections import find_sections
from ccdseg.measure.summary import search_products, summary_table
from ccdseg.nn.normalize import equalize_noise, network_input
from ccdseg.pipeline import batch, runners
from ccdseg.pipeline.options import ProcessOptions

#: Pixels of context around each region in the ``find`` figures.
_FIND_MARGIN = 5
#: Regions drawn in a ``find`` figure (the largest ones).
FIND_SHOWN = 16
#: Catalogue columns in electrons: FITS has no standard unit for them, astropy drops it on writing.
_ELECTRON_COLUMNS = ("charge_e", "peak_e")


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
    outputs: list               # written files (with ``skipped``: those of the earlier run)
    images: list                # ImageResult per image HDU (empty when skipped)
    skipped: bool = False       # done in an earlier run (``skip_existing``), not processed again


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
        Keys "seg", "csv", "summary", "png", "spectrum", and per image (one key with label "" for a
        single image) "reg:<label>" and, with ``find``, "find:<label>".
    """
    per_image = labels if len(labels) > 1 else [""]
    suffixes = {"seg": "_seg.fits", "csv": "_clusters.csv", "summary": "_summary.csv", "png": ".png",
                "spectrum": "_spectrum.png"}
    for label in per_image:
        suffixes[f"reg:{label}"] = f"_clusters{'_' + label if label else ''}.reg"
    if find is not None:
        name = NAMES[class_id(find)].replace(" ", "_")
        for label in per_image:
            suffixes[f"find:{label}"] = f"_find_{name}{'_' + label if label else ''}.png"
    return files(out_dir, fits_stem(path), suffixes)


def _analysed_image(image, segments):
    """The image with pixels outside every segment set to NaN (left out of statistics, labelled background)."""
    covered = np.zeros(image.data.shape, dtype=bool)
    for segment in segments:
        covered[segment.rows, segment.cols] = True
    if covered.all():
        return image.data
    return np.where(covered, image.data, np.float32(np.nan))


def _segment(data, segments, model, options, progress=False):
    """Labels, probabilities (None for the classical method), and the image and pedestal of the catalogue (ADU).

    The network and the classical method label the frame as :func:`ccdseg.nn.normalize.network_input` gives
    it: as it is, or each segment minus its zero at one noise (scaled back to ADU for the catalogue).
    """
    params = model.normalization if options.method == "network" else None
    image, stats, noise = network_input(data, segments, params)
    labels, probs = _label(image, stats, model, options, progress)
    if noise is None:
        return labels, probs, data, stats.pedestal
    equalize_noise(image, segments, noise, undo=True)
    return labels, probs, image, 0.0


def _label(data, stats, model, options, progress):
    """Labels and probabilities (None for the classical method)."""
    if options.method == "classical":
        from ccdseg.measure.classical import segment_classical
        return segment_classical(data), None
    from ccdseg.infer.predict import segment  # torch is imported only for the network method
    # the catalogue's mean_prob needs the cluster plane only: the whole cube only when it is written
    return segment(data, model=model, tile_size=options.tile_size, device=options.device,
                   precision=options.precision, return_probabilities=options.probabilities or "cluster",
                   engine=options.engine, stats=stats, cluster_threshold=options.cluster_threshold,
                   progress=progress)


def layout_cards(segments):
    """Header cards of the amplifier layout: ``CSAMPS`` ('COLSxROWS'), ``CSAMPn`` and ``CSGAINn``."""
    cols = len({(s.cols.start, s.cols.stop) for s in segments})
    rows = len({(s.rows.start, s.rows.stop) for s in segments})
    layout = f"{cols}x{rows}" if cols * rows == len(segments) else str(len(segments))
    cards = [("CSAMPS", layout, "amplifier segments (COLSxROWS)")]
    for number, segment in enumerate(segments, start=1):
        cards.append((f"CSAMP{number}", segment.section, "amplifier segment [x1:x2,y1:y2]"))
        if segment.gain is not None:
            cards.append((f"CSGAIN{number}", round(segment.gain.value, 6),
                          f"[ADU/e-] measured, +- {segment.gain.error:.2g}"))
    return cards


def process_file(path, out_dir, options=None, *, model=None, progress=False, **changes):
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
    progress : bool
        Show a progress bar over the network's tiles (on stderr), for large frames.
    **changes
        Fields of :class:`ProcessOptions` to change, e.g. ``gain=1.3``.

    Returns
    -------
    FileResult
        With ``skipped`` (and no images) when ``options.skip_existing`` and all its outputs exist.

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
    recover_group(paths.values())  # outputs of an earlier try of this file that was killed mid-rename
    if options.skip_existing and all(p.exists() for p in paths.values()):
        # complete (no journal left): done by a run stopped before it logged the file
        return FileResult(path, list(paths.values()), [], skipped=True)
    check_absent(paths.values(), options.overwrite)
    model = _network(model, options)
    try:
        return _process(path, images, primary, paths, model, options, progress)
    except CcdsegError:
        raise
    except _UNEXPECTED as error:
        raise InputError(path, f"cannot be processed ({type(error).__name__}: {_first_line(error)})") from error


def try_process_file(path, out_dir, options=None, *, model=None, progress=False, debug=False):
    """:func:`process_file`, with any failure returned as one line instead of raised.

    Parameters
    ----------
    debug : bool
        Append the traceback to the failure line.

    Returns
    -------
    result : FileResult or None
        None when the file failed.
    failure : str or None
        ``"PATH: reason"`` for a :class:`~ccdseg.errors.CcdsegError`, ``"PATH: Type: reason"``
        for any other error, else None.
    """
    try:
        return process_file(path, out_dir, options, model=model, progress=progress), None
    except Exception as error:  # noqa: BLE001 - whatever one file does, the batch goes on
        message = str(error) if isinstance(error, CcdsegError) else f"{type(error).__name__}: {_first_line(error)}"
        line = message if message.startswith(f"{path}:") else f"{path}: {message}"
        return None, line + ("\n" + traceback.format_exc().rstrip() if debug else "")


def process_files(paths, out_dir, options=None, *, model=None, progress=True, workers=None, scheduler=None,
                  debug=False, **changes):
    """Run :func:`process_file` on many files; a failing file does not stop the others.

    Every file's status goes to the run log ``out_dir/ccdseg_run.csv`` as soon as it is done
    (:class:`ccdseg.pipeline.batch.RunLog`).

    Parameters
    ----------
    paths : iterable of str or Path
        Input FITS files. A file given twice is processed once.
    out_dir : str or Path
        Output directory.
    options : ProcessOptions, optional
        What to do with each file; ``**changes`` are applied to it. With ``skip_existing``,
        files logged ``done`` by an earlier run whose outputs all exist are skipped.
    model : Model, str, path-like or None
        Loaded once for all files (network method).
    progress : bool
        Show a progress bar over the files (on stderr), or over the tiles of a single file.
    workers : int, optional
        Process the files in parallel on a local Dask cluster of this many worker processes
        (see :func:`ccdseg.pipeline.runners.run_dask`); a file whose worker dies is retried.
    scheduler : str, optional
        Process the files on the Dask cluster of this scheduler (``tcp://HOST:PORT``).
    debug : bool
        Append each failure's traceback to its line.

    Returns
    -------
    results : list of FileResult
        One per file processed completely or skipped (``skipped``).
    failures : list of str
        One line ``"PATH: reason"`` per failed file (more lines with ``debug``).

    Raises
    ------
    ConfigError
        Invalid options, different inputs of the same name (they would write the same
        outputs), Dask missing (with ``workers`` or ``scheduler``), or the scheduler cannot be reached.
    ModelFileError
        The model cannot be loaded (every file would fail alike).
    """
    options = (options or ProcessOptions()).replace(**changes)
    paths = batch.unique_inputs(paths)
    log = batch.RunLog(out_dir)
    finished = log.finished() if options.skip_existing else {}
    skipped = [FileResult(path, finished[os.path.abspath(path)], [], skipped=True) for path in paths
               if os.path.abspath(path) in finished]
    paths = [path for path in paths if os.path.abspath(path) not in finished]
    model = _network(model, options)

    def record(path, result, failure):
        if failure is None:
            log.record(path, "done", outputs=result.outputs)
        else:
            log.record(path, "failed", reason=failure.splitlines()[0].removeprefix(f"{path}: "))

    if workers is None and scheduler is None:
        single = len(paths) == 1  # one file: a bar over its tiles says more than 0/1 -> 1/1
        job = functools.partial(try_process_file, out_dir=out_dir, options=options, model=model,
                                progress=progress and single, debug=debug)
        results, failures = runners.run_serial(job, paths, progress=progress and not single, on_result=record)
        return skipped + results, failures
    # workers load the model from its file: a loaded model does not travel
    model = None if model is None else Path(getattr(model, "path", model)).absolute()
    job = functools.partial(try_process_file, out_dir=Path(out_dir).absolute(), options=options, model=model,
                            debug=debug)
    results, failures = runners.run_dask(job, [path.absolute() for path in paths], workers=workers,
                                         scheduler=scheduler, progress=progress, on_result=record)
    return skipped + results, failures


def _network(model, options):
    """The loaded network model (None for the classical method), checked against the tile size."""
    if options.method != "network":
        return model
    from ccdseg.infer.predict import get_model
    model = get_model(model, options.device, options.engine)
    options.check_tile_size(2 ** model.arch["depth"])
    return model


#: Errors that the input data cause: astropy/cfitsio reading (OSError), astropy parsing and numpy on unusual
#: values (ValueError), an image too large for memory; reported as a problem of that file. Others (KeyError,
#: TypeError, IndexError, ...) are ccdseg's own bugs and propagate with their traceback.
_UNEXPECTED = (OSError, ValueError, MemoryError)


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


def _labels_header(image, used_gain, source):
    """Header of a LABELS extension: the image's keys, the class names, the input HDU and the gain."""
    header = image_header(image.header)
    for class_number, name in enumerate(NAMES):
        header[f"CLASS{class_number}"] = (name, f"name of class id {class_number}")
    header["CSHDU"] = (image.index, "index of the input HDU (0 = primary)")
    header["CSEXTN"] = (image.name, "EXTNAME of the input HDU ('' when unnamed)")
    if used_gain is not None:
        header["GAINUSED"] = (used_gain, "[ADU/e-] gain of the cluster catalogue")
    header["GAINSRC"] = (source, "option, header, estimated or none")
    return header


def _probabilities_header():
    header = fits.Header()
    for class_number, name in enumerate(NAMES):
        header[f"PLANE{class_number + 1}"] = (name, f"plane {class_number + 1}: probability of class {class_number}")
    return header


def _clusters_hdu(table, diffusion):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The unit 'electron' could not be saved")
        clusters = fits.table_to_hdu(table)
    for name in _ELECTRON_COLUMNS:
        clusters.header[f"TUNIT{table.colnames.index(name) + 1}"] = "electron"
    clusters.name = "CLUSTERS"
    a_um2, b_per_um = diffusion or (DAMIC_A_UM2, DAMIC_B_PER_UM)
    clusters.header["DIFFA"] = (a_um2, "[um2] A of the diffusion law of depth_um")
    clusters.header["DIFFB"] = (b_per_um, "[1/um] b of sigma^2(z) = -A ln(1 - b z)")
    return clusters


def _process(path, images, primary, paths, model, options, progress=False):
    single = len(images) == 1
    label_hdus, prob_hdus, tables, panels, results = [], [], [], [], []
    mask_hdus, summaries = [], []  # search products
    for image in images:
        segments = find_segments(image.data, (image.header, primary), layout=options.amplifiers)
        data = _analysed_image(image, segments)
        labels, probs, measured, pedestal = _segment(data, segments, model, options, progress)
        if options.objects:
            # per amplifier segment, as each was normalised; the halo rule weighs hot pixel against
            # background where the whole cube was kept
            for segment in segments:
                region = (segment.rows, segment.cols)
                labels[region] = resolve_objects(labels[region],
                                                 probs[(slice(None), *region)] if options.probabilities else None)
        # --- search products: a run's defects relabel the segmentation (ccdseg.measure.run_mask) ---
        defects = None if options.run_mask is None else read_run_mask(options.run_mask, image.label, data.shape)
        labels = labels if defects is None else apply_run_mask(labels, defects)
        used_gain, source = resolve_gain(data, (image.header, primary), options.gain, segments=segments)
        tables.append(catalog.find_clusters(measured, labels, probabilities=probs, gain=used_gain, pedestal=pedestal,
                                            hdu=image.label, saturated=saturated_pixels(image.data, image.header),
                                            particles=options.particles, diffusion=options.diffusion))
        del measured
        suffix = "" if single else f"_{image.label}"
        header = _labels_header(image, used_gain, source)
        header.update(layout_cards(segments))
        label_hdus.append(fits.ImageHDU(labels, header=header, name=f"LABELS{suffix}"))
        if options.probabilities:
            prob_hdus.append(fits.ImageHDU(probs, header=_probabilities_header(), name=f"PROB{suffix}"))
        del probs
        panels.append((image.name or f"HDU {image.index}", image.data, labels))
        sections = find_sections(labels, options.find) if options.find is not None else []
        results.append(ImageResult(image.label, image.data.shape, plots.class_fractions(labels), len(tables[-1]),
                                   used_gain, source, sections))
        # --- search products: mask, low-energy events, summary (ccdseg.measure.summary) ---
        products = search_products(data, labels, tables[-1], gain=used_gain, headers=(image.header, primary),
                                   hdu=image.label, run_defects=defects)
        tables[-1] = products.catalog
        mask_hdus.append(mask_hdu(products.mask, f"MASK{suffix}"))
        summaries.append(products.summary)

    table = vstack(tables, metadata_conflicts="silent")
    table["id"] = np.arange(1, len(table) + 1, dtype=table["id"].dtype)  # unique over the file's images
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
    summary = summary_table(summaries)
    summary_hdu = fits.table_to_hdu(summary)
    summary_hdu.name = "SUMMARY"
    hdulist = fits.HDUList([provenance, *label_hdus, *prob_hdus, _clusters_hdu(table, options.diffusion), *mask_hdus,
                            summary_hdu])

    with atomic_paths(paths, options.overwrite) as temps:
        hdulist.writeto(temps["seg"], overwrite=True, checksum=True)
        table.write(temps["csv"], format="ascii.csv", overwrite=True)
        summary.write(temps["summary"], format="ascii.csv", overwrite=True)
        plots.plot_segmentation_panels(panels, temps["png"], title=path.name)
        plots.plot_spectrum(table, temps["spectrum"], title=path.name)
        for image, (_, _, labels) in zip(images, panels, strict=True):
            label = "" if single else image.label
            Path(temps[f"reg:{label}"]).write_text(region_file_text(table[table["hdu"] == image.label]))
            if f"find:{label}" in temps:
                sections = find_sections(labels, options.find, margin=_FIND_MARGIN)
                plots.plot_sections(image.data, labels, sections, temps[f"find:{label}"], max_panels=FIND_SHOWN,
                                    title=f"{NAMES[options.find]} regions" + (f" of {label}" if label else ""))
    return FileResult(path, list(paths.values()), results)
