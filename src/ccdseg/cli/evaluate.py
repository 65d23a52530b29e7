"""``ccdseg evaluate``: score a segmentation method on simulated images, or write the benchmark set."""

import sys

from ccdseg.errors import CcdsegError, ConfigError
from ccdseg.infer import TILE_SIZE


def register(subparsers):
    """Add the ``evaluate`` subcommand and its options to ``subparsers``."""
    from ccdseg.sim.benchmark import BENCHMARK_N, BENCHMARK_PRESETS, BENCHMARK_SEED, BENCHMARK_SIZE

    parser = subparsers.add_parser(
        "evaluate", help="score segmentations of simulated images against their truth",
        description="Score a method on simulated images NAME.fits (with NAME_truth.fits, as written by "
                    "ccdseg simulate): per-class precision, recall, F1, IoU and confusion matrix; clusters as "
                    "objects: detection efficiency against true charge and depth, false clusters per "
                    "megapixel, charge completeness and the charge at which half of the clusters are found. "
                    "The classical baseline is scored beside a network or prediction files. Writes "
                    "OUT_DIR/evaluation.json, OUT_DIR/confusion_METHOD.png and OUT_DIR/efficiency_charge.png. "
                    "A failing file is reported on one line and the others go on (exit code 1). "
                    "With --make-benchmark DIR, write the fixed benchmark set instead.")
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="simulated image files or directories of them")
    parser.add_argument("--out-dir", metavar="DIR", help="output directory (created if missing)")
    parser.add_argument("--method", choices=("network", "classical"),
                        help="method to score: the U-Net (default) or the classical baseline")
    parser.add_argument("--model", metavar="PATH", help="model file of the network (default: the shipped model)")
    parser.add_argument("--predictions", metavar="DIR",
                        help="score the NAME_seg.fits files of ccdseg predict in DIR instead of running a method")
    parser.add_argument("--no-baseline", action="store_true", help="do not score the classical baseline beside")
    parser.add_argument("--min-cluster-pixels", type=int, default=1, metavar="N",
                        help="smallest cluster of the classical baseline (px, default 1; 2 leaves out the "
                             "single electrons of skipper images)")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default: cpu)")
    parser.add_argument("--tile-size", type=int, default=TILE_SIZE, metavar="N",
                        help=f"network tile side in px ({TILE_SIZE})")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16", help="network arithmetic")
    parser.add_argument("--cluster-threshold", type=float, metavar="P",
                        help="network operating point: cluster where its probability is at least P "
                             "(default: the most probable class)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    bench = parser.add_argument_group("benchmark set")
    bench.add_argument("--make-benchmark", metavar="DIR",
                       help=f"write the seeded benchmark set to DIR/PRESET/ ({BENCHMARK_N} images of "
                            f"{BENCHMARK_SIZE[0]}x{BENCHMARK_SIZE[1]} px per preset by default) and exit")
    bench.add_argument("--preset", action="append", metavar="NAME",
                       help=f"preset of the set, repeatable (default: {', '.join(BENCHMARK_PRESETS)})")
    bench.add_argument("--n", type=int, default=BENCHMARK_N, help=f"images per preset ({BENCHMARK_N})")
    bench.add_argument("--size", type=int, nargs=2, default=BENCHMARK_SIZE, metavar=("H", "W"),
                       help=f"image size in px ({BENCHMARK_SIZE[0]} {BENCHMARK_SIZE[1]})")
    bench.add_argument("--seed", type=int, default=BENCHMARK_SEED, help=f"seed of the set ({BENCHMARK_SEED})")
    parser.set_defaults(func=run)


def run(args):
    """Run ``ccdseg evaluate`` with the parsed ``args``; the exit status."""
    from ccdseg.evaluate import evaluation as evaluate
    from ccdseg.sim.benchmark import BENCHMARK_PRESETS, make_benchmark_set

    if args.make_benchmark:
        if args.inputs:
            raise ConfigError("--make-benchmark writes a set and takes no INPUT")
        files = make_benchmark_set(args.make_benchmark, presets=args.preset or BENCHMARK_PRESETS,
                                            n=args.n, size=args.size, seed=args.seed, overwrite=args.overwrite)
        for preset, paths in files.items():
            print(f"{preset}: {len(paths)} images in {paths[0].parent}")
        return 0
    if not args.inputs or not args.out_dir:
        raise ConfigError("give INPUT files or directories and --out-dir (or --make-benchmark DIR)")
    paths = evaluate.find_images(args.inputs)
    if not paths:
        raise ConfigError(f"no simulated images found in {', '.join(args.inputs)}")
    classical = {"min_cluster_pixels": args.min_cluster_pixels}
    method = args.method or ("predictions" if args.predictions else "network")
    labellers = {method: evaluate.labeller(args.method, model=args.model, predictions=args.predictions,
                                           device=args.device, tile_size=args.tile_size, precision=args.precision,
                                           classical_options=classical, cluster_threshold=args.cluster_threshold)}
    if method != "classical" and not args.no_baseline:
        labellers["classical"] = evaluate.labeller("classical", classical_options=classical)
    evaluate.check_outputs(args.out_dir, labellers, args.overwrite)
    evaluations, failures = evaluate.evaluate_files(paths, labellers, progress=not args.no_progress)
    for failure in failures:
        print(f"ccdseg evaluate: error: {failure}", file=sys.stderr)
    if len(failures) == len(paths):
        raise CcdsegError(f"none of the {len(paths)} file(s) could be evaluated")
    written = evaluate.write_outputs(evaluations, args.out_dir, failures, overwrite=args.overwrite)
    if args.json:
        print(evaluate.to_json(evaluations, failures), end="")
    else:
        print(evaluate.format_evaluation(evaluations))
        print(f"\n{len(paths) - len(failures)} of {len(paths)} file(s) evaluated; wrote "
              + ", ".join(str(path) for path in written.values()))
    return 1 if failures else 0
