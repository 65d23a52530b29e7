"""``ccdseg simulate``: write simulated images with their truth."""

from pathlib import Path

from tqdm import tqdm

from ccdseg import io
from ccdseg.config import load_config
from ccdseg.errors import ConfigError
from ccdseg.simulate import iter_simulations


def register(subparsers):
    parser = subparsers.add_parser(
        "simulate", help="write simulated CCD images with exact labels",
        description="Write N simulated images OUT_DIR/sim_00000.fits ... (float32 ADU, header GAIN/PEDESTAL/"
                    "RDNOISE) each with OUT_DIR/sim_00000_truth.fits (LABELS, IDS, TRUTH table).")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--n", type=int, default=10, help="number of images (default 10)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="image size in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    parser.add_argument("--preset", default="damic", help="damic, skipper or thesis (default damic)")
    parser.add_argument("--config", type=Path, help="TOML file overriding the preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one parameter, e.g. --set detector.read_noise_e=0.2")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(func=run)


def run(args):
    overrides = list(args.overrides)
    if args.size:
        overrides += [f"detector.height={args.size[0]}", f"detector.width={args.size[1]}"]
    config = load_config(args.preset, args.config, overrides)
    if args.n < 1:
        raise ConfigError(f"--n = {args.n}: must be >= 1")
    stream = iter_simulations(config, args.seed)
    for index in tqdm(range(args.n), desc="simulate", unit="image"):
        path = args.out_dir / f"sim_{index:05d}.fits"
        simulation = next(stream)
        keys = {"PRESET": args.preset, "SEED": args.seed, "SIMINDEX": index}
        io.write_simulation(simulation, path, keys=keys, overwrite=args.overwrite)
    print(f"wrote {args.n} images and their truth to {args.out_dir}")
    return 0

