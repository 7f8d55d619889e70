"""``msa data synth OUT``, ``msa data check JSON --images DIR`` and ``msa data import``."""

from __future__ import annotations

import argparse
from pathlib import Path

from workflows.commands.options import at_least, positive_int

__all__ = ["HELP", "add_arguments", "run"]

HELP = "datasets: synthesise, check or import"
MIN_SYNTH_SIZE = 32  # the generator's smallest scene


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``synth``, ``check`` and ``import`` subcommands."""
    from msa_model.config import DataConfig

    sub = p.add_subparsers(dest="data_command", required=True)
    synth = sub.add_parser("synth", help="write the embedded synthetic remote-sensing dataset")
    synth.add_argument("out", type=Path, help="the folder to write (images/ and dataset.json)")
    synth.add_argument(
        "--images", type=positive_int, default=1000, help="how many images (default: 1000)"
    )
    synth.add_argument(
        "--size",
        type=at_least(MIN_SYNTH_SIZE),
        default=64,
        help=f"image side in pixels, >= {MIN_SYNTH_SIZE} (default: 64)",
    )
    synth.add_argument(
        "--seed", type=int, default=0, help="seed of the scenes and captions (default: 0)"
    )
    synth.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the synthetic dataset OUT holds (never other files)",
    )
    check = sub.add_parser("check", help="validate a Karpathy-style dataset as training reads it")
    check.add_argument("json", type=Path, help="the dataset JSON (Karpathy format)")
    check.add_argument("--images", type=Path, required=True, help="the image folder")
    check.add_argument(
        "--val-fraction",
        type=float,
        default=DataConfig.val_fraction,
        help="data.val_fraction: share of train carved out as val when none",
    )
    check.add_argument(
        "--split-seed",
        type=int,
        default=DataConfig.split_seed,
        help="data.split_seed: seed of that carve-out",
    )
    check.add_argument(
        "--require-test",
        action="store_true",
        help="fail without a test split (a run with final.enabled needs one)",
    )
    imp = sub.add_parser("import", help="convert COCO-style or UCM/Sydney caption JSON to ours")
    imp.add_argument(
        "format",
        choices=["coco", "karpathy"],
        help="coco: images + annotations (image_id, caption); karpathy: UCM/Sydney",
    )
    imp.add_argument(
        "inputs",
        type=Path,
        nargs="*",
        help="coco: files whose images carry a 'split' key; karpathy: one file",
    )
    for split in ("train", "val", "test"):
        imp.add_argument(
            f"--{split}",
            type=Path,
            action="append",
            default=[],
            help=f"coco: a caption file whose images are all {split}",
        )
    imp.add_argument("--out", type=Path, required=True, help="the dataset JSON to write")
    imp.add_argument("--name", help="the dataset name written into the JSON")
    imp.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUT when it is an earlier import (never another file)",
    )


def _import(args: argparse.Namespace) -> int:
    from msa_model.data import DatasetError, coco_to_karpathy, normalise_karpathy, write_dataset

    if args.format == "coco":
        sources = [(path, None) for path in args.inputs]
        sources += [
            (path, split) for split in ("train", "val", "test") for path in getattr(args, split)
        ]
        if not sources:
            raise DatasetError(
                "msa data import coco: give caption files (--train/--val/--test "
                "FILE, or FILE whose images carry a 'split' key)"
            )
        data, summary = coco_to_karpathy(sources, name=args.name or "imported")
    else:
        if len(args.inputs) != 1 or args.train or args.val or args.test:
            raise DatasetError(
                "msa data import karpathy: give exactly one JSON file (its "
                "images carry their split)"
            )
        data, summary = normalise_karpathy(args.inputs[0], name=args.name)
    out = write_dataset(data, args.out, overwrite=args.overwrite)
    print(f"wrote {out}: {summary.describe()}")
    print(f"next: msa data check {out} --images <the image folder>")
    return 0


def run(args: argparse.Namespace) -> int:
    """Write the synthetic dataset, print a dataset's check report, or import a dataset."""
    if args.data_command == "synth":
        from msa_model.data import write_synthetic_dataset

        path = write_synthetic_dataset(
            args.out, args.images, args.size, args.seed, overwrite=args.overwrite
        )
        print(f"wrote {args.images} images and {path}")
        return 0
    if args.data_command == "import":
        return _import(args)
    from msa_model.config import DataConfig, from_dict
    from msa_model.data import check_data, format_report

    cfg = from_dict(
        DataConfig,
        {
            "json": str(args.json),
            "images": str(args.images),
            "val_fraction": args.val_fraction,
            "split_seed": args.split_seed,
        },
        "data",
    )
    print(format_report(check_data(cfg, require_test=args.require_test)))
    return 0
