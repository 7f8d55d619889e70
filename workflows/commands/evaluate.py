"""``msa evaluate``: retrieval metrics of a checkpoint, or of a results folder's best one."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["HELP", "add_arguments", "run", "resolve_checkpoint", "run_evaluate"]

HELP = "retrieval metrics of a checkpoint or a results dir"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """TARGET, ``--split`` and another dataset (``--json``, ``--images``)."""
    p.add_argument("target", type=Path, help="checkpoint folder, or results/<name>")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--json", type=Path, help="evaluate on this dataset JSON instead")
    p.add_argument("--images", type=Path, help="image folder of --json")


def run(args: argparse.Namespace) -> int:
    """Print each metric of the checkpoint on the split."""
    metrics = run_evaluate(args.target, args.split, args.json, args.images)
    for key, value in metrics.items():
        print(f"{key:>8s} {value:6.2f}")
    return 0


def resolve_checkpoint(target: Path) -> Path:
    """A checkpoint folder from a checkpoint, a ``msa tune`` results dir or a ``msa train`` one."""
    if (target / "meta.json").is_file():
        return target
    for summary in (target / "final" / "metrics.json", target / "metrics.json"):
        if summary.is_file():
            path = json.loads(summary.read_text()).get("checkpoint")
            if path:
                return Path(path)
    raise FileNotFoundError(
        f"{target}: neither a checkpoint (meta.json) nor a results folder with final/metrics.json "
        f"or metrics.json naming one"
    )


def run_evaluate(
    target: Path, split: str = "val", json_path: Path | None = None, images: Path | None = None
) -> dict[str, float]:
    """Metrics of the checkpoint behind ``target`` on ``split`` of its own (or the given) data."""
    from msa_model.checkpoint import read_checkpoint_meta
    from msa_model.evaluation import evaluate_checkpoint

    ckpt = resolve_checkpoint(Path(target))
    data = None
    if json_path is not None:
        data = {
            **read_checkpoint_meta(ckpt)["experiment"]["data"],
            "json": str(json_path),
            "images": str(images if images is not None else json_path.parent / "images"),
        }
    return evaluate_checkpoint(ckpt, [split], data)[split]
