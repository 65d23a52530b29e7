"""``ccdseg demo``: the shipped model on a simulated frame and on the bundled DAMIC-M sample."""

from pathlib import Path

from ccdseg.sim.config import PRESETS


def register(subparsers):
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo", help="segment a simulated frame and the bundled DAMIC-M sample with the shipped model",
        description="Simulate a 4096 x 4096 frame, segment it and the bundled DAMIC-M sample with the shipped "
                    "model, write every output of `ccdseg predict` and print a metric table against the truth.")
    parser.add_argument("--out-dir", type=Path, default=Path("ccdseg_demo"), help="default ./ccdseg_demo")
    parser.add_argument("--size", type=int, nargs=2, default=(4096, 4096), metavar=("H", "W"),
                        help="size of the simulated frame in px (default 4096 4096)")
    parser.add_argument("--preset", default="damic", help=f"simulation preset: {', '.join(PRESETS)} (default damic)")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the simulated frame (default 2026)")
    parser.add_argument("--model", help="model file (default: the shipped model)")
    parser.set_defaults(func=run)


def run(args):
    """Run the demonstration; print each file's results and the metric table; returns the exit code."""
    from ccdseg.cli.predict import print_result
    from ccdseg.pipeline.demo import run_demo

    outcome = run_demo(args.out_dir, tuple(args.size), args.preset, args.seed, args.model)
    for result in outcome["results"]:
        print_result(result)
    for failure in outcome["failures"]:
        print(f"failed: {failure}")
    print(f"\nsimulated {args.preset} frame {args.size[0]} x {args.size[1]} against its truth:")
    print(outcome["report"])
    return 1 if outcome["failures"] else 0
