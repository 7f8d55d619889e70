"""Does MSA learn on the synthetic data? Plain PyTorch training (no Ray) vs the chance level.

    python -m benchmarks.learnability [--epochs 10] [--data data/synth]

Trains the demo experiment's model with :func:`msa_model.training.fit` and prints the
validation metrics per epoch beside the exact chance level of random rankings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from msa_model.chance import chance_metrics
from msa_model.data import write_synthetic_dataset
from msa_model.pipeline import load_splits
from workflows.experiment import SEARCH_SPACES, load_experiment

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data", type=Path, default=Path("data/synth"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    exp = load_experiment(
        SEARCH_SPACES / "demo.yaml",
        [
            f"data.json={args.data / 'dataset.json'}",
            f"data.images={args.data / 'images'}",
            f"train.epochs={args.epochs}",
        ],
    )
    data = exp.data
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

    spec = dataclasses.replace(exp.spec(), name="learnability")
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
