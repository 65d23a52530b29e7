"""Pixel F1 per class with and without the object step on the benchmark set; the glow halo on the DAMIC-M sample.

Usage::

    python benchmarks/objects.py BENCH_DIR

BENCH_DIR from ``ccdseg evaluate --make-benchmark BENCH_DIR``. The shipped U-Net labels every image
(argmax), then :func:`ccdseg.measure.objects.resolve_objects` relabels; both are scored against the truth.
Writes ``benchmarks/results/objects.md``.
"""

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from ccdseg import metrics
from ccdseg.classes import CLUSTER, GLOWING, NAMES
from ccdseg.evaluate.evaluation import find_images, read_simulated
from ccdseg.infer.predict import get_model, segment
from ccdseg.io import read_images
from ccdseg.measure.objects import resolve_objects
from ccdseg.nn.normalize import normalization_stats
from ccdseg.sim.benchmark import BENCHMARK_PRESETS
from machine import describe  # noqa: E402 (benchmarks are scripts, not a package)

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "src/ccdseg/data/damicm_module_test.fz"
HALO_PX = 3


def halo_share(labels):
    """Glowing pixels within ``HALO_PX`` px of a cluster, and all glowing pixels."""
    near = ndimage.binary_dilation(labels == CLUSTER, structure=np.ones((3, 3), bool), iterations=HALO_PX)
    glow = labels == GLOWING
    return int((glow & near).sum()), int(glow.sum())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bench", help="benchmark set directory")
    parser.add_argument("--results", default=str(ROOT / "benchmarks/results/objects.md"))
    args = parser.parse_args()
    model = get_model(None, "cpu")
    lines = ["# Object step: pixel F1 with and without `resolve_objects`", "",
             "Command: `python benchmarks/objects.py BENCH_DIR` (BENCH_DIR from `ccdseg evaluate --make-benchmark "
             "BENCH_DIR`: 8 images of 512 x 512 per preset); the shipped model, argmax decision.",
             f"Machine: {describe()}.", "",
             "| preset | class | F1 without | F1 with | change | pixels relabelled |", "|---|---|---|---|---|---|"]
    for preset in BENCHMARK_PRESETS:
        before, after = np.zeros((4, 4), np.int64), np.zeros((4, 4), np.int64)
        changed = 0
        for path in find_images([Path(args.bench) / preset]):
            image, truth, _, _, _ = read_simulated(path)
            labels, probabilities = segment(image, model=model)
            resolved = resolve_objects(labels, probabilities)
            changed += int((resolved != labels).sum())
            before += metrics.confusion_matrix(truth, labels)
            after += metrics.confusion_matrix(truth, resolved)
        f1_before, f1_after = metrics.class_scores(before)["f1"], metrics.class_scores(after)["f1"]
        for index, name in enumerate(NAMES):
            lines.append(f"| {preset} | {name} | {f1_before[index]:.5f} | {f1_after[index]:.5f} | "
                         f"{f1_after[index] - f1_before[index]:+.5f} | {changed if index == 0 else ''} |")
    lines += ["", f"Bundled DAMIC-M sample (`{SAMPLE.name}`): glowing pixels within {HALO_PX} px of a cluster.", "",
              "| HDU | without | with |", "|---|---|---|"]
    totals = np.zeros(4, np.int64)
    for image in read_images(SAMPLE):
        stats = normalization_stats(image.data, model.normalization)
        labels, probabilities = segment(image.data, model=model, stats=stats)
        counts = (*halo_share(labels), *halo_share(resolve_objects(labels, probabilities)))
        totals += counts
        lines.append(f"| {image.label} | {counts[0]} / {counts[1]} ({counts[0] / max(counts[1], 1):.1%}) | "
                     f"{counts[2]} / {counts[3]} ({counts[2] / max(counts[3], 1):.1%}) |")
    lines.append(f"| all | {totals[0]} / {totals[1]} ({totals[0] / max(totals[1], 1):.1%}) | "
                 f"{totals[2]} / {totals[3]} ({totals[2] / max(totals[3], 1):.1%}) |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.results).write_text(text)


if __name__ == "__main__":
    main()
