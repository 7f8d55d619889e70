"""Arguments several commands share: ``--set`` overrides and where the Ray cluster is."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_set", "add_cluster", "positive_int", "SET_HELP"]

SET_HELP = "override one dotted key of the experiment, e.g. train.epochs=4 (repeatable)"


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_set(p: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable): override one dotted key of the experiment."""
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)


def add_cluster(p: argparse.ArgumentParser) -> None:
    """``--address``, ``--storage``, ``--results`` and ``--num-cpus``."""
    p.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else local)")
    p.add_argument("--storage", help="shared storage for Ray state/checkpoints (dir, s3://, gs://)")
    p.add_argument(
        "--results", type=Path, default=Path("results"), help="results root (default: results)"
    )
    p.add_argument(
        "--num-cpus", type=positive_int, help="CPUs of a local cluster (default: all)"
    )
