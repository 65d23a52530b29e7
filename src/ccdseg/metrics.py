"""Pixel-level and cluster-level scores of a segmentation against the simulation's truth.

Pixel level: a confusion matrix (rows truth, columns prediction) and the per-class
precision, recall, F1 and IoU derived from it. Object level: which true clusters were
detected, how many predicted clusters are false, the detection efficiency against charge and
depth, and the share of the cluster charge that the predicted cluster pixels contain.

Everything that accumulates over many images is a count: add confusion matrices, or pass
lists of images to :func:`cluster_object_metrics`.
"""

import numpy as np
from astropy.table import Table
from scipy import ndimage

from ccdseg.classes import CLUSTER, IGNORE, N_CLASSES, NAMES

#: Default charge bins (e-): 5 per decade from 1 e- to 100 ke-.
CHARGE_BINS_E = np.logspace(0.0, 5.0, 26)
#: Default depth bins (µm): 9 slices of the 675 µm DAMIC thickness.
DEPTH_BINS_UM = np.linspace(0.0, 675.0, 10)


def confusion_matrix(truth, pred, n_classes=N_CLASSES, ignore_index=IGNORE):
    """Count pixels by (true class, predicted class).

    Parameters
    ----------
    truth, pred : array_like of int, same shape (any number of dimensions)
        True and predicted class ids.
    n_classes : int
        Number of classes C; ids must lie in 0..C-1.
    ignore_index : int or None
        Pixels whose *true* label is this value are skipped (None: skip nothing).

    Returns
    -------
    ndarray (C, C), int64
        ``matrix[i, j]`` = number of pixels of true class i predicted as class j.

    Raises
    ------
    ValueError
        If the shapes differ or an id (other than ``ignore_index`` in ``truth``) is out of range.
    """
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    if truth.shape != pred.shape:
        raise ValueError(f"truth shape {truth.shape} differs from prediction shape {pred.shape}")
    truth = truth.ravel()
    pred = pred.ravel()
    if ignore_index is not None:
        keep = truth != ignore_index
        if not keep.all():
            truth, pred = truth[keep], pred[keep]
    truth = truth.astype(np.int64)
    pred = pred.astype(np.int64)
    for name, values in (("truth", truth), ("prediction", pred)):
        if values.size and (values.min() < 0 or values.max() >= n_classes):
            raise ValueError(f"{name} contains class ids outside 0..{n_classes - 1}")
    counts = np.bincount(truth * n_classes + pred, minlength=n_classes * n_classes)
    return counts.reshape(n_classes, n_classes)


def ratio(numerator, denominator):
    """Numerator / denominator (float64 array); nan where the denominator is not positive.

    A class that never occurs has no score, rather than a score of 0.
    """
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), np.nan)


def pixel_accuracy(confusion):
    """Share of (non-ignored) pixels whose predicted class is the true class; nan if none."""
    confusion = np.asarray(confusion)
    return float(ratio(np.trace(confusion), confusion.sum()))


def class_scores(confusion, names=NAMES):
    """Per-class precision, recall, F1 and intersection over union.

    Parameters
    ----------
    confusion : ndarray (C, C)
        Output of :func:`confusion_matrix` (or a sum of several).
    names : sequence of str
        Class names, one per row.

    Returns
    -------
    astropy.table.Table
        One row per class with columns ``class`` (id), ``name``, ``precision`` (TP / predicted),
        ``recall`` (TP / true), ``f1`` (2 TP / (true + predicted)), ``iou``
        (TP / (true + predicted - TP)) and ``support`` (true pixels). A ratio whose
        denominator is 0 is nan, not 0, so that a class absent from both truth and
        prediction does not pull averages down (sklearn reports 0 with a warning).
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    tp = np.diag(confusion)
    true = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    return Table({
        "class": np.arange(len(tp)),
        "name": list(names)[:len(tp)],
        "precision": ratio(tp, predicted),
        "recall": ratio(tp, true),
        "f1": ratio(2 * tp, true + predicted),
        "iou": ratio(tp, true + predicted - tp),
        "support": true,
    })


def format_report(confusion, names=NAMES, digits=3):
    """Text report in the layout of sklearn's ``classification_report``, plus IoU.

    Rows: one per class, ``accuracy`` (pixel accuracy), ``macro avg`` (mean over classes,
    nan scores skipped) and ``weighted avg`` (weighted by support, nan scores skipped).
    """
    scores = class_scores(confusion, names)
    columns = ("precision", "recall", "f1", "iou")
    width = max(len("weighted avg"), *(len(n) for n in scores["name"]))
    header = f"{'':>{width}} " + "".join(f"{h:>10}" for h in ("precision", "recall", "f1-score", "iou", "support"))

    def line(name, values, support):
        cells = "".join(f"{'':>10}" if v is None else f"{v:>10.{digits}f}" for v in values)
        return f"{name:>{width}} {cells}{support:>10d}"

    lines = [header, ""]
    lines += [line(row["name"], [row[c] for c in columns], row["support"]) for row in scores]
    total = int(np.sum(scores["support"]))
    support = np.asarray(scores["support"], dtype=np.float64)
    lines.append("")
    lines.append(line("accuracy", [None, None, pixel_accuracy(confusion), None], total))
    macro, weighted = [], []
    for c in columns:
        values = np.asarray(scores[c], dtype=np.float64)
        good = np.isfinite(values)
        macro.append(float(values[good].mean()) if good.any() else np.nan)
        weighted.append(float(ratio(np.sum(values[good] * support[good]), support[good].sum())))
    lines.append(line("macro avg", macro, total))
    lines.append(line("weighted avg", weighted, total))
    return "\n".join(lines)


class ClusterMatch:
    """Result of :func:`match_clusters` for one image.

    Attributes
    ----------
    detected : ndarray of bool
        One entry per row of the truth table: True if any of the cluster's labelled pixels
        is predicted CLUSTER.
    n_true, n_detected : int
        True clusters and detected ones.
    n_pred : int
        Predicted clusters (connected components of predicted CLUSTER pixels).
    n_false : int
        Predicted clusters that overlap no true cluster pixel.
    n_pixels : int
        Pixels in the image, for the false-cluster rate.
    """

    def __init__(self, detected, n_pred, n_false, n_pixels):
        self.detected = detected
        self.n_true = int(detected.size)
        self.n_detected = int(detected.sum())
        self.n_pred = int(n_pred)
        self.n_false = int(n_false)
        self.n_pixels = int(n_pixels)

    def __repr__(self):
        return (f"ClusterMatch(n_true={self.n_true}, n_detected={self.n_detected}, "
                f"n_pred={self.n_pred}, n_false={self.n_false}, n_pixels={self.n_pixels})")


def match_clusters(truth_ids, truth_table, pred_labels, connectivity=2):
    """Match true clusters to predicted cluster pixels.

    Parameters
    ----------
    truth_ids : ndarray (H, W) of int
        Id of the true cluster owning each cluster-labelled pixel (``Simulation.ids``), 0 elsewhere.
    truth_table : astropy.table.Table
        True clusters, with an ``id`` column matching ``truth_ids``. Rows whose id owns no
        labelled pixel (too faint to be labelled) count as true clusters that cannot be
        detected; filter the table first to leave them out.
    pred_labels : ndarray (H, W) of int
        Predicted class ids.
    connectivity : int
        1: predicted pixels touching by an edge form one cluster; 2 (default): diagonal
        neighbours too (8-connectivity, as SENSEI's clustering).

    Returns
    -------
    ClusterMatch
        A true cluster is *detected* if at least one of its pixels is predicted CLUSTER; a
        predicted cluster is *false* if none of its pixels belongs to a true cluster. Several
        true clusters merged into one predicted cluster are all detected.
    """
    truth_ids = np.asarray(truth_ids)
    pred_labels = np.asarray(pred_labels)
    if truth_ids.shape != pred_labels.shape:
        raise ValueError(f"truth_ids shape {truth_ids.shape} differs from pred_labels shape {pred_labels.shape}")
    ids = np.asarray(truth_table["id"], dtype=np.int64)
    predicted = pred_labels == CLUSTER
    size = int(max(truth_ids.max(initial=0), ids.max(initial=0))) + 1
    hit = np.bincount(truth_ids[predicted].astype(np.int64), minlength=size) > 0
    hit[0] = False
    components, n_pred = ndimage.label(predicted, structure=ndimage.generate_binary_structure(2, connectivity))
    touched = np.zeros(n_pred + 1, dtype=bool)
    touched[components[truth_ids > 0]] = True
    n_false = n_pred - int(touched[1:].sum())
    return ClusterMatch(hit[ids], n_pred, n_false, truth_ids.size)


def binned_efficiency(values, detected, bins):
    """Detection efficiency in bins of a true-cluster property.

    Parameters
    ----------
    values : array_like
        Property of each true cluster (charge in e-, depth in µm, ...).
    detected : array_like of bool
        Whether each cluster was detected.
    bins : array_like
        Bin edges; clusters outside them are not counted.

    Returns
    -------
    astropy.table.Table
        Columns ``lo``, ``hi``, ``centre`` (geometric mean for positive edges, else the
        midpoint), ``n_true``, ``n_detected``, ``efficiency`` (nan in empty bins),
        ``efficiency_err`` (binomial sqrt(ε(1-ε)/n), 0 at ε = 0 or 1) and
        ``efficiency_lo`` / ``efficiency_hi`` (Wilson 68 % interval, informative at 0 and 1).
        Counts add over images: sum ``n_true`` and ``n_detected`` and recompute.
    """
    values = np.asarray(values, dtype=np.float64)
    detected = np.asarray(detected, dtype=bool)
    bins = np.asarray(bins, dtype=np.float64)
    n_true = np.histogram(values, bins)[0]
    n_detected = np.histogram(values[detected], bins)[0]
    return efficiency_table(bins, n_true, n_detected)


def efficiency_table(bins, n_true, n_detected):
    """Efficiency columns from per-bin counts (see :func:`binned_efficiency`)."""
    bins = np.asarray(bins, dtype=np.float64)
    n = np.asarray(n_true, dtype=np.int64)
    k = np.asarray(n_detected, dtype=np.int64)
    lo, hi = bins[:-1], bins[1:]
    centre = np.sqrt(lo * hi) if np.all(bins > 0) else 0.5 * (lo + hi)
    eff = ratio(k, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        err = np.sqrt(eff * (1 - eff) / n)
        # Wilson score interval at z = 1
        denom = 1 + 1 / n
        mid = (eff + 0.5 / n) / denom
        half = np.sqrt(eff * (1 - eff) / n + 0.25 / n ** 2) / denom
    return Table({"lo": lo, "hi": hi, "centre": centre, "n_true": n, "n_detected": k,
                  "efficiency": eff, "efficiency_err": err,
                  "efficiency_lo": mid - half, "efficiency_hi": mid + half})


def charge_at_efficiency(bin_centres, efficiency, level=0.5):
    """Charge (e-) at which the efficiency first rises through ``level``.

    Interpolates linearly in efficiency against log(charge) between the last point below
    ``level`` and the next one at or above it; bins with nan efficiency are skipped.

    Returns
    -------
    float
        The crossing (e-); nan if the efficiency never reaches ``level`` or is already at or
        above it in the first bin (the crossing lies below the binned range: extend the bins).
    """
    x = np.asarray(bin_centres, dtype=np.float64)
    y = np.asarray(efficiency, dtype=np.float64)
    good = np.isfinite(y) & (x > 0)
    x, y = x[good], y[good]
    above = np.flatnonzero(y >= level)
    if above.size == 0 or above[0] == 0:
        return float("nan")
    i = above[0]
    t = (level - y[i - 1]) / (y[i] - y[i - 1])
    return float(np.exp(np.log(x[i - 1]) + t * (np.log(x[i]) - np.log(x[i - 1]))))


def _as_list(item, is_single):
    return [item] if is_single(item) else list(item)


def cluster_object_metrics(truth_ids, truth_table, pred_labels, cluster_charge=None,
                           charge_bins=None, depth_bins=None, connectivity=2, level=0.5):
    """Object-level scores of predicted clusters, over one image or a list of images.

    Parameters
    ----------
    truth_ids : ndarray (H, W) or list of them
        True cluster id per pixel (``Simulation.ids``), 0 outside clusters.
    truth_table : astropy.table.Table or list of them
        True clusters with columns ``id``, ``charge_e`` (e-) and ``depth_um`` (µm).
    pred_labels : ndarray (H, W) or list of them
        Predicted class ids.
    cluster_charge : ndarray (H, W) or list of them, optional
        Charge deposited by ionisation events (e-), ``Simulation.charge["cluster"]``; needed
        for the charge completeness (nan without it).
    charge_bins : array_like, optional
        Charge bin edges (e-); default :data:`CHARGE_BINS_E` (log, 1 e- to 100 ke-).
    depth_bins : array_like, optional
        Depth bin edges (µm); default :data:`DEPTH_BINS_UM` (0-675 µm).
    connectivity : int
        Neighbourhood of predicted clusters (see :func:`match_clusters`).
    level : float
        Efficiency level for ``charge_at_level_e``.

    Returns
    -------
    dict
        ``by_charge``, ``by_depth``: tables from :func:`binned_efficiency`;
        ``n_true``, ``n_detected``, ``efficiency`` (all clusters);
        ``n_pred``, ``n_false``, ``n_pixels``, ``false_per_mpix`` (false clusters per 10⁶ pixels);
        ``charge_true_e``, ``charge_found_e``, ``charge_completeness`` (share of the true
        cluster charge in predicted CLUSTER pixels);
        ``charge_at_level_e``: :func:`charge_at_efficiency` of ``by_charge`` at ``level``.
    """
    def single(item):
        return isinstance(item, (np.ndarray, Table))

    ids_list = _as_list(truth_ids, single)
    tables = _as_list(truth_table, single)
    preds = _as_list(pred_labels, single)
    charges = [None] * len(ids_list) if cluster_charge is None else _as_list(cluster_charge, single)
    if not len(ids_list) == len(tables) == len(preds) == len(charges):
        raise ValueError("truth_ids, truth_table, pred_labels and cluster_charge must have the same number of images")
    charge_bins = CHARGE_BINS_E if charge_bins is None else charge_bins
    depth_bins = DEPTH_BINS_UM if depth_bins is None else depth_bins

    detected, charge_e, depth_um = [], [], []
    n_pred = n_false = n_pixels = 0
    charge_true = charge_found = 0.0
    for ids, table, pred, charge in zip(ids_list, tables, preds, charges, strict=True):
        match = match_clusters(ids, table, pred, connectivity)
        detected.append(match.detected)
        charge_e.append(np.asarray(table["charge_e"], dtype=np.float64))
        depth_um.append(np.asarray(table["depth_um"], dtype=np.float64))
        n_pred += match.n_pred
        n_false += match.n_false
        n_pixels += match.n_pixels
        if charge is not None:
            charge = np.where(np.isfinite(charge), charge, 0.0)
            charge_true += float(charge.sum(dtype=np.float64))
            charge_found += float(charge[np.asarray(pred) == CLUSTER].sum(dtype=np.float64))
    detected = np.concatenate(detected) if detected else np.zeros(0, bool)
    charge_e = np.concatenate(charge_e) if charge_e else np.zeros(0)
    depth_um = np.concatenate(depth_um) if depth_um else np.zeros(0)

    by_charge = binned_efficiency(charge_e, detected, charge_bins)
    have_charge = cluster_charge is not None
    return {
        "by_charge": by_charge,
        "by_depth": binned_efficiency(depth_um, detected, depth_bins),
        "n_true": int(detected.size),
        "n_detected": int(detected.sum()),
        "efficiency": float(ratio(detected.sum(), detected.size)),
        "n_pred": n_pred,
        "n_false": n_false,
        "n_pixels": n_pixels,
        "false_per_mpix": float(ratio(1e6 * n_false, n_pixels)),
        "charge_true_e": charge_true if have_charge else float("nan"),
        "charge_found_e": charge_found if have_charge else float("nan"),
        "charge_completeness": float(ratio(charge_found, charge_true)) if have_charge else float("nan"),
        "charge_at_level_e": charge_at_efficiency(by_charge["centre"], by_charge["efficiency"], level),
    }
