"""``msa evaluate``: retrieval metrics of a model, a checkpoint, a results folder or a trial."""

from __future__ import annotations

import argparse
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


def run(args: argparse.Namespace) -> int:
    """Print each metric of the checkpoint on the split."""
    metrics = run_evaluate(args.target, args.split, args.dataset, args.images, args.trial)
    for key, value in metrics.items():
        print(f"{key:>8s} {value:6.2f}")
    return 0


def run_evaluate(
    target: Path,
    split: str = "val",
    dataset: Path | None = None,
    images: Path | None = None,
    trial: str | None = None,
) -> dict[str, float]:
    """Metrics of the checkpoint behind ``target`` on ``split`` of its own (or the given) data."""
    from msa_model.checkpoint import read_checkpoint_meta
    from msa_model.evaluation import evaluate_checkpoint

    ckpt = resolve_checkpoint(Path(target), trial)
    data = None
    if dataset is not None:
        data = {
            **read_checkpoint_meta(ckpt)["experiment"]["data"],
            "json": str(dataset),
            "images": str(images if images is not None else dataset.parent / "images"),
        }
    return evaluate_checkpoint(ckpt, [split], data)[split]
