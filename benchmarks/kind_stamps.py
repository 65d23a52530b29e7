"""Does the picture of a cluster tell its kind better than its measured shape? A stamp CNN against the features.

Two classifiers are trained on the same clusters of ``train_kinds.py``'s training frames and scored on the
same sets, with *true* labels (no U-Net, no split: this compares the classifiers alone):

``features``
    the shipped recipe's input, the 12 shape features of :mod:`ccdseg.measure.kinds`, through one tanh
    hidden layer of 32;
``stamp CNN + features``
    the same, with 32 more inputs from a small CNN (three 3x3 convolutions of 8, 16 and 16 channels, two
    2x2 max-pools, global mean and max) on a 32 x 32 px stamp of the cluster centred on its charge
    centroid: log10(1 + q / 100 e-) on the cluster's pixels, 0 elsewhere (longer clusters are cropped; the
    features still see them whole). Stamps are flipped and transposed at random in training (a kind has no
    preferred direction).

Both are fitted in torch the same way (Adam with a one-cycle learning rate, batches of 256, cross-entropy
with class weights 1/sqrt(frequency), weight decay 1e-4), for each seed of ``--seeds``. Scored on the
benchmark set, the rare-kind set of ``train_kinds.py`` (``--rare-images`` frames, ``--seed``) and an
independent rare-kind set (12 frames per preset, seed 11).

Usage::

    python benchmarks/kind_stamps.py BENCH_DIR [--images 30] [--rare-images 8] [--seed 7] [--epochs 40]
                                     [--seeds 0 1]

writes ``benchmarks/results/kind_stamps.md``.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from ccdseg.calib.background import row_pedestal
from ccdseg.classes import CLUSTER
from ccdseg.measure.kinds import FEATURES, KINDS, cluster_features
from ccdseg.measure.sections import structure
from ccdseg.sim.benchmark import BENCHMARK_PRESETS
from machine import describe  # noqa: E402 (benchmarks are scripts, not a package)
from train_kinds import (  # noqa: E402
    PURITY,
    add_set_arguments,
    benchmark_images,
    main_clusters,
    rare_kind_images,
    training_frames,
)

ROOT = Path(__file__).resolve().parent.parent
STAMP = 32
INDEPENDENT_SEED, INDEPENDENT_IMAGES = 11, 12


def stamps(charge_e, components, numbers):
    """(len(numbers), STAMP, STAMP) float32: log10(1 + q / 100 e-) of each cluster, centred on its centroid."""
    out = np.zeros((len(numbers), STAMP, STAMP), np.float32)
    boxes = ndimage.find_objects(components)
    for slot, number in enumerate(numbers):
        box = boxes[number - 1]
        rows, cols = np.nonzero(components[box] == number)
        q = np.clip(np.nan_to_num(charge_e[box][rows, cols]), 0.0, None)
        weights = q if q.sum() > 0 else np.ones_like(q)
        rows = rows - int(round(np.average(rows, weights=weights))) + STAMP // 2
        cols = cols - int(round(np.average(cols, weights=weights))) + STAMP // 2
        inside = (rows >= 0) & (rows < STAMP) & (cols >= 0) & (cols < STAMP)
        out[slot, rows[inside], cols[inside]] = np.log10(1.0 + q[inside] / 100.0)
    return out


def collect(frames, purity):
    """Features, stamps and true kinds of the main clusters of the true labels of ``frames``."""
    features, pictures, kinds = [], [], []
    for charge_e, labels, ids, truth in frames:
        components, n = ndimage.label(labels == CLUSTER, structure=structure(2))
        keep, kind = main_clusters(components, n, ids, truth, purity)
        features.append(cluster_features(charge_e, components, n)[keep - 1])
        pictures.append(stamps(charge_e, components, keep))
        kinds.append(kind)
    return np.concatenate(features), np.concatenate(pictures), np.concatenate(kinds)


def in_electrons(images):
    """(charge in e-, labels, ids, truth) of ``train_kinds.py``'s (image, labels, ids, truth, gain)."""
    for image, labels, ids, truth, gain in images:
        yield (image - row_pedestal(image)[:, None]) / gain, labels, ids, truth


class KindNet(nn.Module):
    """Shape features (and, with ``stamps``, a CNN's view of the stamp) -> logits of each kind."""

    def __init__(self, n_features, use_stamps):
        super().__init__()
        self.use_stamps = use_stamps
        self.cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()) if use_stamps else None
        self.head = nn.Sequential(nn.Linear(n_features + (32 if use_stamps else 0), 32), nn.Tanh(),
                                  nn.Linear(32, len(KINDS)))

    def forward(self, pictures, features):
        """Logits (n, len(KINDS)) of stamps (n, STAMP, STAMP) and standardised features (n, len(FEATURES))."""
        if self.use_stamps:
            maps = self.cnn(pictures[:, None])
            features = torch.cat([maps.mean((2, 3)), maps.amax((2, 3)), features], 1)
        return self.head(features)


def fit(features, pictures, kinds, use_stamps, epochs, seed):
    """A trained :class:`KindNet` and the feature standardisation (mean, scale) it expects."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, scale = features.mean(axis=0), features.std(axis=0) + 1e-9
    x = torch.tensor((features - mean) / scale, dtype=torch.float32)
    pictures, kinds = torch.tensor(pictures), torch.tensor(kinds)
    net = KindNet(features.shape[1], use_stamps)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    batches = (len(kinds) + 255) // 256
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=4e-3, total_steps=epochs * batches)
    weight = torch.tensor(1.0 / np.sqrt(np.maximum(np.bincount(kinds.numpy(), minlength=len(KINDS)), 1)),
                          dtype=torch.float32)
    for _ in range(epochs):
        for batch in torch.randperm(len(kinds)).split(256):
            picture = pictures[batch]
            flips = rng.integers(8)   # one of the 8 flips and transposes of the square
            if flips & 1:
                picture = picture.flip(1)
            if flips & 2:
                picture = picture.flip(2)
            if flips & 4:
                picture = picture.transpose(1, 2)
            loss = nn.functional.cross_entropy(net(picture, x[batch]), kinds[batch], weight=weight)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return net.eval(), mean, scale


def correct_per_kind(model, features, pictures, kinds):
    """(right, total) per kind."""
    net, mean, scale = model
    with torch.no_grad():
        predicted = net(torch.tensor(pictures), torch.tensor((features - mean) / scale, dtype=torch.float32))
    predicted = predicted.argmax(axis=1).numpy()
    return [(int(np.sum((predicted == k) & (kinds == k))), int(np.sum(kinds == k))) for k in range(len(KINDS))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_set_arguments(parser)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="network initialisation seeds")
    parser.add_argument("--results", default=str(ROOT / "benchmarks/results/kind_stamps.md"))
    args = parser.parse_args()
    torch.set_num_threads(2)

    start = time.perf_counter()
    train = collect(training_frames(args.images, args.seed), PURITY)
    sets = {}
    for preset in BENCHMARK_PRESETS:
        sets[f"{preset}, benchmark set"] = collect(in_electrons(benchmark_images(args.bench, preset)), 0.0)
        sets[f"{preset}, rare-kind set"] = collect(in_electrons(rare_kind_images(preset, args.rare_images, args.seed)),
                                                   0.0)
        sets[f"{preset}, independent rare-kind set"] = collect(
            in_electrons(rare_kind_images(preset, INDEPENDENT_IMAGES, INDEPENDENT_SEED)), 0.0)
    columns = [(name, use_stamps, seed) for name, use_stamps in (("features", False), ("stamp CNN + features", True))
               for seed in args.seeds]
    scores = {}
    for name, use_stamps, seed in columns:
        model = fit(*train, use_stamps, args.epochs, seed)
        scores[name, seed] = {title: correct_per_kind(model, *data) for title, data in sets.items()}
        scores[name, seed]["training set"] = correct_per_kind(model, *train)
        print(f"{name}, seed {seed}: fitted ({time.perf_counter() - start:.0f} s)", flush=True)

    lines = ["# Kind classifiers: shape features alone against a stamp CNN beside them", "",
             f"Command: `python benchmarks/kind_stamps.py BENCH_DIR --images {args.images} --rare-images "
             f"{args.rare_images} --seed {args.seed} --epochs {args.epochs} --seeds "
             f"{' '.join(map(str, args.seeds))}` (BENCH_DIR from `ccdseg evaluate --make-benchmark BENCH_DIR`).",
             f"Machine: {describe()}; {(time.perf_counter() - start) / 60:.1f} min in all.", "",
             f"Training: {len(train[2])} clusters of true labels, features {', '.join(FEATURES)}; both classifiers "
             "see the same clusters. Scored on the true labels. Cells: right / all of that kind.", "",
             "| set | kind | " + " | ".join(f"{name}, seed {seed}" for name, _, seed in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for title in ["training set", *sets]:
        for k, kind in enumerate(KINDS):
            cells = [scores[name, seed][title][k] for name, _, seed in columns]
            if cells[0][1]:
                lines.append(f"| {title} | {kind} | " + " | ".join(f"{right}/{total} ({right / total:.3f})"
                                                                     for right, total in cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.results).write_text(text)


if __name__ == "__main__":
    main()
