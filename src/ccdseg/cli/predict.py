"""``ccdseg predict``: segment FITS files and write labels, cluster catalogues and figures."""

import argparse
import sys

from ccdseg.classes import NAMES
from ccdseg.infer import TILE_SIZE

#: Regions of the ``--find`` class listed per image (the largest; the figure draws more).
FIND_LISTED = 10


def register(subparsers):
    """Add the ``predict`` subcommand."""
    parser = subparsers.add_parser(
        "predict", help="segment FITS images (labels, cluster catalogue, figures)",
        description="Segment every image HDU of each INPUT and write, per input NAME: NAME_seg.fits "
                    "(LABELS extensions and the CLUSTERS table), NAME_clusters.csv, DS9 regions "
                    "(NAME_clusters.reg, or NAME_clusters_<EXTNAME>.reg per image of a multi-image file) and "
                    "NAME.png; and log each file's status in DIR/ccdseg_run.csv. A failing file is reported on "
                    "one line (the traceback with ccdseg --debug) and the others go on; the exit code is 1 if "
                    "any file failed, 2 for an invalid option (before any work).")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="FITS files (.fits, .fit, .fz, .fits.gz); files named *_truth.* or *_seg.* "
                             "(simulation truth, ccdseg outputs) are skipped. Inputs of the same name from "
                             "different folders are refused (they would write the same outputs)")
    parser.add_argument("--out-dir", required=True, metavar="DIR", help="output directory (created if missing)")
    parser.add_argument("--model", metavar="PATH", help="model file (default: the model shipped with ccdseg)")
    parser.add_argument("--hdu", metavar="NAME|INDEX", help="only this image HDU (default: every image HDU)")
    parser.add_argument("--probabilities", action="store_true",
                        help="also write the class probabilities (PROB extensions, float32)")
    parser.add_argument("--find", metavar="CLASS",
                        help=f"list and draw the regions of this class ({', '.join(NAMES)} or 0-{len(NAMES) - 1})")
    parser.add_argument("--gain", type=float, metavar="ADU_PER_E",
                        help="gain in ADU/e- (default: header key GAIN, else estimated from a skipper image)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda (default: cpu)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--skip-existing", action="store_true",
                        help="resume an interrupted batch: skip the files whose outputs are complete (listed as "
                             "done in DIR/ccdseg_run.csv, or all written by a run stopped before logging them)")
    parser.add_argument("--method", choices=("network", "classical"), default="network",
                        help="the U-Net (default) or the classical thresholding baseline")
    parser.add_argument("--tile-size", type=int, default=TILE_SIZE, metavar="N",
                        help=f"network tile side in px, a multiple of the model's 2^depth (8 for the shipped "
                             f"model; default {TILE_SIZE})")
    parser.add_argument("--precision", choices=("bf16", "fp32"),
                        help="network arithmetic: bf16 autocast (default of the torch engine, faster) or fp32 "
                             "(the onnx engine's only one)")
    parser.add_argument("--engine", choices=("torch", "onnx"), default="torch",
                        help="run the network with PyTorch (default) or ONNX Runtime (pip install 'ccdseg[onnx]'); "
                             "with onnx, --model may be an .onnx file from `ccdseg export`")
    parser.add_argument("--cluster-threshold", type=float, metavar="P",
                        help="label a pixel cluster where its cluster probability is at least P (default: the most "
                             "probable class); lower finds fainter clusters and more false ones")
    parser.add_argument("--amplifiers", default="auto", metavar="auto|none|COLSxROWS",
                        help="amplifier segments, each normalised on its own: auto (default: from the header, "
                             "else from pedestal steps in the data), none, or an even grid such as 2x2")
    parser.add_argument("--no-particles", action="store_true",
                        help="leave the catalogue's particle columns (kind, point fit, muon track) empty: the "
                             "point fits take ~13 ms per point-like cluster")
    parser.add_argument("--diffusion", type=_law, metavar="A,B",
                        help="the detector's diffusion law sigma^2(z) = -A ln(1 - b z), A in um^2 and b in 1/um "
                             "(from `ccdseg calibrate-diffusion`), for the points' depth_um (default DAMIC's "
                             "216.2,8.86e-4)")
    parallel = parser.add_mutually_exclusive_group()
    parallel.add_argument("--workers", type=int, metavar="N",
                          help="segment the files in parallel on a local Dask cluster of N processes "
                               "(pip install 'ccdseg[dask]')")
    parallel.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                          help="segment the files on an existing Dask cluster (inputs, outputs and model "
                               "on a file system shared with the workers)")
    parser.add_argument("--run-mask", metavar="PATH",
                        help="run-level defect map from `ccdseg mask`: its defects are masked and relabelled hot pixel")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _law(text):
    """``"A,B"`` -> (A, B) as floats, for argparse."""
    try:
        a, b = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected A,B (two numbers), got {text!r}") from None
    return a, b


def run(args):
    """Segment the inputs; returns the exit code (1 when a file failed)."""
    from ccdseg.pipeline.batch import split_derived
    from ccdseg.pipeline.job import process_files
    from ccdseg.pipeline.options import ProcessOptions

    hdu = int(args.hdu) if args.hdu is not None and args.hdu.isdigit() else args.hdu
    options = ProcessOptions(method=args.method, hdu=hdu, probabilities=args.probabilities, find=args.find,
                             gain=args.gain, device=args.device, engine=args.engine, precision=args.precision,
                             tile_size=args.tile_size, cluster_threshold=args.cluster_threshold,
                             overwrite=args.overwrite, skip_existing=args.skip_existing, run_mask=args.run_mask,
                             amplifiers=args.amplifiers, particles=not args.no_particles,
                             diffusion=args.diffusion)
    inputs, derived = split_derived(args.inputs)
    if derived:
        print(f"skipping {len(derived)} file(s) named *_truth or *_seg (simulation truth or ccdseg outputs, "
              "not images)")
    results, failures = process_files(inputs, args.out_dir, options, model=args.model,
                                      progress=not args.no_progress, workers=args.workers,
                                      scheduler=args.scheduler, debug=getattr(args, "debug", False))
    for result in results:
        print_result(result, options.find)
    for failure in failures:
        print(f"ccdseg predict: error: {failure}", file=sys.stderr)
    done = [result for result in results if not result.skipped]
    skipped = f", {len(results) - len(done)} skipped as done in an earlier run" if len(done) < len(results) else ""
    where = f"; outputs in {args.out_dir}" if results else ""
    print(f"{len(done)} of {len(inputs)} file(s) segmented{skipped}{where}")
    return 1 if failures else 0


def print_result(result, find=None):
    """Print a file's outputs and, per image, its clusters, gain, class shares and (with ``find``) largest regions."""
    from ccdseg.calib.gain import UNKNOWN_GAIN

    if result.skipped:
        print(f"{result.path}: skipped, done in an earlier run")
        return
    print(f"{result.path}: " + ", ".join(path.name for path in result.outputs))
    for image in result.images:
        gain = f"{image.gain:.4g} ADU/e- ({image.gain_source})" if image.gain else "unknown"
        if not image.gain:
            print(f"  {image.hdu or '-'}: {UNKNOWN_GAIN}")
        shares = ", ".join(f"{name} {100 * share:.2f} %" for name, share in zip(NAMES, image.fractions, strict=True))
        print(f"  {image.hdu or '-'}: {image.n_clusters} clusters, gain {gain}; {shares}")
        if find is not None:
            listed = image.sections[:FIND_LISTED]
            which = f"; the {len(listed)} largest:" if len(listed) < len(image.sections) else ":"
            print(f"    {len(image.sections)} region(s) of class {NAMES[find]}{which if listed else ''}")
            for number, s in enumerate(listed, start=1):
                print(f"    {number:4d}: rows {s.ymin}-{s.ymax}, columns {s.xmin}-{s.xmax}, {s.npix} px")
