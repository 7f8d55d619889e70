"""``msa evaluate``: retrieval metrics of a model, a checkpoint, a results folder or a trial."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from workflows.results.locate import resolve_checkpoint

__all__ = ["HELP", "add_arguments", "run", "resolve_checkpoint", "run_evaluate"]

HELP = "retrieval metrics of a model, a checkpoint, a results dir or one of its trials"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """TARGET, ``--trial``, ``--split`` and another dataset (``--dataset``, ``--images``)."""
    p.add_argument(
        "target",
        type=Path,
        help="an exported model, a checkpoint folder, or results/<name> (its winner or best run)",
    )
    p.add_argument(
        "--trial", metavar="ID", help="with results/<name>: this search trial's best checkpoint"
    )
    p.add_argument(
        "--split", default="val", choices=["train", "val", "test"], help="(default: val)"
    )
    p.add_argument("--dataset", type=Path, help="evaluate on this dataset JSON instead")
    p.add_argument("--images", type=Path, help="image folder of --dataset (default: its images/)")
    p.add_argument(
        "--reread-test",
        action="store_true",
        help="with --split test: read the test split of a model already tested (recorded)",
    )


def run(args: argparse.Namespace) -> int:
    """Print each metric of the checkpoint on the split."""
    metrics = run_evaluate(
        args.target, args.split, args.dataset, args.images, args.trial, args.reread_test
    )
    for key, value in metrics.items():
        print(f"{key:>8s} {value:6.2f}")
    return 0


def run_evaluate(
    target: Path,
    split: str = "val",
    dataset: Path | None = None,
    images: Path | None = None,
    trial: str | None = None,
    reread_test: bool = False,
) -> dict[str, float]:
    """Metrics of the checkpoint behind ``target`` on ``split`` of its own (or the given) data.

    A read of the test split goes through the test-read ledger
    (:mod:`workflows.results.read_ledger`): recorded, and refused for a model whose test split
    was read before unless ``reread_test``.
    """
    from msa_model.evaluation import evaluate_checkpoint
    from workflows.results.model_meta import read_model_meta, weights_must_fit
    from workflows.results.read_ledger import (
        RECORD,
        claim_test_read,
        finish_test_read,
        ledger_of,
    )

    ckpt = resolve_checkpoint(Path(target), trial)
    meta = read_model_meta(ckpt)
    data = None
    if dataset is not None:
        data = {
            **meta["experiment"]["data"],
            "json": str(dataset),
            "images": str(images if images is not None else dataset.parent / "images"),
        }
    if split != "test":
        with weights_must_fit(ckpt):
            return evaluate_checkpoint(ckpt, [split], data)[split]
    ledger, key = ledger_of(ckpt, Path(target), meta.get("source"))
    if dataset is not None:
        key += f"@{Path(dataset).resolve()}"
    claim_test_read(ledger, key, reread_test)
    with weights_must_fit(ckpt):
        metrics = evaluate_checkpoint(ckpt, [split], data)[split]
    finish_test_read(ledger, key)
    print(f"[msa] test split read for {key}; recorded in {ledger / RECORD}", file=sys.stderr)
    return metrics
