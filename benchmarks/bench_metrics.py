"""Benchmark of :func:`msa_model.metrics.retrieval_metrics`.

Two measurements:

* ``compare``: the chunked, vectorised metrics vs the per-query loop common in RSITR evaluation
  code (for every query: one similarity row, a full argsort, then a search for the positives),
  on the same data (default 1,000 images x 5,000 captions).
* ``large``: the fast path alone at 50,000 images x 250,000 captions (d = 256). It runs in a
  fresh subprocess whose ``ru_maxrss`` (peak resident set size, includes the Python/torch
  runtime and the embeddings themselves) is the memory figure; the RSS just before the call is
  reported too.

``python -m benchmarks.bench_metrics`` prints both as a table; :func:`run` returns the rows.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

from msa_model.metrics import RECALL_KEYS, retrieval_metrics

__all__ = ["loop_metrics", "run"]


def _data(n_images: int, captions_per_image: int, dim: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n_images, dim, generator=gen)
    caption_image = torch.arange(n_images).repeat_interleave(captions_per_image)
    texts = torch.randn(caption_image.numel(), dim, generator=gen)
    texts.mul_(5.0).add_(images[caption_image])  # noisy copies: mid-range recalls
    return images, texts, caption_image


def loop_metrics(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, caption_image: torch.Tensor
) -> dict[str, float]:
    """Per-query argsort baseline (numpy), in the style of the usual RSITR evaluation code."""
    ims = torch.nn.functional.normalize(image_embeds.float(), dim=-1).numpy()
    caps = torch.nn.functional.normalize(text_embeds.float(), dim=-1).numpy()
    owner = caption_image.numpy()
    i2t, t2i = [], []
    for i in range(ims.shape[0]):
        positives = np.flatnonzero(owner == i)
        if positives.size == 0:
            continue
        order = np.argsort(ims[i] @ caps.T)[::-1]
        i2t.append(min(np.flatnonzero(order == p)[0] for p in positives))
    for j in range(caps.shape[0]):
        order = np.argsort(caps[j] @ ims.T)[::-1]
        t2i.append(np.flatnonzero(order == owner[j])[0])
    out = {}
    for name, ranks in (("i2t", np.array(i2t)), ("t2i", np.array(t2i))):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = 100.0 * float(np.mean(ranks < k))
    out["mr"] = sum(out[k] for k in RECALL_KEYS) / 6
    return out


def _time(fn, repeats: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def compare(
    n_images: int = 1000, captions_per_image: int = 5, dim: int = 256, repeats: int = 3
) -> dict[str, Any]:
    """Fast vs loop at one size; times are the best of ``repeats`` (the loop runs once).

    ``two_gemms_s`` times the two full similarity products alone: the floor of the fast path,
    which computes the same products in chunks.
    """
    images, texts, owner = _data(n_images, captions_per_image, dim)
    fast_s, fast = _time(lambda: retrieval_metrics(images, texts, owner), repeats)
    loop_s, slow = _time(lambda: loop_metrics(images, texts, owner), 1)
    gemm_s, _ = _time(lambda: (images @ texts.T, texts @ images.T), repeats)
    return {
        "case": "compare",
        "images": n_images,
        "captions": owner.numel(),
        "dim": dim,
        "fast_s": fast_s,
        "loop_s": loop_s,
        "speedup": loop_s / fast_s,
        "two_gemms_s": gemm_s,
        "max_recall_diff": max(abs(fast[k] - slow[k]) for k in fast),
        "mr": fast["mr"],
    }


def _large_worker(n_images: int, captions_per_image: int, dim: int, chunk_size: int) -> None:
    images, texts, owner = _data(n_images, captions_per_image, dim)
    rss_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu_start = time.perf_counter(), time.process_time()
    result = retrieval_metrics(images, texts, owner, chunk_size=chunk_size)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "peak_rss_mib": peak_kib / 1024,
                "rss_before_mib": rss_before_kib / 1024,
                "mr": result["mr"],
            }
        )
    )


def large(
    n_images: int = 50_000, captions_per_image: int = 5, dim: int = 256, chunk_size: int = 1024
) -> dict[str, Any]:
    """Fast path alone in a fresh subprocess: wall time and peak RSS."""
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_metrics",
        "--worker",
        str(n_images),
        str(captions_per_image),
        str(dim),
        str(chunk_size),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    return {
        "case": "large",
        "images": n_images,
        "captions": n_images * captions_per_image,
        "dim": dim,
        "chunk_size": chunk_size,
        "threads": torch.get_num_threads(),
        **measured,
    }


def run(
    compare_images: int = 1000,
    large_images: int = 50_000,
    captions_per_image: int = 5,
    dim: int = 256,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """Both measurements as JSON-serialisable rows."""
    return [
        compare(compare_images, captions_per_image, dim, repeats),
        large(large_images, captions_per_image, dim),
    ]


def _print(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if row["case"] == "compare":
            print(
                f"{row['images']:>7} x {row['captions']:>7} d={row['dim']}: "
                f"fast {row['fast_s']:.4f} s (its two GEMMs alone {row['two_gemms_s']:.4f} s)"
                f" | per-query loop {row['loop_s']:.3f} s | "
                f"speed-up {row['speedup']:.1f}x | max recall diff "
                f"{row['max_recall_diff']:.2g} | mR {row['mr']:.2f}"
            )
        else:
            print(
                f"{row['images']:>7} x {row['captions']:>7} d={row['dim']}: "
                f"fast {row['seconds']:.1f} s ({row['cpu_seconds']:.0f} CPU s) | "
                f"peak RSS {row['peak_rss_mib']:.0f} MiB "
                f"(before the call {row['rss_before_mib']:.0f} MiB) | chunk "
                f"{row['chunk_size']} | {row['threads']} threads | mR {row['mr']:.2f}"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--large-images", type=int, default=50_000)
    args = parser.parse_args(argv)
    if args.worker:
        _large_worker(*args.worker)
        return 0
    _print(run(large_images=args.large_images))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
