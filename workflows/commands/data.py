"""``msa data synth OUT`` and ``msa data check JSON --images DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["HELP", "add_arguments", "run"]

HELP = "datasets: synthesise or check"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``synth`` and ``check`` subcommands."""
    sub = p.add_subparsers(dest="data_command", required=True)
    synth = sub.add_parser("synth", help="write the embedded synthetic remote-sensing dataset")
    synth.add_argument("out", type=Path)
    synth.add_argument("--images", type=int, default=1000)
    synth.add_argument("--size", type=int, default=64)
    synth.add_argument("--seed", type=int, default=0)
    check = sub.add_parser("check", help="validate a Karpathy-style dataset")
    check.add_argument("json", type=Path)
    check.add_argument("--images", type=Path, required=True, help="the image folder")


def run(args: argparse.Namespace) -> int:
    """Write the synthetic dataset, or print a dataset's check report."""
    if args.data_command == "synth":
        from msa_model.data import write_synthetic_dataset

        path = write_synthetic_dataset(args.out, args.images, args.size, args.seed)
        print(f"wrote {args.images} images and {path}")
        return 0
    from msa_model.data import check_dataset, format_report

    print(format_report(check_dataset(args.json, args.images)))
    return 0
