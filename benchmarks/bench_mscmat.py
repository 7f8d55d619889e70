"""Benchmark of MSCMAT: the batched fast path vs the pair-by-pair reference.

Each (method, batch size) case runs in a fresh subprocess so that its memory figure is clean:
the process builds the module and the inputs, reads its peak resident set size (``ru_maxrss``),
runs forward + backward (a warm-up, then ``repeats`` timed runs; the reference, being slow,
gets no warm-up and ``reference_repeats`` runs), and reads ``ru_maxrss`` again. The reported
memory is the growth of the peak RSS over the set-up: what forward + backward needed on top of
the parameters and inputs (activations kept for backward, temporaries, gradients). Times are
the best of the timed runs (other processes share the CPU).

``python -m benchmarks.bench_mscmat`` prints a table; :func:`run` returns the rows.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from typing import Any

import torch

from msa_model.mscmat import MSCMAT, mscmat_reference

__all__ = ["run"]


def _worker(
    method: str,
    batch: int,
    length: int,
    dim: int,
    heads: int,
    scales: int,
    repeats: int,
    warmup: int,
) -> dict[str, Any]:
    torch.manual_seed(0)
    module = MSCMAT(dim, scales, heads).train()
    image = torch.randn(scales, batch, dim, requires_grad=True)
    tokens = torch.randn(batch, length, dim, requires_grad=True)
    glob = torch.randn(batch, dim, requires_grad=True)
    lengths = torch.randint(length // 3, length + 1, (batch,))
    mask = torch.arange(length)[None] < lengths[:, None]
    forward = module if method == "fast" else (lambda *a: mscmat_reference(module, *a))
    setup_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, cpu_times = [], []
    for step in range(warmup + repeats):
        module.zero_grad(set_to_none=True)
        start, cpu_start = time.perf_counter(), time.process_time()
        forward(image, tokens, glob, mask).sum().backward()
        if step >= warmup:
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {
        "time_s": min(times),
        "times_s": times,
        "cpu_s": min(cpu_times),
        "peak_rss_growth_mib": (peak_kib - setup_kib) / 1024,
        "setup_rss_mib": setup_kib / 1024,
    }


def _case(method: str, *numbers: int) -> dict[str, Any]:
    """One case in a fresh process; ``numbers`` are :func:`_worker`'s, from ``batch`` on."""
    cmd = [sys.executable, "-m", "benchmarks.bench_mscmat", "--worker", method]
    out = subprocess.run([*cmd, *map(str, numbers)], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(
    batch_sizes: tuple[int, ...] = (16, 32, 64),
    length: int = 30,
    dim: int = 768,
    heads: int = 12,
    scales: int = 4,
    repeats: int = 5,
    reference_repeats: int = 1,
) -> list[dict[str, Any]]:
    """Time forward + backward of both paths at each batch size (B images x B captions).

    Returns:
        One JSON-serialisable row per batch size with both times, the speed ratio and the
        peak-RSS growth of each path.
    """
    rows = []
    for batch in batch_sizes:
        shape = (batch, length, dim, heads, scales)
        fast = _case("fast", *shape, repeats, 1)
        ref = _case("reference", *shape, reference_repeats, 0)
        rows.append(
            {
                "batch": batch,
                "length": length,
                "dim": dim,
                "heads": heads,
                "scales": scales,
                "threads": torch.get_num_threads(),
                "fast_s": fast["time_s"],
                "reference_s": ref["time_s"],
                "speedup": ref["time_s"] / fast["time_s"],
                "fast_cpu_s": fast["cpu_s"],
                "reference_cpu_s": ref["cpu_s"],
                "fast_peak_rss_growth_mib": fast["peak_rss_growth_mib"],
                "reference_peak_rss_growth_mib": ref["peak_rss_growth_mib"],
            }
        )
    return rows


def _print(rows: list[dict[str, Any]]) -> None:
    print(
        f"MSCMAT forward+backward, L={rows[0]['length']} d={rows[0]['dim']} "
        f"heads={rows[0]['heads']} S={rows[0]['scales']}, {rows[0]['threads']} CPU threads; "
        "wall / process CPU seconds, best run"
    )
    print(
        f"{'B':>4} | {'fast s (cpu)':>14} | {'reference s (cpu)':>18} | {'speed-up (cpu)':>15} | "
        f"{'fast +RSS MiB':>13} | {'ref +RSS MiB':>12}"
    )
    for r in rows:
        cpu_ratio = r["reference_cpu_s"] / r["fast_cpu_s"]
        print(
            f"{r['batch']:>4} | {r['fast_s']:>6.3f} ({r['fast_cpu_s']:>5.2f}) | "
            f"{r['reference_s']:>8.2f} ({r['reference_cpu_s']:>6.2f}) | "
            f"{r['speedup']:>5.1f}x ({cpu_ratio:>5.1f}x) | "
            f"{r['fast_peak_rss_growth_mib']:>13.0f} | "
            f"{r['reference_peak_rss_growth_mib']:>12.0f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=8, help=argparse.SUPPRESS)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    args = parser.parse_args(argv)
    if args.worker:
        method, *numbers = args.worker
        print(json.dumps(_worker(method, *(int(v) for v in numbers))))
        return 0
    _print(run(tuple(args.batch_sizes)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
