"""Models against a base model on a second, independent simulated set, paired image by image.

    python benchmarks/compare_models.py BASE OTHER [OTHER ...] [--images 24] [--seed 777] [--data DIR]

BASE and OTHER are model files (``shipped``: the shipped model). The set is
:func:`ccdseg.sim.benchmark.make_benchmark_set` with ``--images`` images of 512 x 512 per preset and
``--seed`` (not the fixed benchmark set's seed), written to ``--data`` on the first run. Every image is
labelled by every model; per preset and model the change against BASE of the glowing, hot-pixel and cluster
F1, the cluster efficiency and the false clusters per Mpix is printed, each with the standard deviation of
1000 bootstrap resamplings of the images. The same resampling scores both models, so the images' own
difficulty cancels and a change a few times its deviation is the model's, not the images'.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np

from accuracy import benchmark_files  # a sibling script: benchmarks are scripts, not a package
from ccdseg.classes import CLUSTER, GLOWING, HOT_PIXEL
from ccdseg.evaluate import evaluation as evaluate
from ccdseg.metrics import class_scores
from ccdseg.sim import benchmark

SCORES = ("glowing F1", "hot pixel F1", "cluster F1", "efficiency", "false / Mpix")


def image_counts(paths, models):
    """Per model, per image: (confusion matrix, true clusters, detected, false, pixels)."""
    labellers = {name: evaluate.labeller("network", model=None if name == "shipped" else name) for name in models}
    counts = {name: [] for name in models}
    for path in paths:
        evaluations, failures = evaluate.evaluate_files([path], labellers)
        if failures:
            raise SystemExit("\n".join(failures))
        for name, result in evaluations.items():
            c = result.counts
            counts[name].append((result.confusion, c["n_true"], c["n_detected"], c["n_false"], c["n_pixels"]))
    return counts


def scores(items):
    """The :data:`SCORES` of summed per-image counts."""
    confusion = sum(item[0] for item in items)
    n_true, detected, false, pixels = (sum(item[k] for item in items) for k in (1, 2, 3, 4))
    f1 = class_scores(confusion)["f1"]
    return np.array([f1[GLOWING], f1[HOT_PIXEL], f1[CLUSTER], detected / max(n_true, 1), 1e6 * false / pixels])


def paired_changes(base, other, rng, resamples=1000):
    """Change of ``other`` against ``base`` and its bootstrap standard deviation (same images in both)."""
    change = scores(other) - scores(base)
    draws = []
    for _ in range(resamples):
        pick = rng.integers(0, len(base), len(base))
        draws.append(scores([other[i] for i in pick]) - scores([base[i] for i in pick]))
    return change, np.nanstd(draws, axis=0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="BASE, then the models to compare with it ('shipped' allowed)")
    parser.add_argument("--images", type=int, default=24, help="images per preset (24)")
    parser.add_argument("--seed", type=int, default=777, help="seed of the set (777)")
    parser.add_argument("--data", type=Path, default=Path(tempfile.gettempdir()) / "ccdseg_compare_set")
    args = parser.parse_args()
    if len(args.models) < 2:
        parser.error("give BASE and at least one model to compare with it")
    files = benchmark_files(args.data, n=args.images, seed=args.seed)
    rng = np.random.default_rng(0)
    base, others = args.models[0], args.models[1:]
    print(f"| preset | model | {' | '.join(SCORES)} |\n|---|---|" + "---|" * len(SCORES))
    for preset in benchmark.BENCHMARK_PRESETS:
        counts = image_counts(files[preset], args.models)
        print(f"| {preset} | {base} | " + " | ".join(f"{v:.4f}" for v in scores(counts[base])) + " |")
        for name in others:
            change, deviation = paired_changes(counts[base], counts[name], rng)
            print(f"| {preset} | {name} | " + " | ".join(f"{c:+.4f} ({d:.4f})" for c, d in zip(change, deviation,
                                                                                              strict=True)) + " |")


if __name__ == "__main__":
    main()
