"""``ccdseg mask``: run-level defect maps from the frames of a run."""


def register(subparsers):
    """Add the ``mask`` subcommand to ``subparsers``."""
    parser = subparsers.add_parser(
        "mask", help="run-level defect map from the frames of a run (run_mask.fits)",
        description="Find the pixels and columns whose charge is high in more frames of the run than events "
                    "explain (a binomial test against each frame's rate) and write DIR/run_mask.fits, one "
                    "uint8 map per image EXTNAME (1 pixel defect, 2 column defect). Apply it with "
                    "`ccdseg predict --run-mask DIR/run_mask.fits`.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="FITS frames of one detector (same shape, EXTNAME)")
    parser.add_argument("--out-dir", required=True, metavar="DIR", help="output directory (created if missing)")
    parser.add_argument("--gain", type=float, metavar="ADU_PER_E",
                        help="gain in ADU/e- (default: header key GAIN, else estimated from each image)")
    parser.add_argument("--hdu", metavar="NAME|INDEX", help="only this image HDU (default: every image HDU)")
    parser.add_argument("--alpha", type=float, default=1e-3, metavar="P",
                        help="chance that a run without defects gets any pixel or column flagged (0.001)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run_mask.fits")
    parser.set_defaults(func=run)


def run(args):
    """Build and write the run mask; returns the exit code."""
    from pathlib import Path

    from ccdseg.calib.gain import check_gain
    from ccdseg.measure.run_mask import build_run_mask, write_run_mask

    hdu = int(args.hdu) if args.hdu is not None and args.hdu.isdigit() else args.hdu
    maps = build_run_mask(args.inputs, gain=check_gain(args.gain), alpha=args.alpha, hdu=hdu)
    path = Path(args.out_dir) / "run_mask.fits"
    write_run_mask(maps, path, n_frames=len(args.inputs), overwrite=args.overwrite)
    for label, defects in maps.items():
        print(f"  {label}: {int((defects & 1).astype(bool).sum())} defect pixels, "
              f"{int((defects & 2).astype(bool).any(axis=0).sum())} defect columns")
    print(f"wrote {path}")
    return 0
