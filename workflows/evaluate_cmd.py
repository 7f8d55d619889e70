"""``msa evaluate``: retrieval metrics of a checkpoint, or of a results folder's best one."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from msa_model.config import DataConfig, from_dict
from msa_model.pipeline import evaluate_split, restore_model

__all__ = ["resolve_checkpoint", "run_evaluate"]


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
    ckpt = resolve_checkpoint(Path(target))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, meta = restore_model(str(ckpt), device)
    data_raw = dict(meta["experiment"]["data"])
    if json_path is not None:
        data_raw["json"] = str(json_path)
        data_raw["images"] = str(images if images is not None else json_path.parent / "images")
    data = from_dict(DataConfig, data_raw, "data")
    batch = int(meta["experiment"].get("train", {}).get("eval_batch_size", 256))
    return evaluate_split(model, data, split, batch, device)
