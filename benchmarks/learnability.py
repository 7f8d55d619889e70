"""Does MSA learn on the synthetic data? Plain PyTorch training (no Ray) vs the chance level.

    python -m benchmarks.learnability [--epochs 10] [--data data/synth]

Trains the demo experiment's model with :func:`msa_model.training.fit` and prints the
validation metrics per epoch beside the exact chance level of random rankings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from msa_model.config import DataConfig, LossConfig, ModelConfig, OptimConfig, from_dict, load_yaml
from msa_model.data import write_synthetic_dataset
from msa_model.pipeline import load_splits
from msa_model.spec import RunSpec
from workflows.experiment import SEARCH_SPACES

__all__ = ["chance_metrics", "main"]


def _miss_probability(total: int, positives: int, k: int) -> float:
    """P(none of ``positives`` among ``total`` items lands in a random top ``k``)."""
    p = 1.0
    for i in range(min(k, total)):
        p *= max(0, total - positives - i) / (total - i)
    return p


def chance_metrics(captions_per_image: list[int]) -> dict[str, float]:
    """Expected recalls (percent) of a random ranking, for these caption counts per image."""
    n_images, n_caps = len(captions_per_image), sum(captions_per_image)
    out = {}
    for k in (1, 5, 10):
        i2t = [1 - _miss_probability(n_caps, c, k) for c in captions_per_image if c]
        out[f"i2t_r{k}"] = 100 * sum(i2t) / len(i2t)
        out[f"t2i_r{k}"] = 100 * min(k, n_images) / n_images
    out["mr"] = sum(out.values()) / 6
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data", type=Path, default=Path("data/synth"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    raw = load_yaml(SEARCH_SPACES / "demo.yaml")
    raw["data"].update(json=str(args.data / "dataset.json"), images=str(args.data / "images"))
    data = from_dict(DataConfig, raw["data"], "data")
    if not Path(data.json).is_file():
        write_synthetic_dataset(args.data, 1000, data.image_size, 0)
    chance = chance_metrics([len(r.captions) for r in load_splits(data)["val"]])
    print(f"chance level (val): mR {chance['mr']:.2f}")
    began = time.perf_counter()

    def show(row: dict) -> None:
        print(
            f"epoch {row['epoch']:2d}  loss {row['train_loss']:.2f}  val mR {row['val_mr']:.2f}"
            f"  ({row['val_mr'] / chance['mr']:.1f}x chance)  {time.perf_counter() - began:.0f} s",
            flush=True,
        )

    from msa_model.session import LoopSession
    from msa_model.training import fit

    spec = RunSpec(
        name="learnability",
        data=data,
        model=from_dict(ModelConfig, raw["model"], "model"),
        loss=from_dict(LossConfig, raw["loss"], "loss"),
        optim=from_dict(OptimConfig, raw["optim"], "optim"),
        epochs=args.epochs,
        batch_size=raw["train"]["batch_size"],
        seed=raw["train"]["seed"],
    )
    _, history = fit(spec, LoopSession(device="cpu", on_epoch=show))
    best = max(history, key=lambda r: r["val_mr"])
    summary = {
        "chance_mr": chance["mr"],
        "best_val_mr": best["val_mr"],
        "best_epoch": best["epoch"],
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
