"""Arguments several commands share: ``--set``, where the Ray cluster is, ``--verbose``."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["add_set", "add_cluster", "at_least", "positive_int", "SET_HELP", "Verbose"]

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


class Verbose(argparse.Action):
    """``--verbose``: sets ``MSA_VERBOSE=1``, which every process of the run inherits.

    Without it a run prints one line per epoch of each trial, one per finished trial and its
    summary; with it also Ray's progress tables, its INFO logs and the libraries' progress bars
    (see :mod:`workflows.runtime.reporter`).
    """

    def __init__(self, option_strings: list[str], dest: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        # workflows.runtime.reporter.VERBOSE_ENV, not imported: Ray must not be imported while
        # the arguments are parsed (it reads RAY_DEDUP_LOGS on import, set after them)
        os.environ["MSA_VERBOSE"] = "1"
        setattr(namespace, self.dest, True)


def add_cluster(p: argparse.ArgumentParser) -> None:
    """``--address``, ``--storage``, ``--results``, ``--num-cpus`` and ``--verbose``."""
    p.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else local)")
    p.add_argument("--storage", help="shared storage for Ray state/checkpoints (dir, s3://, gs://)")
    p.add_argument(
        "--results", type=Path, default=Path("results"), help="results root (default: results)"
    )
    p.add_argument("--num-cpus", type=positive_int, help="CPUs of a local cluster (default: all)")
    p.add_argument(
        "--verbose",
        action=Verbose,
        help="also print Ray's progress tables, its logs and progress bars (MSA_VERBOSE=1)",
    )
