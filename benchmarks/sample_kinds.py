"""Particle kinds and point fits on the bundled DAMIC-M frame: 55Fe X-rays, long straight tracks, fitted widths.

Usage::

    python benchmarks/sample_kinds.py

The frame goes through the pipeline's steps (the shipped U-Net, the object step, the catalogue with the gain
measured from the single-electron peaks). The 55Fe X-rays are the clusters of 1450-1800 e- with elongation
below 2 (compact); the long straight tracks those whose bounding-box diagonal is at least 15 px with an
elongation of at least 5. Writes ``benchmarks/results/sample_kinds.md``.
"""

from pathlib import Path

import numpy as np
from astropy.table import vstack
from scipy import ndimage

from ccdseg.calib.gain import resolve_gain
from ccdseg.classes import HOT_PIXEL
from ccdseg.infer.predict import get_model, segment
from ccdseg.io import read_images
from ccdseg.measure.catalog import find_clusters
from ccdseg.measure.diffusion import THICKNESS_UM
from ccdseg.measure.objects import resolve_objects
from ccdseg.nn.normalize import normalization_stats
from ccdseg.sim.config import load_config
from machine import describe  # noqa: E402 (benchmarks are scripts, not a package)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "src/ccdseg/data/damicm_module_test.fz"


def counts(kinds):
    return ", ".join(f"{kind}: {n}" for kind, n in zip(*np.unique(np.asarray(kinds), return_counts=True),
                                                        strict=True))


def _hot_xrays(image, labels, pedestal, gain):
    """Whether each hot-pixel piece is one or two pixels holding an 55Fe X-ray's charge."""
    pieces, n = ndimage.label(labels == HOT_PIXEL, structure=np.ones((3, 3)))
    index = np.arange(1, n + 1)
    charge = ndimage.sum_labels((image - np.reshape(pedestal, (-1, 1))) / gain, pieces, index)
    size = ndimage.sum_labels(np.ones(image.shape), pieces, index)
    return (size <= 2) & (charge > 1450) & (charge < 1800)


def main():
    model = get_model(None, "cpu")
    clusters = load_config("damicm").clusters  # the damicm preset's diffusion law, fitted to this frame's points
    law = (clusters.diffusion_a_um2, clusters.diffusion_b_per_um)
    tables, hot_hits = [], 0
    for image in read_images(SAMPLE):
        stats = normalization_stats(image.data, model.normalization)
        labels, probabilities = segment(image.data, model=model, stats=stats)
        labels = resolve_objects(labels, probabilities)
        gain, _ = resolve_gain(image.data, (image.header,))
        tables.append(find_clusters(image.data, labels, gain=gain, pedestal=stats.pedestal, hdu=image.label,
                                    diffusion=law))
        hot_hits += np.count_nonzero(_hot_xrays(image.data, labels, stats.pedestal, gain))
    table = vstack(tables)
    charge, kind, elongation = table["charge_e"], np.asarray(table["kind"]), table["elongation"]
    xray = (charge > 1450) & (charge < 1800) & (elongation < 2)
    diagonal = np.hypot(table["xmax"] - table["xmin"] + 1, table["ymax"] - table["ymin"] + 1)
    track = (diagonal >= 15) & (elongation >= 5)
    fitted = xray & (kind == "point") & np.isfinite(table["fit_sigma_x"] * table["fit_sigma_y"])
    sigma = np.asarray(np.sqrt(table["fit_sigma_x"] * table["fit_sigma_y"])[fitted])
    depth = np.asarray(table["depth_um"][fitted])
    edges = [0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0]
    lines = [f"# Kinds on the bundled DAMIC-M frame (`{SAMPLE.name}`)", "",
             "Command: `python benchmarks/sample_kinds.py`; machine: " + describe() + ".", "",
             f"- clusters: {len(table)} ({counts(kind)})",
             f"- 55Fe X-rays (1450-1800 e-, elongation < 2): {xray.sum()}, of which `point` "
             f"{np.mean(kind[xray] == 'point'):.1%} ({counts(kind[xray])})",
             f"- long straight tracks (diagonal >= 15 px, elongation >= 5): {track.sum()}, not `point` "
             f"{np.mean(kind[track] != 'point'):.1%} ({counts(kind[track])})",
             f"- fitted width sqrt(sigma_x sigma_y) of the X-ray points: median {np.median(sigma):.2f} px; "
             "counts per bin " + ", ".join(f"{lo}-{hi} px: {n}" for lo, hi, n in
                                           zip(edges[:-1], edges[1:], np.histogram(sigma, edges)[0], strict=True)),
             f"- depth from the gates (diffusion law of the `damicm` preset: A = {law[0]:g} um^2, b = {law[1]:g} /um) "
             "of the X-ray points: those wider than 1 px "
             f"({np.sum(sigma > 1)}) median {np.median(depth[sigma > 1]):.0f} um, of a {THICKNESS_UM:.0f} um thick "
             f"CCD (back-side conversions); those narrower than 0.5 px ({np.sum(sigma < 0.5)}) median "
             f"{np.median(depth[sigma < 0.5]):.0f} um (front-side conversions, within the 29 um attenuation length "
             "of 5.9 keV X-rays)",
             f"- hot-pixel pieces of 1-2 px holding 1450-1800 e-: {hot_hits} (front-side X-rays in one pixel, "
             "which the simulator's back-side source never makes)",
             "- fitted energy of the X-ray points: median "
             f"{np.nanmedian(table['fit_energy_ev'][xray & (kind == 'point')]) / 1e3:.3f} keV",
             f"- muons: {np.sum(kind == 'muon')}, median dE/dx "
             f"{np.nanmedian(table['muon_dedx_kev_per_um'][kind == 'muon']):.3f} keV/um"]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "benchmarks/results/sample_kinds.md").write_text(text)


if __name__ == "__main__":
    main()
