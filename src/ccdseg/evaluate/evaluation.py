"""Score segmentations of simulated images against their truth, and the fixed benchmark set.

A simulated image ``NAME.fits`` carries its truth in ``NAME_truth.fits`` (:func:`ccdseg.sim.truth.read_truth`).
A method labels the image (the classical baseline, a network model, or label files written by
``ccdseg predict``), and :class:`Evaluation` adds up, image by image, the pixel confusion matrix
and the cluster-object counts of :mod:`ccdseg.metrics`, so that any number of images is scored
in constant memory.

The charge completeness needs the charge of every true cluster pixel, which the truth file does
not hold: it is measured in the image (image minus its row pedestal, over the header ``GAIN``),
so it is the share of the *measured* charge of true cluster pixels that lies in predicted
cluster pixels (noise included; 1 for a perfect segmentation).

Only the network method imports torch (through :mod:`ccdseg.infer.predict`).
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from tqdm import tqdm

from ccdseg import io, metrics, plots
from ccdseg._version import __version__
from ccdseg.calib.background import row_pedestal
from ccdseg.calib.gain import resolve_gain
from ccdseg.classes import CLUSTER, N_CLASSES, NAMES
from ccdseg.errors import CcdsegError, ConfigError, InputError
from ccdseg.infer import TILE_SIZE
from ccdseg.io import check_absent
from ccdseg.io import output_paths as files
from ccdseg.sim.truth import read_simulation

METHODS = ("classical", "network", "predictions")
#: Presets of the benchmark set, and its size: 8 images of 512 x 512 px per preset are scored by
#: the classical baseline and the default network in about a minute on 2 CPU cores.
#: Efficiency level of the reported threshold charge.
LEVEL = 0.5


def find_images(paths):
    """Simulated image files among ``paths``: files as given, directories searched (sorted, not recursive).

    Truth files (``*_truth.fits``) and segmentations (``*_seg.fits``) in a directory are skipped.
    """
    found = []
    for path in map(Path, paths):
        if not path.is_dir():
            found.append(path)
            continue
        for item in sorted(path.iterdir()):
            fits_file = item.is_file() and item.name.lower().endswith(io.FITS_SUFFIXES)
            if fits_file and not io.fits_stem(item).endswith(("_truth", "_seg")):
                found.append(item)
    return found


@dataclass
class Evaluation:
    """Pixel and cluster-object counts of one method, summed over images.

    Add images with :meth:`add`; the scores are derived from the counts on demand.
    """

    method: str
    charge_bins: np.ndarray = field(default_factory=lambda: metrics.CHARGE_BINS_E.copy())
    depth_bins: np.ndarray = field(default_factory=lambda: metrics.DEPTH_BINS_UM.copy())
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((N_CLASSES, N_CLASSES), np.int64))
    n_images: int = 0
    seconds: float = 0.0          # time spent labelling (s)
    counts: dict = field(default_factory=dict)

    def add(self, truth_labels, truth_ids, truth_table, pred_labels, cluster_charge=None):
        """Add one image.

        Parameters
        ----------
        truth_labels : ndarray (H, W) uint8
            True classes.
        truth_ids : ndarray (H, W) int
            True cluster id of each cluster pixel, 0 elsewhere.
        truth_table : astropy.table.Table
            True events (``id``, ``charge_e`` in e-, ``depth_um`` in µm); events without a
            labelled pixel (too faint to be labelled) are left out.
        pred_labels : ndarray (H, W)
            Predicted classes.
        cluster_charge : ndarray (H, W), optional
            Charge (e-) of the true cluster pixels, for the charge completeness.
        """
        self.confusion += metrics.confusion_matrix(truth_labels, pred_labels)
        labelled = np.isin(np.asarray(truth_table["id"]), np.unique(truth_ids[truth_ids > 0]))
        scores = metrics.cluster_object_metrics(truth_ids, truth_table[labelled], pred_labels, cluster_charge,
                                                self.charge_bins, self.depth_bins)
        for key in ("n_true", "n_detected", "n_pred", "n_false", "n_pixels", "charge_true_e", "charge_found_e"):
            self.counts[key] = self.counts.get(key, 0) + scores[key]
        for axis in ("by_charge", "by_depth"):
            for key in ("n_true", "n_detected"):
                name = f"{axis}:{key}"
                self.counts[name] = self.counts.get(name, 0) + np.asarray(scores[axis][key])
        self.n_images += 1

    def efficiency(self, axis="charge"):
        """Table of the detection efficiency in bins of true ``charge`` (e-) or ``depth`` (µm)."""
        bins = self.charge_bins if axis == "charge" else self.depth_bins
        zeros = np.zeros(len(bins) - 1, np.int64)
        return metrics.efficiency_table(bins, self.counts.get(f"by_{axis}:n_true", zeros),
                                        self.counts.get(f"by_{axis}:n_detected", zeros))

    def charge_at_level(self, level=LEVEL):
        """Charge (e-) at which ``level`` of the clusters are detected, as (value, bound).

        ``value`` is interpolated (:func:`ccdseg.metrics.charge_at_efficiency`) or nan; when
        the efficiency is at or above ``level`` already in the lowest bin holding clusters,
        the crossing lies below the charges simulated and ``bound`` is that bin's lower edge
        (else nan).
        """
        table = self.efficiency("charge")
        value = metrics.charge_at_efficiency(table["centre"], table["efficiency"], level)
        filled = np.flatnonzero(np.asarray(table["n_true"]) > 0)
        below = filled.size and np.isnan(value) and table["efficiency"][filled[0]] >= level
        return value, float(table["lo"][filled[0]]) if below else float("nan")

    def summary(self):
        """Scores as a JSON-ready dict (nan as None); keys are listed in :func:`to_json`."""
        scores = metrics.class_scores(self.confusion)
        c = self.counts
        n_pixels = c.get("n_pixels", 0)
        at_level, below = self.charge_at_level()
        clusters = {
            "n_true": c.get("n_true", 0), "n_detected": c.get("n_detected", 0),
            "efficiency": _float_ratio(c.get("n_detected", 0), c.get("n_true", 0)),
            "n_pred": c.get("n_pred", 0), "n_false": c.get("n_false", 0),
            "false_per_mpix": _float_ratio(1e6 * c.get("n_false", 0), n_pixels),
            "charge_true_e": c.get("charge_true_e", 0.0), "charge_found_e": c.get("charge_found_e", 0.0),
            "charge_completeness": _float_ratio(c.get("charge_found_e", 0.0), c.get("charge_true_e", 0.0)),
            "charge_at_50_e": at_level, "charge_at_50_below_e": below,
            "by_charge": _rows(self.efficiency("charge")), "by_depth": _rows(self.efficiency("depth")),
        }
        pixels = {
            "accuracy": metrics.pixel_accuracy(self.confusion),
            "classes": {row["name"]: {key: row[key] for key in ("precision", "recall", "f1", "iou", "support")}
                        for row in scores},
            "confusion": self.confusion.tolist(),
        }
        return _json_ready({"method": self.method, "n_images": self.n_images, "n_pixels": n_pixels,
                            "seconds_per_mpix": _float_ratio(1e6 * self.seconds, n_pixels),
                            "pixels": pixels, "clusters": clusters})


def _float_ratio(numerator, denominator):
    """:func:`ccdseg.metrics.ratio` of two numbers as a Python float (nan when the denominator is 0)."""
    return float(metrics.ratio(numerator, denominator))


def _rows(table):
    keys = ("lo", "hi", "n_true", "n_detected", "efficiency", "efficiency_lo", "efficiency_hi")
    return [{key: row[key] for key in keys} for row in table if row["n_true"] > 0]


def _json_ready(value):
    """Numpy scalars to Python numbers, nan to None (JSON has no nan)."""
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def read_simulated(path):
    """Image (ADU), truth labels, truth ids, truth table and measured cluster charge (e-) of a simulated file.

    The charge is in electrons at the gain of the header's ``GAIN``, else the gain measured in
    the image (:func:`ccdseg.calib.gain.resolve_gain`).

    Raises
    ------
    InputError
        As :func:`ccdseg.sim.truth.read_simulation`; or the gain is neither in the header (a
        positive ``GAIN``) nor measurable in the image.
    """
    image, labels, ids, table = read_simulation(path)
    try:
        gain, _ = resolve_gain(image.data, (image.header,), required=True)
    except ConfigError as error:  # a property of this file, not an option of the run
        raise InputError(path, str(error).removesuffix("; pass the gain in ADU/e- (--gain)")) from None
    charge = (image.data - row_pedestal(image.data)[:, None]) / gain
    return image.data, labels, ids, table, np.where(labels == CLUSTER, charge, 0.0)


def read_predicted(path, shape):
    """Labels of ``path`` (a ``NAME_seg.fits`` of ``ccdseg predict``): its ``LABELS`` extension.

    Raises
    ------
    InputError
        Missing or unreadable file, no LABELS extension, or a shape other than ``shape``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such prediction file")
    try:
        with fits.open(path, memmap=False) as hdul:
            names = [hdu.name for hdu in hdul if hdu.name.startswith("LABELS")]
            if not names:
                raise InputError(path, "no LABELS extension (not written by ccdseg predict)")
            labels = np.asarray(hdul[names[0]].data)
    except OSError as error:
        raise InputError(path, f"not a readable FITS file ({error})") from None
    if labels.shape != tuple(shape):
        raise InputError(path, f"label shape {labels.shape} does not match the image shape {tuple(shape)}")
    return labels


def labeller(method=None, *, model=None, predictions=None, device="cpu", tile_size=TILE_SIZE, precision="bf16",
             classical_options=None, cluster_threshold=None):
    """A function ``label(path, image) -> labels`` for a method.

    Parameters
    ----------
    method : {"classical", "network", "predictions"}, optional
        :func:`ccdseg.measure.classical.segment_classical`, :func:`ccdseg.infer.predict.segment` with ``model``,
        or the ``NAME_seg.fits`` files in the directory ``predictions``; default "predictions" when
        ``predictions`` is given, else "network".
    model : Model, str, path-like or None
        Network model (None: the shipped one); loaded here, once.
    predictions : str or Path
        Directory of ``ccdseg predict`` outputs (method "predictions").
    device, tile_size, precision
        Network options (see :func:`ccdseg.infer.predict.segment`).
    classical_options : dict, optional
        Keyword arguments of :func:`ccdseg.measure.classical.segment_classical`.
    cluster_threshold : float, optional
        Operating point of the network (see :func:`ccdseg.infer.predict.decide`).

    Raises
    ------
    ConfigError
        Unknown method, "predictions" without a directory, or a model or directory given to a
        method that does not use it.
    ModelFileError
        The model cannot be loaded.
    """
    method = method or ("predictions" if predictions is not None else "network")
    if model is not None and method != "network":
        raise ConfigError(f"a model is used by method 'network' only, not {method!r}")
    if predictions is not None and method != "predictions":
        raise ConfigError(f"a predictions directory is used by method 'predictions' only, not {method!r}")
    if method == "classical":
        from ccdseg.measure.classical import segment_classical
        options = classical_options or {}
        return lambda path, image: segment_classical(image, **options)
    if method == "network":
        from ccdseg.infer.predict import get_model, segment  # torch only for the network
        loaded = get_model(model, device)
        return lambda path, image: segment(image, model=loaded, tile_size=tile_size, device=device,
                                           precision=precision, return_probabilities=False,
                                           cluster_threshold=cluster_threshold)[0]
    if method == "predictions":
        if predictions is None:
            raise ConfigError("method 'predictions' needs the directory of the NAME_seg.fits files")
        return lambda path, image: read_predicted(Path(predictions) / f"{io.fits_stem(path)}_seg.fits", image.shape)
    raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def evaluate_files(paths, labellers, progress=False):
    """Score methods on simulated files; a failing file is reported and skipped.

    Parameters
    ----------
    paths : iterable of str or Path
        Simulated image files (each with its ``NAME_truth.fits``).
    labellers : dict of str -> callable
        Method name -> ``label(path, image)`` (see :func:`labeller`).
    progress : bool
        Show a progress bar (stderr).

    Returns
    -------
    evaluations : dict of str -> Evaluation
        One per method, over the files that succeeded.
    failures : list of str
        One line ``"PATH: reason"`` per failed file.
    """
    paths = list(paths)
    evaluations = {name: Evaluation(name) for name in labellers}
    failures = []
    for path in tqdm(paths, desc="ccdseg evaluate", unit="file", disable=not progress or not paths):
        try:
            image, labels, ids, table, charge = read_simulated(path)
            predicted = {}
            for name, label in labellers.items():
                start = time.perf_counter()
                predicted[name] = (label(path, image), time.perf_counter() - start)
        except CcdsegError as error:
            # an InputError names its file (the image, its truth or its prediction) already
            failures.append(str(error) if isinstance(error, InputError) else f"{path}: {error}")
            continue
        for name, (pred, seconds) in predicted.items():
            evaluations[name].add(labels, ids, table, pred, charge)
            evaluations[name].seconds += seconds
    return evaluations, failures


def to_json(evaluations, failures=()):
    """JSON text of the scores.

    Keys: ``ccdseg_version``, ``failures`` (list of "PATH: reason") and ``methods``: per method
    ``n_images``, ``n_pixels``, ``seconds_per_mpix``, ``pixels`` (``accuracy``, ``classes``: per
    class name ``precision``, ``recall``, ``f1``, ``iou``, ``support`` (true pixels); ``confusion``:
    rows truth, columns prediction) and ``clusters`` (``n_true``, ``n_detected``, ``efficiency``,
    ``n_pred``, ``n_false``, ``false_per_mpix``, ``charge_true_e``, ``charge_found_e``,
    ``charge_completeness``, ``charge_at_50_e``, ``charge_at_50_below_e``, ``by_charge`` and
    ``by_depth``: non-empty bins with ``lo``, ``hi``, ``n_true``, ``n_detected``, ``efficiency``,
    ``efficiency_lo``, ``efficiency_hi`` (Wilson 68 %)). Undefined values are null.
    """
    document = {"ccdseg_version": __version__, "failures": list(failures),
                "methods": {name: evaluation.summary() for name, evaluation in evaluations.items()}}
    return json.dumps(document, indent=2) + "\n"


def format_charge(value, below):
    """Threshold charge for a table: "12.3", "< 4.0" (below the simulated range) or "-"."""
    if np.isfinite(value):
        return f"{value:.3g}"
    return f"< {below:.3g}" if np.isfinite(below) else "-"


def format_evaluation(evaluations):
    """Printable report: per method the class scores and confusion matrix, then the cluster scores."""
    lines = []
    for name, evaluation in evaluations.items():
        lines += [f"== {name}: {evaluation.n_images} image(s)", metrics.format_report(evaluation.confusion), "",
                  "confusion (rows truth, columns prediction, pixels):",
                  f"{'':>12}" + "".join(f"{n:>12}" for n in NAMES)]
        lines += [f"{n:>12}" + "".join(f"{v:>12d}" for v in row)
                  for n, row in zip(NAMES, evaluation.confusion, strict=True)]
        lines.append("")
    header = (f"{'method':<12}{'clusters':>9}{'found':>8}{'effic.':>8}{'false':>7}{'false/Mpix':>11}"
              f"{'charge compl.':>14}{'50 % at (e-)':>14}")
    lines += ["clusters as objects:", header]
    for name, evaluation in evaluations.items():
        s = evaluation.summary()["clusters"]
        lines.append(f"{name:<12}{s['n_true']:>9d}{s['n_detected']:>8d}{_num(s['efficiency']):>8}{s['n_false']:>7d}"
                     f"{_num(s['false_per_mpix'], '.1f'):>11}{_num(s['charge_completeness']):>14}"
                     f"{format_charge(*evaluation.charge_at_level()):>14}")
    lines += ["", "efficiency by true charge (e-):", _binned(evaluations, "charge"),
              "", "efficiency by depth (um):", _binned(evaluations, "depth")]
    return "\n".join(lines)


def _num(value, spec=".3f"):
    return "-" if value is None else format(value, spec)


def _binned(evaluations, axis):
    tables = {name: evaluation.efficiency(axis) for name, evaluation in evaluations.items()}
    first = next(iter(tables.values()))
    rows = [f"{'bin':>21}{'n':>7}" + "".join(f"{name:>12}" for name in tables)]
    for i, n in enumerate(first["n_true"]):
        if n:
            cells = "".join(f"{t['efficiency'][i]:>12.3f}" for t in tables.values())
            rows.append(f"{first['lo'][i]:>9.4g} - {first['hi'][i]:<9.4g}{n:>7d}{cells}")
    return "\n".join(rows)


def output_paths(out_dir, methods):
    """Files of :func:`write_outputs`: ``evaluation.json``, ``efficiency_charge.png``, ``confusion_METHOD.png``."""
    return files(out_dir, "", {"json": "evaluation.json", "efficiency": "efficiency_charge.png",
                               **{f"confusion:{m}": f"confusion_{m}.png" for m in methods}})


def check_outputs(out_dir, methods, overwrite=False):
    """:func:`output_paths`, after checking that none exists unless ``overwrite`` (call before the work).

    Raises
    ------
    OutputError
        An output exists and ``overwrite`` is false.
    """
    paths = output_paths(out_dir, methods)
    check_absent(paths.values(), overwrite)
    return paths


def write_outputs(evaluations, out_dir, failures=(), overwrite=False):
    """Write the JSON report, one confusion-matrix PNG per method and the efficiency-vs-charge PNG.

    Returns
    -------
    dict of str -> Path
        The written files (see :func:`output_paths`).

    Raises
    ------
    OutputError
        An output exists and ``overwrite`` is false (checked before anything is written), or
        cannot be written. Each file is written atomically.
    """
    paths = check_outputs(out_dir, evaluations, overwrite)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    curves = {}
    for name, evaluation in evaluations.items():
        plots.plot_confusion(evaluation.confusion, paths[f"confusion:{name}"])
        table = evaluation.efficiency("charge")
        filled = np.asarray(table["n_true"]) > 0
        eff = np.asarray(table["efficiency"])[filled]
        # rounding leaves the Wilson bounds a hair inside 0 or 1 at eff = 0 or 1
        error = np.clip(np.vstack([eff - np.asarray(table["efficiency_lo"])[filled],
                                   np.asarray(table["efficiency_hi"])[filled] - eff]), 0.0, None)
        curves[name] = (np.asarray(table["centre"])[filled], eff, error)
    plots.plot_efficiency(curves, paths["efficiency"])
    io.write_text_atomic(paths["json"], to_json(evaluations, failures), overwrite=True)
    return paths
