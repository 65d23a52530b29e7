"""Train the particle-kind network on simulated truth and score it on the benchmark set, per preset.

Training: simulated 512 x 512 frames of every benchmark preset (seeded, disjoint from the benchmark seeds)
with more muons, electrons and alphas than the presets draw, so that every kind is well represented, and
the diffusion law's A drawn per frame from 100-700 um^2 (sigma at the back 0.6-1.6 px), so that the
kinds hold for CCDs that diffuse more than DAMIC (the bundled DAMIC-M frame: back-side X-rays of ~1.5 px).
Each connected cluster of the *true* labels whose pixels belong mostly (>= 80 %) to one event is a
training example, its kind that event's kind. The network (one tanh hidden layer) is fitted by
full-batch Adam on the cross-entropy with class weights 1/sqrt(frequency) (rare kinds count more, without
pushing every ambiguous cluster to them).

Scoring: the benchmark set (``ccdseg evaluate --make-benchmark DIR``) labelled as the pipeline does
(the shipped U-Net, then :func:`ccdseg.measure.objects.resolve_objects`), its clusters split as the
catalogue splits them (:func:`ccdseg.measure.split.split_clusters`); each predicted cluster takes
the kind of the event owning most of its truth pixels; clusters without truth pixels are left out. The
benchmark set draws the presets' few muons and alphas (about one alpha per preset), too few to measure
their accuracy; a rare-kind set per preset (``--rare-images`` frames of 512 x 512 with the training's
rates of muons, electrons and alphas, at the preset's own diffusion, seeds disjoint from training) is
scored the same way.

Usage::

    python benchmarks/train_kinds.py BENCH_DIR [--images 30] [--rare-images 8] [--seed 7] [--score-only]
                                     [--muon-prior F] [--results FILE]

writes ``src/ccdseg/data/kinds.json`` (not with ``--score-only``, which scores the shipped one) and
``benchmarks/results/kinds.md`` (confusion matrices). ``--muon-prior F`` scores the shipped classifier with
every muon probability multiplied by F: the trade between muons and electrons.
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from ccdseg.calib.background import row_pedestal
from ccdseg.classes import CLUSTER
from ccdseg.evaluate.evaluation import find_images
from ccdseg.measure.kinds import FEATURES, KINDS, SIM_KINDS, KindModel, cluster_features, load_kind_model
from ccdseg.measure.sections import structure, touches_edge
from ccdseg.measure.split import split_clusters
from ccdseg.sim.benchmark import BENCHMARK_PRESETS
from ccdseg.sim.config import load_config
from ccdseg.sim.simulate import simulate_image
from ccdseg.sim.truth import read_simulation
from machine import describe  # noqa: E402 (benchmarks are scripts, not a package)

ROOT = Path(__file__).resolve().parent.parent
#: More of the rare kinds than the presets draw (per megapixel).
RATES = {"clusters.muons_per_mpix": (30.0, 60.0), "clusters.worms_per_mpix": (60.0, 120.0),
         "clusters.alphas_per_mpix": (8.0, 16.0)}
#: Range of the diffusion law's A (um^2) drawn per training frame.
DIFFUSION_A_UM2 = (100.0, 700.0)
PURITY = 0.8
PIPELINE = "pipeline labels (U-Net + objects)"


def labelled_clusters(charge_e, labels, ids, truth, purity=0.0, split_model=None):
    """Features, true kind and whether it touches the image edge, of the main clusters of ``labels``.

    With ``split_model`` the clusters are first split as the catalogue splits them
    (:func:`ccdseg.measure.split.split_clusters` with that kind model); which clusters count:
    :func:`main_clusters`.
    """
    components, n = ndimage.label(labels == CLUSTER, structure=structure(2))
    if split_model is not None:
        components, n = split_clusters(charge_e, components, n, model=split_model)
    keep, kinds = main_clusters(components, n, ids, truth, purity)
    boxes = ndimage.find_objects(components, max_label=n)
    edge = [touches_edge(boxes[c - 1], labels.shape) for c in keep]
    return cluster_features(charge_e, components, n)[keep - 1], kinds, np.array(edge, bool)


def main_clusters(components, n, ids, truth, purity):
    """Numbers (1..n) and true kinds of the clusters of ``components`` that are scored.

    A cluster counts when one event owns at least ``purity`` of its truth pixels and the cluster holds at
    least half of that event's truth pixels (its main piece: the few-pixel fragments that a faint track
    end leaves carry no shape, and each event is scored once).
    """
    owned = (components > 0) & (ids > 0)
    pairs, counts = np.unique(np.stack([components[owned], ids[owned]]), axis=1, return_counts=True)
    best_count = np.zeros(n + 1)
    best_id = np.zeros(n + 1, int)
    for (component, event), count in zip(pairs.T, counts, strict=True):
        if count > best_count[component]:
            best_count[component], best_id[component] = count, event
    npix = np.bincount(components[owned], minlength=n + 1)
    kind_of_id = dict(zip(truth["id"], (KINDS.index(SIM_KINDS[k]) for k in truth["kind"]), strict=True))
    event_npix = dict(zip(truth["id"], truth["npix"], strict=True))
    keep = [c for c in range(1, n + 1) if npix[c] > 0 and best_count[c] >= purity * npix[c]
            and 2 * best_count[c] >= event_npix[best_id[c]]]
    return np.array(keep, int), np.array([kind_of_id[best_id[c]] for c in keep], int)


def training_frames(n_images, seed):
    """(charge in e-, labels, ids, truth) of the training frames: ``n_images`` per preset."""
    for index, preset in enumerate(BENCHMARK_PRESETS):
        rng = np.random.default_rng([seed, index])
        for _ in range(n_images):
            config = load_config(preset, overrides={"detector.height": 512, "detector.width": 512, **RATES,
                                                    "clusters.diffusion_a_um2": rng.uniform(*DIFFUSION_A_UM2)})
            sim = simulate_image(config, rng=rng)
            charge_e = (sim.image - row_pedestal(sim.image)[:, None]) / config.detector.gain_adu_per_e
            yield charge_e, sim.labels, sim.ids, sim.truth


def training_set(n_images, seed):
    xs, ys = [], []
    for charge_e, labels, ids, truth in training_frames(n_images, seed):
        x, y, _ = labelled_clusters(charge_e, labels, ids, truth, PURITY)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def benchmark_images(bench, preset):
    """(image, labels, ids, truth, gain) of the benchmark set's frames of ``preset`` in directory ``bench``."""
    for path in find_images([Path(bench) / preset]):
        image, labels, ids, truth = read_simulation(path)
        yield image.data, labels, ids, truth, image.header.get("GAIN", 1.0)


def rare_kind_images(preset, n_images, seed):
    """(image, labels, ids, truth, gain) of frames of ``preset`` with the training's rates of the rare kinds."""
    rng = np.random.default_rng([seed, 1000 + BENCHMARK_PRESETS.index(preset)])
    config = load_config(preset, overrides={"detector.height": 512, "detector.width": 512, **RATES})
    for _ in range(n_images):
        sim = simulate_image(config, rng=rng)
        yield sim.image, sim.labels, sim.ids, sim.truth, config.detector.gain_adu_per_e


def fit(x, y, hidden=32, steps=2000, lr=0.01, l2=1e-4, seed=0):
    """One-hidden-layer network by full-batch Adam on the cross-entropy, class weights 1/sqrt(frequency)."""
    rng = np.random.default_rng(seed)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-9
    z = (x - mean) / scale
    onehot = np.eye(len(KINDS))[y]
    weight = (1.0 / np.sqrt(np.maximum(np.bincount(y, minlength=len(KINDS)), 1)))[y]
    params = {"w1": rng.normal(0, 1 / np.sqrt(z.shape[1]), (z.shape[1], hidden)), "b1": np.zeros(hidden),
              "w2": rng.normal(0, 1 / np.sqrt(hidden), (hidden, len(KINDS))), "b2": np.zeros(len(KINDS))}
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
    for step in range(1, steps + 1):
        h = np.tanh(z @ params["w1"] + params["b1"])
        logits = h @ params["w2"] + params["b2"]
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        dlogits = (p - onehot) * weight[:, None] / weight.sum()
        dh = (dlogits @ params["w2"].T) * (1 - h ** 2)
        grads = {"w2": h.T @ dlogits + l2 * params["w2"], "b2": dlogits.sum(axis=0),
                 "w1": z.T @ dh + l2 * params["w1"], "b1": dh.sum(axis=0)}
        for k, g in grads.items():
            m, v = moments[k]
            m[:] = 0.9 * m + 0.1 * g
            v[:] = 0.999 * v + 0.001 * g * g
            params[k] -= lr * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    return KindModel(mean=mean, scale=scale, **params)


def confusion(model, x, y):
    matrix = np.zeros((len(KINDS), len(KINDS)), int)
    np.add.at(matrix, (y, model.predict_proba(x).argmax(axis=1)), 1)
    return matrix


def format_confusion(title, matrix):
    lines = [f"#### {title}", "", "| true \\ predicted | " + " | ".join(KINDS) + " | n | accuracy |",
             "|---|" + "---|" * (len(KINDS) + 2)]
    for kind, row in zip(KINDS, matrix, strict=True):
        accuracy = f"{row[KINDS.index(kind)] / row.sum():.3f}" if row.sum() else "-"
        lines.append(f"| {kind} | " + " | ".join(str(v) for v in row) + f" | {row.sum()} | {accuracy} |")
    return "\n".join(lines) + "\n"


def benchmark_label(image):
    """The pipeline's labels: the shipped U-Net, then the object step."""
    from ccdseg.infer.predict import segment
    from ccdseg.measure.objects import resolve_objects
    return resolve_objects(*segment(image))


def score_set(model, title, images):
    """Confusion-matrix sections of ``model`` on ``images``, with the true and with the pipeline's labels.

    Also returns, for the pipeline's clusters, the probability of the kind given (``kind_prob``) and
    whether that kind is right.
    """
    per_labels = {"true labels": ([], [], []), PIPELINE: ([], [], [])}
    for image, labels, ids, truth, gain in images:
        charge_e = (image - row_pedestal(image)[:, None]) / gain
        for name, source, split_model in (("true labels", labels, None), (PIPELINE, benchmark_label(image), model)):
            for store, values in zip(per_labels[name], labelled_clusters(charge_e, source, ids, truth,
                                                                         split_model=split_model), strict=True):
                store.append(values)
    sections = []
    for name, parts in per_labels.items():
        fx, fy, edge = (np.concatenate(part) for part in parts)
        inside = confusion(model, fx[~edge], fy[~edge])
        # a cluster cut by the image edge (flagged ``edge`` in the catalogue) has lost part of its shape
        section = (format_confusion(f"{title}, {name}", confusion(model, fx, fy))
                   + "\nWithout the clusters that touch the image edge: "
                   + ", ".join(f"{kind} {row[k] / row.sum():.3f} ({row[k]}/{row.sum()})"
                               for k, (kind, row) in enumerate(zip(KINDS, inside, strict=True)) if row.sum())
                   + ".\n")
        print(section)
        sections.append(section)
    fx, fy, _ = (np.concatenate(part) for part in per_labels[PIPELINE])
    probabilities = model.predict_proba(fx)
    return sections, (probabilities.max(axis=1), probabilities.argmax(axis=1) == fy)


#: Edges of the ``kind_prob`` bins of the reliability table.
RELIABILITY_BINS = (0.25, 0.5, 0.7, 0.9, 0.99, 1.0)


def format_reliability(kind_prob, right):
    """How often the kind is right in bins of its probability: whether ``kind_prob`` can choose a cut."""
    lines = ["#### Reliability of `kind_prob` (pipeline labels, every set above)", "",
             "| kind_prob | clusters | mean kind_prob | right |", "|---|---|---|---|"]
    bins = np.digitize(kind_prob, RELIABILITY_BINS[1:-1])
    for k, (low, high) in enumerate(zip(RELIABILITY_BINS[:-1], RELIABILITY_BINS[1:], strict=True)):
        inside = bins == k
        if inside.any():
            lines.append(f"| {low:.2f}-{high:.2f} | {inside.sum()} | {kind_prob[inside].mean():.3f} | "
                         f"{right[inside].mean():.3f} |")
    return "\n".join(lines) + "\n"


def add_set_arguments(parser):
    """The options that choose the training and scoring sets, shared with ``kind_stamps.py``."""
    parser.add_argument("bench", help="benchmark set directory (ccdseg evaluate --make-benchmark DIR)")
    parser.add_argument("--images", type=int, default=30, help="training images per preset (30)")
    parser.add_argument("--rare-images", type=int, default=8, help="rare-kind frames per preset (8)")
    parser.add_argument("--seed", type=int, default=7)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_set_arguments(parser)
    parser.add_argument("--score-only", action="store_true", help="score the shipped kind model, do not train")
    parser.add_argument("--muon-prior", type=float, default=1.0,
                        help="with --score-only: multiply every muon probability by this before normalising "
                             "(how many electrons a more muon-minded classifier would cost)")
    parser.add_argument("--model-out", default=str(ROOT / "src/ccdseg/data/kinds.json"))
    parser.add_argument("--results", default=str(ROOT / "benchmarks/results/kinds.md"))
    args = parser.parse_args()

    if not args.muon_prior > 0:
        parser.error(f"--muon-prior must be positive, got {args.muon_prior}")
    if args.muon_prior != 1.0 and not args.score_only:
        parser.error("--muon-prior needs --score-only")
    start = time.perf_counter()
    x, y = training_set(args.images, args.seed)
    if args.score_only:
        model = load_kind_model()
        # a factor on one probability is a constant added to that kind's logit
        model = dataclasses.replace(model, b2=model.b2 + np.log(args.muon_prior) * (np.asarray(KINDS) == "muon"))
    else:
        model = fit(x, y, seed=args.seed)
        Path(args.model_out).write_text(json.dumps(model.to_dict()) + "\n")
    train_matrix = confusion(model, x, y)
    print(format_confusion("training set (true labels)", train_matrix))

    sections, kind_prob, right = [], [], []
    for preset in BENCHMARK_PRESETS:
        for set_name, images in (("", benchmark_images(args.bench, preset)),
                                 (" (rare-kind set)", rare_kind_images(preset, args.rare_images, args.seed))):
            set_sections, (set_prob, set_right) = score_set(model, f"{preset}{set_name}", images)
            sections += set_sections
            kind_prob.append(set_prob)
            right.append(set_right)
    sections.append(format_reliability(np.concatenate(kind_prob), np.concatenate(right)))
    print(sections[-1])

    seconds = time.perf_counter() - start
    text = ["# Particle kinds: confusion matrices on the benchmark set", "",
            f"Command: `python benchmarks/train_kinds.py BENCH_DIR --images {args.images} --rare-images "
            f"{args.rare_images} --seed {args.seed}{' --score-only' if args.score_only else ''}"
            f"{f' --muon-prior {args.muon_prior:g}' if args.muon_prior != 1.0 else ''}` "
            "(BENCH_DIR from `ccdseg evaluate --make-benchmark BENCH_DIR`: 8 images of 512 x 512 per preset).",
            f"Machine: {describe()}; {seconds / 60:.1f} min in all.", "",
            f"Training: {len(y)} clusters of true labels ("
            f"{', '.join(f'{k}: {n}' for k, n in zip(KINDS, np.bincount(y, minlength=4), strict=True))}), "
            f"features {', '.join(FEATURES)}.", "",
            "Rows: true kind of the event owning most of the cluster's truth pixels (main pieces only, see the "
            "script); accuracy = share of the row predicted right.", "",
            format_confusion("training set (true labels)", train_matrix), *sections]
    Path(args.results).write_text("\n".join(text))


if __name__ == "__main__":
    main()
