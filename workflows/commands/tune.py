"""``msa tune CONFIG``: search with Ray Tune + Optuna, then the final stage."""

from __future__ import annotations

import argparse
from pathlib import Path

from workflows.commands.options import add_cluster, add_set

__all__ = ["HELP", "add_arguments", "run"]

HELP = "search with Ray Tune + Optuna, then the final stage"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """CONFIG, ``--set``, ``--resume``, ``--more``, ``--no-final``, ``--reread-test``, cluster."""
    p.add_argument("config", type=Path, help="the experiment YAML (with a search section)")
    add_set(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted search")
    p.add_argument(
        "--more",
        type=int,
        default=0,
        metavar="N",
        help="with --resume: add N trials to a finished search (the same Optuna study)",
    )
    p.add_argument("--no-final", action="store_true", help="skip the final evaluation stage")
    p.add_argument(
        "--reread-test",
        action="store_true",
        help="evaluate a model on the test split again although it was read before",
    )
    add_cluster(p)


def run(args: argparse.Namespace) -> int:
    """Run the search (and the final stage unless ``--no-final``); Ctrl-C: 130, resumable."""
    from workflows.errors import SearchInterrupted
    from workflows.experiment import load_experiment

    exp = load_experiment(args.config, args.set)
    try:
        from workflows.runtime.search import run_tune

        out = run_tune(
            exp,
            results_root=args.results,
            address=args.address,
            storage=args.storage,
            resume=args.resume,
            final=not args.no_final,
            num_cpus=args.num_cpus,
            more=args.more,
            reread_test=args.reread_test,
        )
    except KeyboardInterrupt:  # outside Tune's own handling (starting Ray, writing the tables)
        raise SearchInterrupted("interrupted: rerun with --resume to continue") from None
    from workflows.results.outcome import print_outcome

    print_outcome(out)
    return 0
