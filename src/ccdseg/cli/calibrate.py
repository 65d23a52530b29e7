"""``ccdseg calibrate-diffusion``: fit the diffusion law from the muons of FITS frames."""

from pathlib import Path


def register(subparsers):
    """Add the ``calibrate-diffusion`` parser."""
    parser = subparsers.add_parser(
        "calibrate-diffusion", help="fit the diffusion law sigma(z) from through-going muons",
        description="Segment the frames, pick the through-going muons and fit A and b of "
                    "sigma(z) = sqrt(-A ln(1 - b z)) to their width profiles.")
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="FITS frames")
    parser.add_argument("--gain", type=float, help="gain in ADU/e- (default: header GAIN, else measured)")
    parser.add_argument("--model", metavar="PATH", help="model file (default: the shipped model)")
    parser.add_argument("--thickness", type=float, default=675.0, help="CCD thickness in um (675)")
    parser.add_argument("--pixel", type=float, default=15.0, help="pixel pitch in um (15)")
    parser.set_defaults(func=run)


def run(args):
    """Fit and print A and b; returns the exit code."""
    from ccdseg.pipeline.diffusion import calibrate_diffusion

    fit = calibrate_diffusion(args.files, gain=args.gain, model=args.model, thickness_um=args.thickness,
                              pixel_um=args.pixel)
    print(f"A = {fit['a_um2']:.1f} +- {fit['a_err_um2']:.1f} um^2, b = {fit['b_per_um']:.3e} +- "
          f"{fit['b_err_per_um']:.1e} /um from {fit['n_tracks']} muon tracks")
    return 0
