"""The benchmark runner: ``python -m benchmarks [--quick] [--only NAME ...] [--out DIR]``.

Every benchmark measures a fast path against a baseline in the same run (other processes may
share the CPUs, so only ratios are comparable between runs) and returns its raw rows plus
:class:`Check` lines. The runner prints the checks as one table and writes everything, with a
description of the machine, to ``<out>/<timestamp>.json`` and ``<out>/latest.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["Check", "BENCHMARKS", "machine_info", "format_table", "run_benchmarks", "main"]

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Check:
    """One line of the table: a measured figure, its baseline, their ratio and the target.

    ``target`` reads ``">= 20"`` or ``"<= 0.15"`` and applies to ``ratio`` when there is one,
    else to ``value``; ``met`` is derived from it.
    """

    bench: str
    case: str
    value: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None

    def __post_init__(self) -> None:
        if self.target is not None and self.met is None:
            op, bound = self.target.split()
            measured = self.ratio if self.ratio is not None else self.value
            self.met = measured >= float(bound) if op == ">=" else measured <= float(bound)


def _mscmat(quick: bool) -> dict[str, Any]:
    from benchmarks import bench_mscmat

    if quick:
        rows = bench_mscmat.run((4,), length=8, dim=32, heads=2, scales=2, repeats=1)
    else:
        rows = bench_mscmat.run((16, 32, 64), repeats=3)
    checks = []
    for r in rows:
        case = f"B={r['batch']} L={r['length']} d={r['dim']} fwd+bwd"
        speed_target = ">= 20" if r["batch"] == 32 and not quick else None
        checks.append(
            Check(
                "mscmat",
                f"{case} time",
                r["fast_s"],
                "s",
                r["reference_s"],
                r["speedup"],
                speed_target,
            )
        )
        fast_mem = max(r["fast_peak_rss_growth_mib"], 1.0)  # RSS granularity: avoid 0
        checks.append(
            Check(
                "mscmat",
                f"{case} peak RSS growth",
                r["fast_peak_rss_growth_mib"],
                "MiB",
                r["reference_peak_rss_growth_mib"],
                r["reference_peak_rss_growth_mib"] / fast_mem,
                None if quick else ">= 1",
            )
        )
    return {"rows": rows, "checks": checks}


def _metrics(quick: bool) -> dict[str, Any]:
    from benchmarks import bench_metrics

    if quick:
        rows = bench_metrics.run(compare_images=100, large_images=200, dim=32, repeats=1)
    else:
        rows = bench_metrics.run(compare_images=1000, large_images=50_000, repeats=3)
    compare, large = rows
    checks = [
        Check(
            "metrics",
            f"{compare['images']} x {compare['captions']} time",
            compare["fast_s"],
            "s",
            compare["loop_s"],
            compare["speedup"],
            None if quick else ">= 50",
        ),
        Check(
            "metrics",
            f"{large['images']} x {large['captions']} fast path time",
            large["seconds"],
            "s",
        ),
        Check(
            "metrics",
            f"{large['images']} x {large['captions']} peak RSS",
            large["peak_rss_mib"],
            "MiB",
            target="<= 4096",
        ),
    ]
    return {"rows": rows, "checks": checks}


def _train_step(quick: bool) -> dict[str, Any]:
    from benchmarks import bench_train_step

    return bench_train_step.run(quick=quick)


def _overhead(quick: bool) -> dict[str, Any]:
    from benchmarks import bench_overhead

    return bench_overhead.run(quick=quick)


def _final(quick: bool) -> dict[str, Any]:
    from benchmarks import bench_final

    return bench_final.run(quick=quick)


BENCHMARKS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "mscmat": _mscmat,
    "metrics": _metrics,
    "train_step": _train_step,
    "overhead": _overhead,
    "final": _final,
}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """CPU model, cores, memory, load and the versions that matter (Ray is not imported)."""
    import torch

    mem_kib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    commit = (
        subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        or None
    )
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(mem_kib / 2**20, 1) if mem_kib else None,
        "loadavg_start": os.getloadavg(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda": torch.cuda.is_available(),
        "ray": _version("ray"),
        "timm": _version("timm"),
        "transformers": _version("transformers"),
        "git_commit": commit,
    }


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "%":
        return f"{100 * value:.1f}%"
    return f"{value:.4g}{' ' + unit if unit else ''}"


def format_table(checks: list[Check]) -> str:
    """The checks as an aligned text table (``met``: yes / NO / blank when no target)."""
    header = ["benchmark", "case", "fast / measured", "baseline", "ratio", "target", "met"]
    rows = [header]
    for c in checks:
        pct = c.unit == "%"
        target = c.target
        if target and pct and c.ratio is None:
            op, bound = target.split()
            target = f"{op} {100 * float(bound):g}%"
        rows.append(
            [
                c.bench,
                c.case,
                _fmt(c.value, c.unit),
                _fmt(c.baseline, c.unit),
                "-" if c.ratio is None else f"{c.ratio:.3g}x",
                target or "",
                "" if c.met is None else ("yes" if c.met else "NO"),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        " | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def run_benchmarks(names: list[str], quick: bool) -> dict[str, Any]:
    """Run ``names`` in order; a benchmark that raises is recorded with its error."""
    report: dict[str, Any] = {"quick": quick, "machine": machine_info(), "benchmarks": {}}
    for name in names:
        print(f"[bench] {name} ...", flush=True)
        began = time.perf_counter()
        entry: dict[str, Any] = {"loadavg_start": os.getloadavg()}
        try:
            entry.update(BENCHMARKS[name](quick))
        except Exception as exc:  # keep the other benchmarks' results
            traceback.print_exc()
            entry.update(rows=[], checks=[], error=f"{type(exc).__name__}: {exc}")
        entry["seconds"] = time.perf_counter() - began
        entry["loadavg_end"] = os.getloadavg()
        entry["checks"] = [asdict(c) for c in entry["checks"]]
        report["benchmarks"][name] = entry
        print(f"[bench] {name} done in {entry['seconds']:.0f} s", flush=True)
    report["machine"]["loadavg_end"] = os.getloadavg()
    return report


def _parse_only(values: list[str] | None) -> list[str]:
    if not values:
        return list(BENCHMARKS)
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks, print the table, write the JSON; returns 1 if one raised."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds; no targets)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only these (repeat or comma-separate): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("results/bench"),
        help="folder of the JSON reports (default: results/bench)",
    )
    args = parser.parse_args(argv)
    names = _parse_only(args.only)
    started = datetime.now()
    report = run_benchmarks(names, args.quick)
    report["started"] = started.isoformat(timespec="seconds")
    report["seconds"] = (datetime.now() - started).total_seconds()
    checks = [Check(**c) for entry in report["benchmarks"].values() for c in entry["checks"]]
    print()
    print(format_table(checks))
    for name, entry in report["benchmarks"].items():
        if "error" in entry:
            print(f"[bench] {name} FAILED: {entry['error']}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, default=str)
    path = args.out / f"{started:%Y%m%d-%H%M%S}.json"
    path.write_text(text)
    (args.out / "latest.json").write_text(text)
    print(f"\n[bench] {len(names)} benchmark(s) in {report['seconds']:.0f} s; wrote {path}")
    return 1 if any("error" in e for e in report["benchmarks"].values()) else 0
