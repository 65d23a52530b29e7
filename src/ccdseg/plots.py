"""Figures for users and for training: segmentations, training curves, confusion matrices, efficiencies.

Every figure is a :class:`matplotlib.figure.Figure` drawn by the Agg canvas, so no pyplot state is created
or changed (an interactive session keeps its backend and its open figures). Files are written atomically.
"""

import csv
import itertools
import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from ccdseg.calib.background import row_pedestal
from ccdseg.classes import BACKGROUND, COLORS, IGNORE, N_CLASSES, NAMES, rgb_table
from ccdseg.errors import InputError, OutputError
from ccdseg.io import atomic_path

#: Grey for pixels labelled IGNORE.
_IGNORE_RGB = (128, 128, 128)


def _save(fig, path, dpi=100):
    """Write ``fig`` to ``path`` as PNG, atomically (whatever the suffix of ``path``)."""
    FigureCanvasAgg(fig)
    if not Path(path).parent.is_dir():  # figures go beside other outputs: no directory is made for them
        raise OutputError(f"{path}: cannot write the figure (no directory {Path(path).parent})")
    with atomic_path(path, overwrite=True) as temp:
        try:
            fig.savefig(temp, format="png", dpi=dpi, bbox_inches="tight")
        except ValueError as error:
            raise OutputError(f"{path}: cannot write the figure ({error})") from error
    return Path(path)


def class_fractions(labels):
    """Fraction of the pixels in each class, IGNORE pixels left out.

    Parameters
    ----------
    labels : ndarray of int
        Segmentation with class ids 0..N_CLASSES-1 (and IGNORE).

    Returns
    -------
    ndarray (N_CLASSES,)
        Fractions summing to 1 (all zero when no pixel is labelled).
    """
    labels = np.asarray(labels).ravel()
    counts = np.bincount(labels[labels != IGNORE].astype(np.intp), minlength=N_CLASSES)[:N_CLASSES]
    total = counts.sum()
    return counts / total if total else np.zeros(N_CLASSES)


def display_limits(image, lower=1.0, upper=99.5):
    """Display range of an image from percentiles of its finite pixels.

    Parameters
    ----------
    image : ndarray
        Image, usually pedestal-subtracted (any unit).
    lower, upper : float
        Percentiles (0-100) mapped to the ends of the colour scale. The default upper percentile lies
        above the noise of a quiet CCD image, so faint clusters show and bright ones saturate.

    Returns
    -------
    (float, float)
        ``vmin < vmax`` in the unit of ``image``; (0, 1) for an image without finite pixels.
    """
    values = np.asarray(image, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    vmin, vmax = np.percentile(values, [lower, upper])
    if vmax <= vmin:
        vmax = vmin + 1.0
    return float(vmin), float(vmax)


#: Display rows reduced at a time by :func:`_display_arrays`.
_BAND_BLOCKS = 32


def _block_reduce(array, factor, fill, reduce):
    """Reduce ``factor`` x ``factor`` blocks with ``reduce`` (a NumPy reduction), padding with ``fill``."""
    if factor == 1:
        return array
    height, width = array.shape
    pad = ((0, -height % factor), (0, -width % factor))
    padded = np.pad(array, pad, constant_values=fill)
    blocks = padded.reshape(padded.shape[0] // factor, factor, padded.shape[1] // factor, factor)
    return reduce(blocks, axis=(1, 3))


def _display_arrays(image, labels, max_size):
    """Pedestal-subtracted image (block mean) and RGB labels (block max: clusters win) of display size.

    Reduced a band of rows at a time: no full-frame temporaries, whatever the frame size.
    """
    factor = max(1, int(np.ceil(max(np.shape(image)) / max_size)))
    step = factor * _BAND_BLOCKS
    means, ranks = [], []
    for y0 in range(0, np.shape(image)[0], step):
        part = np.asarray(image[y0:y0 + step], dtype=np.float64)
        finite = np.isfinite(part)
        total = _block_reduce(np.where(finite, part, 0.0), factor, 0.0, np.sum)
        count = _block_reduce(finite.astype(np.float64), factor, 0.0, np.sum)
        with np.errstate(invalid="ignore", divide="ignore"):
            means.append(total / count)
        band = np.asarray(labels[y0:y0 + step])
        ranks.append(_block_reduce(np.where(band == IGNORE, -1, band.astype(np.int16)), factor, -1, np.max))
    mean, ranked = np.concatenate(means), np.concatenate(ranks)
    # pedestal of the reduced image: as good for display and far cheaper than on the full frame
    mean -= row_pedestal(mean)[:, None]
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:N_CLASSES] = rgb_table()
    lut[IGNORE] = _IGNORE_RGB
    return mean, lut[np.where(ranked < 0, IGNORE, ranked).astype(np.uint8)], factor


def _legend_handles(labels=None):
    fractions = class_fractions(labels) if labels is not None else None
    return [Patch(facecolor=COLORS[i], edgecolor="0.5",
                  label=NAMES[i] if fractions is None else f"{NAMES[i]} {100 * fractions[i]:.2f} %")
            for i in range(N_CLASSES)]


def _show_image(ax, shown, title, shape, aspect="equal"):
    """Draw a display-size image over the pixel coordinates of the full image of ``shape``, with a colour bar."""
    vmin, vmax = display_limits(shown)
    mappable = ax.imshow(shown, cmap="gray", vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest",
                         extent=(-0.5, shape[1] - 0.5, -0.5, shape[0] - 0.5), aspect=aspect)
    ax.figure.colorbar(mappable, ax=ax, label="above row pedestal", fraction=0.05, pad=0.02)
    ax.set_title(title)
    ax.set_xlabel("column (px)")
    ax.set_ylabel("row (px)")
    _thin_ticks(ax)


def _show_labels(ax, rgb, title, labels, aspect="equal"):
    """Draw display-size RGB labels, with a legend of the class fractions of the full ``labels``."""
    height, width = np.shape(labels)
    ax.imshow(rgb, origin="lower", interpolation="nearest", extent=(-0.5, width - 0.5, -0.5, height - 0.5),
              aspect=aspect)
    ax.set_title(title)
    ax.set_xlabel("column (px)")
    ax.legend(handles=_legend_handles(labels), loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    _thin_ticks(ax)


def _thin_ticks(ax):
    """At most a few integer ticks per axis, so that long axes of thin images keep readable labels."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))


def _panel_size(shape, width=6.0):
    return width, float(np.clip(width * shape[0] / shape[1], 1.5, 8.0))


#: Images wider than this many times their height are drawn above their segmentation, not beside it.
_WIDE = 3.0
#: Drawn aspect ratios (width / height) beyond these limits are stretched to them: no 4-px strips.
_ASPECT_LIMITS = (1 / 6, 12.0)


def _layout(shape):
    """Placement of an image and its segmentation: ``(stacked, aspect, width, height)`` of one panel (inches).

    Wide images (a 40 x 5000 px strip) are stacked vertically at the full figure width; images
    whose aspect ratio lies outside :data:`_ASPECT_LIMITS` are stretched (``aspect``) to it.
    """
    ratio = shape[1] / shape[0]
    drawn = float(np.clip(ratio, *_ASPECT_LIMITS))
    aspect = "equal" if drawn == ratio else ratio / drawn  # data units of y per unit of x
    if ratio > _WIDE:
        return True, aspect, 12.0, max(12.0 / drawn, 1.5)
    width = 6.0 if drawn >= 1 else max(6.0 * drawn * 1.5, 2.5)
    return False, aspect, width, float(np.clip(width / drawn, 1.5, 9.0))


def plot_segmentation_panels(panels, path, title=None, max_size=512):
    """One figure with each image beside (or, for wide images, above) its colour-coded segmentation.

    Parameters
    ----------
    panels : sequence of (str, ndarray (H, W), ndarray (H, W))
        ``(name, image, labels)`` per image, e.g. one per CCD extension; images in any unit (the colour
        bar is in that unit, above the row pedestal).
    path : str or Path
        Output file (format from the suffix, PNG by default).
    title : str, optional
        Figure title.
    max_size : int
        Images larger than this (px) are shown by blocks: the mean of the image and the largest class id
        of the labels, so a one-pixel cluster stays visible. The legend fractions use the full labels.
        Very elongated images are drawn stretched to a readable aspect ratio (the titles say so).

    Returns
    -------
    Path
        The written file.
    """
    panels = list(panels)
    if not panels:
        raise OutputError(f"{path}: no image to plot")
    stacked, aspect, width, height = _layout(np.shape(panels[0][1]))
    rows, cols = (2 * len(panels), 1) if stacked else (len(panels), 2)
    figsize = ((width + 3.0, 2 * height * len(panels)) if stacked else (2 * width + 3.5, height * len(panels)))
    fig = Figure(figsize=(figsize[0], figsize[1] + (0.5 if title else 0)), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).reshape(len(panels), 2)
    for (name, image, labels), (ax_image, ax_labels) in zip(panels, axes, strict=True):
        shown, rgb, factor = _display_arrays(image, labels, max_size)
        notes = [f"blocks of {factor}x{factor}"] if factor > 1 else []
        if aspect != "equal":
            notes.append("stretched")
        suffix = f"\n({', '.join(notes)})" if notes else ""
        prefix = f"{name}: " if name else ""
        _show_image(ax_image, shown, f"{prefix}image{suffix}", np.shape(image), aspect)
        _show_labels(ax_labels, rgb, f"{prefix}segmentation", labels, aspect)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_segmentation(image, labels, path, title=None, max_size=512):
    """The image and its colour-coded segmentation side by side, with each class's share of pixels.

    See :func:`plot_segmentation_panels` for the parameters; this is the one-image case.
    """
    return plot_segmentation_panels([("", image, labels)], path, title=title, max_size=max_size)


def plot_comparison(image, truth, pred, path, title=None, max_size=512):
    """Image, true labels and predicted labels side by side (a training or validation example).

    Parameters
    ----------
    image : ndarray (H, W)
        Image in any unit (pedestal-subtracted for display).
    truth, pred : ndarray (H, W) of int
        True and predicted class ids.
    path : str or Path
        Output file.
    title : str, optional
        Figure title.
    max_size : int
        Larger images are shown by blocks, as in :func:`plot_segmentation_panels`.

    Returns
    -------
    Path
        The written file.
    """
    shape = np.shape(image)
    width, height = _panel_size(shape, width=4.0)
    fig = Figure(figsize=(3 * width + 2.5, height + (0.5 if title else 0)), layout="constrained")
    ax_image, ax_truth, ax_pred = fig.subplots(1, 3)
    shown, rgb_truth, _ = _display_arrays(image, truth, max_size)
    _, rgb_pred, _ = _display_arrays(image, pred, max_size)
    _show_image(ax_image, shown, "image", shape)
    _show_labels(ax_truth, rgb_truth, "truth", truth)
    _show_labels(ax_pred, rgb_pred, "prediction", pred)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _read_log(log):
    """Training log as {column: float array} from a CSV path or a sequence of dicts."""
    if isinstance(log, (str, os.PathLike)):
        try:
            with open(log, newline="") as stream:
                rows = list(csv.DictReader(stream))
        except OSError as error:
            raise InputError(log, f"cannot read the training log ({error.strerror})") from error
    else:
        rows = list(log)
    columns = {}
    for key in (rows[0].keys() if rows else ()):
        try:
            columns[key] = np.array([float(row[key]) if row[key] not in ("", None) else np.nan for row in rows])
        except (TypeError, ValueError):
            continue
    return columns


_SPLITS = {"train": "train", "val": "validation", "valid": "validation", "validation": "validation"}


def plot_curves(log, path):
    """Loss, accuracy and per-class F1 per epoch, training against validation.

    Parameters
    ----------
    log : str, Path or sequence of dict
        Training log: a CSV file or rows with an ``epoch`` column and metric columns named
        ``<split>_<metric>`` with split ``train`` or ``val``/``valid``/``validation`` (e.g. ``train_loss``,
        ``val_accuracy``, ``val_f1_cluster``). Metrics with ``f1`` in their name share one panel.
    path : str or Path
        Output file.

    Returns
    -------
    Path
        The written file.
    """
    columns = _read_log(log)
    if not columns:
        raise InputError(log if isinstance(log, (str, os.PathLike)) else "training log", "no numeric rows")
    epochs = columns.pop("epoch", np.arange(1, len(next(iter(columns.values()))) + 1))
    groups = {}
    for key, values in columns.items():
        split, _, metric = key.partition("_")
        if split in _SPLITS and metric:
            panel = "F1" if "f1" in metric else metric
            groups.setdefault(panel, []).append((_SPLITS[split], metric, values))
    if not groups:
        raise InputError(log if isinstance(log, (str, os.PathLike)) else "training log",
                         "no train_*/val_* metric columns")
    fig = Figure(figsize=(4.5 * len(groups), 3.5))
    for ax, (panel, curves) in zip(np.atleast_1d(fig.subplots(1, len(groups))), groups.items(), strict=True):
        metrics = sorted({metric for _, metric, _ in curves})
        for split, metric, values in curves:
            colour = _class_colour(metric) or f"C{metrics.index(metric)}"
            ax.plot(epochs, values, color=colour, linestyle="-" if split == "train" else "--", marker=".",
                    label=f"{split} {metric}" if len(metrics) > 1 else split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(panel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, path)


def _class_colour(metric):
    """The class colour of :mod:`ccdseg.classes` for a per-class metric (``f1_hot_pixel``), else None."""
    for number, name in enumerate(NAMES):
        if metric.endswith("_" + name.replace(" ", "_")):
            return COLORS[number]
    return None


def plot_confusion(confusion, path, names=NAMES):
    """Confusion matrix normalised by true class, each cell with its fraction and its pixel count.

    Parameters
    ----------
    confusion : ndarray (N, N)
        Pixel counts, rows = true class, columns = predicted class.
    path : str or Path
        Output file.
    names : sequence of str
        Class names for the axes.

    Returns
    -------
    Path
        The written file.
    """
    confusion = np.asarray(confusion, dtype=np.float64)
    totals = confusion.sum(axis=1, keepdims=True)
    normalised = np.divide(confusion, totals, out=np.zeros_like(confusion), where=totals > 0)
    fig = Figure(figsize=(1.4 * len(names) + 2, 1.2 * len(names) + 1.5))
    ax = fig.subplots()
    mappable = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for (row, col), fraction in np.ndenumerate(normalised):
        ax.text(col, row, f"{100 * fraction:.1f} %\n{int(confusion[row, col])}", ha="center", va="center",
                fontsize="small", color="white" if fraction > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(mappable, ax=ax, label="fraction of true class")
    return _save(fig, path)


def plot_efficiency(curves, path, xlabel="true charge (e-)"):
    """Detection efficiency against true charge for several methods on one log-x axis.

    Parameters
    ----------
    curves : dict of str -> (ndarray, ndarray, ndarray)
        Method name -> (bin centres in e-, efficiency in [0, 1], uncertainty: (N,) or (2, N) lower/upper).
    path : str or Path
        Output file.
    xlabel : str
        Label of the x axis.

    Returns
    -------
    Path
        The written file.
    """
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for name, (centres, efficiency, error) in curves.items():
        ax.errorbar(centres, efficiency, yerr=error, marker="o", markersize=3, capsize=2, label=name)
    ax.set_xscale("log")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("detection efficiency")
    ax.grid(alpha=0.3, which="both")
    if curves:
        ax.legend()
    return _save(fig, path)


def plot_sections(image, labels, sections, path, max_panels=16, title="regions"):
    """Stamps of the sections from :func:`ccdseg.measure.sections.find_sections`, labels overlaid in class colours.

    Parameters
    ----------
    image : ndarray (H, W)
        Image in any unit.
    labels : ndarray (H, W) of int
        Segmentation.
    sections : sequence of (ymin, ymax, xmin, xmax, npix)
        Inclusive 0-based bounds, largest first; the first ``max_panels`` are drawn.
    path : str or Path
        Output file.
    max_panels : int
        Largest number of stamps.
    title : str
        What the sections are; the figure title adds how many are shown of how many
        ("the 16 largest of 230 cluster regions").

    Returns
    -------
    Path
        The written file.
    """
    image = np.asarray(image, dtype=np.float64)
    residual = image - row_pedestal(image)[:, None]
    labels = np.asarray(labels)
    sections = list(sections)
    total = len(sections)
    sections = sections[:max_panels]
    ncols = int(min(4, max(len(sections), 1)))
    nrows = int(np.ceil(max(len(sections), 1) / ncols))
    fig = Figure(figsize=(3 * ncols, 3 * nrows + 0.8))
    fig.suptitle(f"the {len(sections)} largest of {total} {title}" if total > len(sections) else f"{total} {title}")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax in axes:
        ax.set_axis_off()
    if not sections:
        axes[0].text(0.5, 0.5, "no sections", ha="center", va="center", transform=axes[0].transAxes)
    overlay = np.zeros((256, 4))
    overlay[:N_CLASSES, :3] = rgb_table() / 255.0
    overlay[:N_CLASSES, 3] = 0.45
    overlay[BACKGROUND, 3] = 0.0
    used = axes[:len(sections)]  # the grid may have spare panels
    for number, (ax, (ymin, ymax, xmin, xmax, npix)) in enumerate(zip(used, sections, strict=True), start=1):
        rows, cols = slice(int(ymin), int(ymax) + 1), slice(int(xmin), int(xmax) + 1)
        extent = (xmin - 0.5, xmax + 0.5, ymin - 0.5, ymax + 0.5)
        stamp = residual[rows, cols]
        vmin, vmax = display_limits(stamp, 0.0, 100.0)
        ax.imshow(stamp, cmap="gray", vmin=vmin, vmax=vmax, origin="lower", interpolation="nearest", extent=extent)
        ax.imshow(overlay[labels[rows, cols].astype(np.uint8)], origin="lower", interpolation="nearest",
                  extent=extent)
        ax.set_axis_on()
        ax.set_title(f"{number}: {int(npix)} px", fontsize="small")
        ax.tick_params(labelsize="x-small")
    fig.legend(handles=_legend_handles(), loc="lower center", ncols=N_CLASSES, fontsize="small")
    return _save(fig, path)


#: Known lines marked on energy spectra (keV): Si Kα, ⁵⁵Fe Kα and Kβ (Mn), Cu Kα.
SPECTRUM_LINES_KEV = {"Si Kα": 1.74, "⁵⁵Fe Kα": 5.9, "⁵⁵Fe Kβ": 6.49, "Cu Kα": 8.05}


#: Colour of each particle kind on the spectrum; clusters without a kind (too faint to classify) are black.
_KIND_COLOURS = {"point": "tab:blue", "electron": "tab:green", "muon": "tab:red", "alpha": "tab:purple"}
#: Lines closer than this (decades of energy) get their labels at different heights.
_LABEL_CLOSE_DECADES = 0.15


def label_heights(energies_kev, top=0.98, step=0.22):
    """Height (axes fraction) of the label of each line: close lines (e.g. 5.9 and 6.49 keV) are stacked down.

    On a log axis spanning several decades the labels of lines a few per cent apart would print over each
    other; each label of a run of close lines starts ``step`` below the one before, and a line farther from
    its neighbour starts again at ``top``.
    """
    heights = []
    previous = None
    for energy in energies_kev:
        close = previous is not None and abs(np.log10(energy / previous)) < _LABEL_CLOSE_DECADES
        heights.append(heights[-1] - step if close and heights[-1] - step > 0.2 else top)
        previous = energy
    return heights


def plot_spectrum(table, path, title=None, lines_kev=SPECTRUM_LINES_KEV):
    """Energy spectrum of the clusters per image and particle kind, and the fitted width against energy.

    Parameters
    ----------
    table : astropy.table.Table
        Cluster catalogue (:func:`ccdseg.measure.catalog.find_clusters`) with ``hdu``, ``kind``, ``energy_ev``,
        ``fit_energy_ev``, ``fit_sigma_x`` and ``fit_sigma_y`` columns; rows without energy are left out.
    path : str or Path
        Output file.
    title : str, optional
    lines_kev : dict of str -> float
        Lines to mark (keV).

    Returns
    -------
    Path
        The written file.

    Notes
    -----
    Left: counts per logarithmic energy bin (log-log), one colour per kind, one line style per image HDU, and a
    legend for each; close lines' labels are stacked (:func:`label_heights`).
    Right: the point fit's width sqrt(σx σy) (px) against its energy (keV) for point-like clusters.
    Without energies (no gain) the panels are empty and say so.
    """
    energy_kev = np.asarray(table["energy_ev"], dtype=np.float64) / 1e3
    good = np.isfinite(energy_kev) & (energy_kev > 0)
    fig = Figure(figsize=(13, 5))
    spectrum, widths = fig.subplots(1, 2)
    if good.any():
        edges = np.logspace(np.log10(energy_kev[good].min()), np.log10(energy_kev[good].max()) + 1e-6, 80)
        hdus, kinds = np.asarray(table["hdu"]), np.asarray(table["kind"])
        styles = dict(zip(np.unique(hdus[good]), itertools.cycle(("-", "--", ":", "-."))))
        colours = {kind: _KIND_COLOURS.get(kind, "black") for kind in np.unique(kinds[good])}
        for hdu, style in styles.items():
            for kind, colour in colours.items():
                rows = good & (hdus == hdu) & (kinds == kind)
                if rows.any():
                    spectrum.stairs(np.histogram(energy_kev[rows], edges)[0], edges, linestyle=style, color=colour)
        spectrum.set_xscale("log")
        spectrum.set_yscale("log")
        # colour tells the kind, line style the image: two short legends instead of one entry per pair
        by_kind = spectrum.legend(handles=[Line2D([], [], color=colour, label=kind or "no kind")
                                           for kind, colour in colours.items()],
                                  title="kind", fontsize="x-small", title_fontsize="x-small", loc="upper right")
        spectrum.add_artist(by_kind)
        spectrum.legend(handles=[Line2D([], [], color="grey", linestyle=style, label=hdu or "image")
                                 for hdu, style in styles.items()],
                        title="image", fontsize="x-small", title_fontsize="x-small", loc="center right")
    else:
        spectrum.text(0.5, 0.5, "no energies (gain unknown)", ha="center", transform=spectrum.transAxes)
    for (name, energy), height in zip(lines_kev.items(), label_heights(list(lines_kev.values())), strict=True):
        spectrum.axvline(energy, color="grey", linewidth=0.8, alpha=0.7)
        spectrum.text(energy, height, f" {name}", rotation=90, va="top", fontsize="x-small",
                      transform=spectrum.get_xaxis_transform())
    spectrum.set_xlabel("energy (keV)")
    spectrum.set_ylabel("clusters per bin")
    fit_kev = np.asarray(table["fit_energy_ev"], dtype=np.float64) / 1e3
    sigma = np.sqrt(np.asarray(table["fit_sigma_x"], float) * np.asarray(table["fit_sigma_y"], float))
    fitted = np.isfinite(fit_kev) & np.isfinite(sigma) & (fit_kev > 0)
    widths.scatter(fit_kev[fitted], sigma[fitted], s=4, alpha=0.5)
    for energy in lines_kev.values():
        widths.axvline(energy, color="grey", linewidth=0.8, alpha=0.7)
    widths.set_xscale("log")
    widths.set_xlabel("fitted energy (keV)")
    widths.set_ylabel("fitted σ (px)")
    if title:
        fig.suptitle(title)
    return _save(fig, path)
