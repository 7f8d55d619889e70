"""Throughput of the training data pipeline: TrainPairs + DataLoader, with and without the cache.

Run ``python benchmarks/bench_loader.py [--json J --images DIR] [--num-images N] ...``. Without
``--json`` it writes the synthetic dataset to a temporary folder first. It prints one row per
setting: samples per second in the first epoch (decoding) and the later ones (cache hits).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from msa_model.config import DataConfig
from msa_model.data import (
    ImageStore,
    TrainPairs,
    build_transform,
    collate,
    make_splits,
    read_karpathy,
    write_synthetic_dataset,
)

__all__ = ["bench", "main"]


def bench(cfg: DataConfig, batch_size: int, epochs: int) -> list[float]:
    """Samples per second of each epoch over the training split of ``cfg``."""
    records = make_splits(read_karpathy(cfg.json), cfg.val_fraction, cfg.split_seed)["train"]
    data = TrainPairs(
        records, ImageStore.from_config(cfg), build_transform(cfg, train=True), cfg.sampling, seed=0
    )
    loader = DataLoader(
        data,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate,
        num_workers=cfg.loader_workers,
        persistent_workers=cfg.loader_workers > 0,
    )
    rates = []
    for epoch in range(epochs):
        data.set_epoch(epoch)
        start, seen = time.perf_counter(), 0
        for batch in loader:
            seen += len(batch["captions"])
        rates.append(seen / (time.perf_counter() - start))
    return rates


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="dataset JSON (default: a fresh synthetic dataset)")
    parser.add_argument("--images", help="image folder of --json")
    parser.add_argument("--num-images", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        if args.json is None:
            start = time.perf_counter()
            json_path = write_synthetic_dataset(tmp, args.num_images, args.image_size)
            print(
                f"synthetic dataset: {args.num_images} images in "
                f"{time.perf_counter() - start:.1f} s"
            )
            image_dir = Path(tmp) / "images"
        else:
            json_path, image_dir = Path(args.json), Path(args.images or Path(args.json).parent)
        print(f"{'cache':<6} {'workers':>7}  samples/s per epoch")
        for cache in (False, True):
            for workers in args.workers:
                cfg = DataConfig(
                    json=str(json_path),
                    images=str(image_dir),
                    image_size=args.image_size,
                    cache_images=cache,
                    loader_workers=workers,
                )
                rates = bench(cfg, args.batch_size, args.epochs)
                print(f"{str(cache):<6} {workers:>7}  " + "  ".join(f"{r:8.0f}" for r in rates))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
