"""``ccdseg export``: write a model as ONNX, for ONNX Runtime or tools outside ccdseg."""


def register(subparsers):
    """Add the ``export`` subcommand and its options to ``subparsers``."""
    parser = subparsers.add_parser(
        "export", help="export a model to ONNX",
        description="Write MODEL as an ONNX graph from normalised tiles 'image' (N, 1, H, W) to class "
                    "probabilities 'probabilities' (N, 4, H, W), with dynamic N, H, W (H, W multiples of "
                    "2**depth). The ONNX metadata_props hold the normalisation parameters and recipe, the "
                    "class names and the architecture. Run it with `ccdseg predict --engine onnx --model OUT`. "
                    "Needs the onnx extra: pip install 'ccdseg[onnx]'.")
    parser.add_argument("model", metavar="MODEL", help="ccdseg model file (.pt)")
    parser.add_argument("out", metavar="OUT", help="ONNX file to write (.onnx)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    parser.set_defaults(func=run)


def run(args):
    """Run ``ccdseg export`` with the parsed ``args``; the exit status."""
    # torch and onnx are imported only when exporting, so `ccdseg --help` stays fast
    from ccdseg.infer.onnx import export_onnx

    path = export_onnx(args.model, args.out, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0
