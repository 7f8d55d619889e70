"""``msa tune CONFIG``: search with Ray Tune + Optuna, then the final stage."""

from __future__ import annotations

import argparse
from pathlib import Path

from workflows.commands.options import add_cluster, add_set

__all__ = ["HELP", "add_arguments", "run"]

HELP = "search with Ray Tune + Optuna, then the final stage"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """CONFIG, ``--set``, ``--resume``, ``--no-final`` and the cluster options."""
    p.add_argument("config", type=Path)
    add_set(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted search")
    p.add_argument("--no-final", action="store_true", help="skip the final evaluation stage")
    add_cluster(p)


def run(args: argparse.Namespace) -> int:
    """Run the search (and the final stage unless ``--no-final``)."""
    from workflows.experiment import load_experiment
    from workflows.runtime.search import run_tune

    exp = load_experiment(args.config, args.set)
    run_tune(
        exp,
        results_root=args.results,
        address=args.address,
        storage=args.storage,
        resume=args.resume,
        final=not args.no_final,
        num_cpus=args.num_cpus,
    )
    return 0
