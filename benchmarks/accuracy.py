"""Accuracy of the shipped model, the thesis-architecture model and the classical baseline.

    python benchmarks/accuracy.py [--model PATH] [--thesis-model PATH] [--write]

Scores each method on the fixed benchmark set (:func:`ccdseg.sim.benchmark.make_benchmark_set`:
8 seeded 512 x 512 images per preset damic, skipper, damicm, thesis; written to ``benchmarks/data``
on the first run, and again whenever its parameters change) and prints one table per level:
pixels (F1 and IoU per class) and clusters as objects (detection efficiency, false clusters
per megapixel, charge completeness, charge at 50 % efficiency). A method whose model file is
absent is listed as skipped. ``--write`` also saves the tables to ``benchmarks/results/accuracy.md``.

The classical baseline keeps clusters of one pixel except on skipper images (presets skipper
and damicm), where every dark-current electron would be one (``min_cluster_pixels=2`` there,
as the collaborations require more than one pixel or a charge threshold).
"""

import argparse
import importlib.resources
import json
import sys
from pathlib import Path

from ccdseg.classes import NAMES
from ccdseg.evaluate import evaluation as evaluate
from ccdseg.nn.model import SHIPPED_MODEL
from ccdseg.sim import benchmark

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE / "data"
DEFAULT_THESIS_MODEL = HERE / "models" / "thesis_model.pt"
RESULTS = HERE / "results" / "accuracy.md"
CLASSICAL_OPTIONS = {"skipper": {"min_cluster_pixels": 2}, "damicm": {"min_cluster_pixels": 2}}


def benchmark_files(data_dir, regenerate=False, *, n=benchmark.BENCHMARK_N, seed=benchmark.BENCHMARK_SEED):
    """Image files per preset of a benchmark set (default the fixed one), written first if missing or stale."""
    expected = {"presets": list(benchmark.BENCHMARK_PRESETS), "n": n, "size": list(benchmark.BENCHMARK_SIZE),
                "seed": seed}
    manifest = data_dir / benchmark.BENCHMARK_MANIFEST
    current = json.loads(manifest.read_text()) if manifest.is_file() else {}
    if regenerate or any(current.get(key) != value for key, value in expected.items()):
        print(f"writing the benchmark set to {data_dir}", file=sys.stderr)
        return benchmark.make_benchmark_set(data_dir, n=n, seed=seed, overwrite=True)
    return {preset: evaluate.find_images([data_dir / preset]) for preset in benchmark.BENCHMARK_PRESETS}


def run(files, models, device):
    """Evaluations per preset and method; a method without a model file maps to the reason it is skipped."""
    results = {}
    for preset, paths in files.items():
        labellers, skipped = {}, {}
        for name, path in models.items():
            if Path(str(path)).is_file():
                labellers[name] = evaluate.labeller("network", model=path, device=device)
            else:
                skipped[name] = f"skipped: no model file {_shown(path)}"
        labellers["classical"] = evaluate.labeller("classical", classical_options=CLASSICAL_OPTIONS.get(preset))
        evaluations, failures = evaluate.evaluate_files(paths, labellers)
        if failures:
            raise SystemExit("benchmark set is damaged (use --regenerate):\n" + "\n".join(failures))
        results[preset] = {name: skipped.get(name) or evaluations[name] for name in [*models, "classical"]}
    return results


def _shown(path):
    """``path`` relative to the repository when inside it, so that the written table is the same everywhere."""
    path = Path(str(path)).resolve()
    return path.relative_to(HERE.parent) if path.is_relative_to(HERE.parent) else path


def _cell(value, spec=".3f"):
    return "–" if value is None else format(value, spec)


def format_tables(results):
    """Markdown: the pixel table (F1 / IoU per class) and the cluster table."""
    pixel = ["| preset | method | " + " | ".join(f"{n} F1 / IoU" for n in NAMES) + " | accuracy | s/Mpix |",
             "|---|---|" + "---|" * (len(NAMES) + 2)]
    cluster = ["| preset | method | clusters | efficiency | false / Mpix | charge completeness | 50 % at (e-) |",
               "|---|---|---|---|---|---|---|"]
    for preset, methods in results.items():
        for name, evaluation in methods.items():
            if isinstance(evaluation, str):
                pixel.append(f"| {preset} | {name} | {evaluation} |" + " |" * (len(NAMES) + 1))
                cluster.append(f"| {preset} | {name} | {evaluation} | | | | |")
                continue
            s = evaluation.summary()
            classes = s["pixels"]["classes"]
            cells = [f"{_cell(classes[n]['f1'])} / {_cell(classes[n]['iou'])}" for n in NAMES]
            pixel.append(f"| {preset} | {name} | " + " | ".join(cells)
                         + f" | {_cell(s['pixels']['accuracy'], '.4f')} | {_cell(s['seconds_per_mpix'], '.2f')} |")
            c = s["clusters"]
            cluster.append(f"| {preset} | {name} | {c['n_true']} | {_cell(c['efficiency'])} | "
                           f"{_cell(c['false_per_mpix'], '.1f')} | {_cell(c['charge_completeness'])} | "
                           f"{evaluate.format_charge(*evaluation.charge_at_level())} |")
    return "\n".join(["### Pixels", "", *pixel, "", "### Clusters as objects", "", *cluster]) + "\n"


#: Cluster-probability operating points tried for the equal-false-rate comparison.
THRESHOLDS = (0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.02, 0.01, 0.005, 0.002)
#: Charge bins (e-) shown in the equal-false-rate table: where the efficiencies differ.
SHOWN_CHARGE_E = (3.0, 300.0)


def equal_false_rate(files, model, classical, device):
    """Per preset: the network at its most sensitive operating point within the baseline's false-cluster rate.

    An operating point is a cluster threshold whose false-cluster rate is at most the classical baseline's;
    returns (threshold, Evaluation), or None if no point qualifies.
    """
    from ccdseg.infer.predict import decide, get_model, segment

    loaded = get_model(model, device)
    chosen = {}
    for preset, paths in files.items():
        evaluations = {t: evaluate.Evaluation(f"p>={t}") for t in THRESHOLDS}
        for path in paths:
            image, labels, ids, table, charge = evaluate.read_simulated(path)
            _, probabilities = segment(image, model=loaded, device=device)
            for t, evaluation in evaluations.items():
                evaluation.add(labels, ids, table, decide(probabilities, t), charge)
        limit = classical[preset].summary()["clusters"]["false_per_mpix"]
        fair = [t for t in THRESHOLDS if evaluations[t].summary()["clusters"]["false_per_mpix"] <= limit]
        chosen[preset] = (min(fair), evaluations[min(fair)]) if fair else None
    return chosen


def format_equal_false_rate(chosen, classical):
    """Markdown: efficiency per charge bin of the network and the baseline at equal false rates."""
    lines = []
    for preset, pick in chosen.items():
        base = classical[preset]
        if pick is None:
            lines += [f"**{preset}**: no operating point reaches the baseline's false-cluster rate.", ""]
            continue
        threshold, net = pick
        a, b = net.efficiency("charge"), base.efficiency("charge")
        show = [i for i in range(len(a))
                if a["n_true"][i] > 0 and SHOWN_CHARGE_E[0] <= a["centre"][i] <= SHOWN_CHARGE_E[1]]
        sn, sb = net.summary()["clusters"], base.summary()["clusters"]
        lines += [f"**{preset}**: network at cluster probability >= {threshold}: {sn['false_per_mpix']:.1f} false "
                  f"clusters / Mpix (baseline {sb['false_per_mpix']:.1f}); 50 % found at "
                  f"{evaluate.format_charge(*net.charge_at_level())} e- (baseline "
                  f"{evaluate.format_charge(*base.charge_at_level())} e-); efficiency {sn['efficiency']:.3f} "
                  f"(baseline {sb['efficiency']:.3f}).", "",
                  "| charge (e-) | " + " | ".join(f"{a['lo'][i]:.3g}-{a['hi'][i]:.3g}" for i in show) + " |",
                  "|---|" + "---|" * len(show),
                  "| clusters | " + " | ".join(str(a["n_true"][i]) for i in show) + " |",
                  "| network | " + " | ".join(_cell(a["efficiency"][i], ".2f") for i in show) + " |",
                  "| classical | " + " | ".join(_cell(b["efficiency"][i], ".2f") for i in show) + " |", ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="model to score as 'shipped' (default: the shipped model)")
    parser.add_argument("--thesis-model", type=Path, default=DEFAULT_THESIS_MODEL,
                        help=f"thesis-architecture model (default {DEFAULT_THESIS_MODEL.relative_to(HERE.parent)})")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="benchmark set directory")
    parser.add_argument("--regenerate", action="store_true", help="write the benchmark set again")
    parser.add_argument("--device", default="cpu", help="torch device of the networks")
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS.relative_to(HERE.parent)}")
    args = parser.parse_args(argv)

    shipped = args.model or importlib.resources.files("ccdseg").joinpath(SHIPPED_MODEL)
    files = benchmark_files(args.data, args.regenerate)
    results = run(files, {"shipped": shipped, "thesis": args.thesis_model}, args.device)
    text = (f"Benchmark set: {benchmark.BENCHMARK_N} images of {benchmark.BENCHMARK_SIZE[0]} x "
            f"{benchmark.BENCHMARK_SIZE[1]} px per preset, seed {benchmark.BENCHMARK_SEED} "
            f"(`python benchmarks/accuracy.py`). Classical baseline: `min_cluster_pixels=2` on skipper and "
            f"damicm images. "
            f"50 % at: charge where half the true clusters are found (\"< x\": already above half in the "
            f"lowest bin holding clusters, starting at x e-).\n\n" + format_tables(results))
    classical = {preset: methods["classical"] for preset, methods in results.items()}
    text += ("\n### Clusters at equal false rates\n\nThe shipped model at the most sensitive cluster-probability "
             f"threshold (of {', '.join(map(str, THRESHOLDS))}) whose false-cluster rate is at most the classical "
             "baseline's (`ccdseg predict --cluster-threshold P`), against the baseline, per charge bin.\n\n"
             + format_equal_false_rate(equal_false_rate(files, shipped, classical, args.device), classical))
    print(text, end="")
    if args.write:
        from ccdseg.io import write_text_atomic
        write_text_atomic(RESULTS, "# Accuracy benchmark\n\n" + text, overwrite=True)
        print(f"wrote {RESULTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
