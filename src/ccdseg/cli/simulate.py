"""``ccdseg simulate``: write simulated images with their truth."""

from pathlib import Path

from ccdseg.errors import ConfigError
from ccdseg.sim.config import PRESETS


def register(subparsers):
    """Add the ``simulate`` subcommand and its options to ``subparsers``."""
    parser = subparsers.add_parser(
        "simulate", help="write simulated CCD images with exact labels",
        description="Write N simulated images OUT_DIR/sim_00000.fits ... (float32 ADU, header GAIN/PEDESTAL/"
                    "RDNOISE) each with OUT_DIR/sim_00000_truth.fits (LABELS, IDS, TRUTH table). With "
                    "--background, simulated events are added to a real frame instead (its header is kept, with the "
                    "gain used and GAINSRC): its own pixels are "
                    "labelled 255 (unknown, skipped in training) except those at the pedestal far from any "
                    "charge (background).")
    parser.add_argument("out_dir", type=Path, help="output directory (created if missing)")
    parser.add_argument("--n", type=int, default=10, help="number of images (default 10)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="image size in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same files")
    parser.add_argument("--preset", default="damic", help=f"simulation preset: {', '.join(PRESETS)} (default damic)")
    parser.add_argument("--config", type=Path, help="TOML file overriding the preset")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one parameter, e.g. --set detector.read_noise_e=0.2")
    parser.add_argument("--background", type=Path, metavar="FRAME",
                        help="paste the simulated events onto this real FITS frame (image i onto its i-th "
                             "image HDU, cycling); the preset sets the events, the frame the readout")
    parser.add_argument("--hdu", help="with --background: only this HDU (EXTNAME or index)")
    parser.add_argument("--gain", type=float, help="with --background: frame gain in ADU/e- (default: the GAIN "
                        "header key, else measured from the single-electron peaks)")
    parser.add_argument("--artefacts", action="store_true",
                        help="with --background: also paste simulated glow and hot pixels")
    parser.add_argument("--like", type=Path, metavar="FRAME",
                        help="measure this real skipper frame (every image HDU, or --hdu) and simulate frames "
                             "like it: gain, noise, pedestal, dark level and ramps, hot columns, event rates, "
                             "diffusion; the fitted parameters go to OUT_DIR/like.toml (reusable with --config), "
                             "the preset supplies the rest")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(func=run)


def run(args):
    """Run ``ccdseg simulate`` with the parsed ``args``; the exit status."""
    from astropy.io import fits
    from tqdm import tqdm

    from ccdseg.io import read_images
    from ccdseg.sim.config import load_config
    from ccdseg.sim.paste import iter_pasted
    from ccdseg.sim.simulate import iter_simulations
    from ccdseg.sim.truth import write_simulation

    overrides = list(args.overrides)
    if args.size:
        overrides += [f"detector.height={args.size[0]}", f"detector.width={args.size[1]}"]
    if args.n < 1:
        raise ConfigError(f"--n = {args.n}: must be >= 1")
    if args.like is not None and (args.background is not None or args.config is not None):
        raise ConfigError("--like fits its own config: it cannot be combined with --background or --config")
    if args.background is None and args.like is None and (args.hdu is not None or args.gain is not None):
        raise ConfigError("--hdu and --gain need --background FRAME or --like FRAME")
    if args.background is None and args.artefacts:
        raise ConfigError("--artefacts needs --background FRAME")
    config_path = args.config
    if args.like is not None:
        config_path = _fit_like(args)
    config = load_config(args.preset, config_path, overrides)
    stream = (((simulation, {}) for simulation in iter_simulations(config, args.seed)) if args.background is None
              else iter_pasted(read_images(args.background, args.hdu), config, gain=args.gain, seed=args.seed,
                              with_artefacts=args.artefacts, source=args.background.name,
                              primary=fits.getheader(args.background, 0)))
    for index in tqdm(range(args.n), desc="simulate", unit="image"):
        path = args.out_dir / f"sim_{index:05d}.fits"
        simulation, extra = next(stream)
        keys = fits.Header([("PRESET", args.preset), ("SEED", args.seed), ("SIMINDEX", index)])
        keys.extend(extra, update=True)
        write_simulation(simulation, path, keys=keys, overwrite=args.overwrite)
    print(f"wrote {args.n} images and their truth to {args.out_dir}")
    return 0


def _fit_like(args):
    """Measure the --like frame, write OUT_DIR/like.toml and return its path."""
    from ccdseg.io.atomic import check_absent
    from ccdseg.measure.like import fit_like_file, write_like

    path = args.out_dir / "like.toml"
    check_absent([path], args.overwrite)
    fitted = fit_like_file(args.like, hdu=args.hdu, preset=args.preset, gain=args.gain, seed=args.seed)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    write_like(path, fitted, overwrite=args.overwrite, source=args.like.name)
    print(f"fitted {args.like.name}: parameters in {path}")
    return path
