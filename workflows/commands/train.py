"""``msa train CONFIG``: one Ray Train run of an experiment."""

from __future__ import annotations

import argparse
from pathlib import Path

from workflows.commands.options import add_cluster, add_set

__all__ = ["HELP", "add_arguments", "run"]

HELP = "one Ray Train run of an experiment"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """CONFIG, ``--set``, ``--resume``, ``--overwrite`` and the cluster options."""
    p.add_argument("config", type=Path, help="the experiment YAML")
    add_set(p)
    p.add_argument("--resume", action="store_true", help="continue the run results/<name> holds")
    p.add_argument(
        "--overwrite", action="store_true", help="replace results/<name> (only one msa created)"
    )
    add_cluster(p)


def run(args: argparse.Namespace) -> int:
    """Train once; print the best epoch and where the results are."""
    from workflows.experiment import load_experiment
    from workflows.runtime.train import run_train

    exp = load_experiment(args.config, args.set)
    summary = run_train(
        exp,
        args.results,
        args.address,
        args.storage,
        args.num_cpus,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    best = summary["best"]
    print(
        f"[msa] best epoch {summary['best_epoch']}: val mR {best.get('val_mr', float('nan')):.2f}"
    )
    print(f"[msa] results in {args.results / exp.name}; checkpoint {summary['checkpoint']}")
    return 0
