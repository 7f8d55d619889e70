"""``msa export RESULTS_DIR``: the best config(s) of a search as YAML."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["HELP", "add_arguments", "run"]

HELP = "best config(s) of a search as YAML"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """RESULTS_DIR, ``--top`` and ``--out``."""
    p.add_argument("results_dir", type=Path)
    p.add_argument("--top", type=int, default=1)
    p.add_argument("--out", type=Path, help="output file (default: <results_dir>/best_config.yaml)")


def run(args: argparse.Namespace) -> int:
    """Write the configs; print their paths."""
    from workflows.results.export import export_best

    for path in export_best(args.results_dir, args.top, args.out):
        print(path)
    return 0
