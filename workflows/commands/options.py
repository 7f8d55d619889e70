"""Arguments several commands share: ``--set`` overrides and where the Ray cluster is."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

__all__ = ["add_set", "add_cluster", "at_least", "positive_int", "SET_HELP"]

SET_HELP = "override one dotted key of the experiment, e.g. train.epochs=4 (repeatable)"


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = at_least(1)


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
