"""``ccdseg train``: train a model from a TOML recipe."""

import os
from pathlib import Path


def register(subparsers):
    """Add the ``train`` subcommand and its options to ``subparsers``."""
    parser = subparsers.add_parser(
        "train", help="train or fine-tune a segmentation model on simulated or labelled images",
        description="Train the U-Net as the TOML config says (see configs/train_default.toml). Beside OUT it "
                    "writes OUT.log.csv, OUT.curves.png, OUT.ckpt (resume file), OUT.report.txt, "
                    "OUT.confusion.png and OUT.examples.png (with OUT's suffix replaced).")
    parser.add_argument("--config", type=Path, help="training config (TOML); default: built-in defaults")
    parser.add_argument("--out", help="model file to write (default: the config's out, model.pt)")
    parser.add_argument("--resume", type=Path, metavar="CKPT", help="continue from a resume file OUT.ckpt")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value, e.g. --set lr=1e-3 or --set arch.base_width=8")
    parser.add_argument("--init", metavar="MODEL", help="fine-tune: start from this model file ('shipped': the "
                        "shipped model); its architecture and normalisation are kept")
    parser.add_argument("--freeze-encoder", action="store_true", help="with --init: train only the decoder")
    parser.add_argument("--labelled-dir", metavar="DIR", help="train on your labelled images: DIR/NAME.fits with "
                        "DIR/NAME_labels.fits/.png/.npy, or DIR/images/NAME.fits with DIR/labels/NAME.*")
    parser.add_argument("--skip-bad-pairs", action="store_true",
                        help="train without the labelled files that do not pair up instead of refusing")
    parser.add_argument("--epochs", type=int, help="total number of epochs")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to train (default auto)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or report on the terminal")
    parser.set_defaults(func=run)


def run(args):
    """Run ``ccdseg train`` with the parsed ``args``; the exit status."""
    # torch is imported only when training is asked for, so `ccdseg --help` stays fast
    from ccdseg.nn.train import train
    from ccdseg.nn.train_config import load_train_config

    config = load_train_config(args.config, args.overrides, out=args.out, epochs=args.epochs, device=args.device,
                               init=args.init, freeze_encoder=args.freeze_encoder or None,
                               labelled_dir=args.labelled_dir, skip_bad_pairs=args.skip_bad_pairs or None)
    path = train(config, resume=args.resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun only rank 0 writes the model
        print(f"wrote {path}")
    return 0
