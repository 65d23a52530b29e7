"""``ccdseg average``: the weight-space average of fine-tunes with the model they started from."""


def register(subparsers):
    """Add the ``average`` subcommand and its options to ``subparsers``."""
    parser = subparsers.add_parser(
        "average", help="average fine-tuned models with the model they started from (WiSE-FT)",
        description="Write (1 - W) x START + W x mean(FINETUNED), weight by weight. Fine-tunes on new data "
                    "drift a little on the old; part of the way back keeps the old behaviour and most of the "
                    "gain. Measure OUT with `python benchmarks/accuracy.py --model OUT`.")
    parser.add_argument("start", help="the model the fine-tunes started from ('shipped': the shipped model)")
    parser.add_argument("finetuned", nargs="+", help="fine-tuned model files (ccdseg train --init START)")
    parser.add_argument("--weight", type=float, required=True, help="share W of the fine-tunes, in (0, 1]")
    parser.add_argument("--out", required=True, help="model file to write")
    parser.set_defaults(func=run)


def run(args):
    """Run ``ccdseg average`` with the parsed ``args``; the exit status."""
    from ccdseg.nn.average import average_models  # torch only when asked for

    start = None if args.start == "shipped" else args.start
    print(f"wrote {average_models(start, args.finetuned, weight=args.weight, out=args.out)}")
    return 0
