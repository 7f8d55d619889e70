"""Fault injection: Ctrl-C, SIGTERM and SIGKILL of ``msa tune`` at random points, then
``--resume``.

Each repetition runs a small search (``search_spaces/demo.yaml`` with tiny overrides: a small
synthetic dataset, few epochs and trials, one final run) as ``msa tune`` in its own process
group with its own local Ray cluster, and after a random delay sends the driver SIGINT (Ctrl-C:
it must exit 130 with "rerun with --resume", before export and the final stage), SIGTERM (as
``kill``, ``timeout`` or ``ray job stop`` send it: the same, with exit 143) or SIGKILL (the
driver and its local cluster die at once, as on a lost machine). Then ``msa tune --resume``
runs until the search and its final stage are done, and once more on the finished search.
Checked for every repetition:

* every trial that checkpointed an epoch is in ``trials.csv`` and ``history.csv`` holds its full
  history: the epochs and validation metric its own run recorded (the latest checkpoint's meta,
  written by the training loop), no more, no less;
* the final stage ran exactly once: each model's test read finished once in
  ``final/test_reads.json``, and the last ``--resume`` of the finished search changed neither it
  nor ``final/metrics.json``;
* the best trial of ``trials.csv`` is the true best of those recorded histories.

``python -m benchmarks.faults [--reps 10] [--seed 0] [--max-delay 60] [--out FILE]`` prints one
line per repetition and a summary (JSON with ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
NAME = "faults"
FAULTS = ("SIGINT", "SIGTERM", "SIGKILL")
EXIT_STATUS = {"SIGINT": 130, "SIGTERM": 143}  # with "rerun with --resume"; SIGKILL: none
TINY = [
    f"name={NAME}",
    "data.image_size=32",
    "train.epochs=6",
    "search.num_samples=4",
    "search.scheduler.grace_period=2",
    "final.top_k=1",
    "final.seeds=1",
]


def write_config(work: Path) -> Path:
    """The demo experiment with the tiny overrides, on a 200-image synthetic dataset."""
    from msa_model.config import load_yaml
    from msa_model.data import write_synthetic_dataset
    from workflows.experiment import SEARCH_SPACES, apply_overrides

    data = work / "data"
    if not (data / "dataset.json").is_file():
        write_synthetic_dataset(data, num_images=200, size=32, seed=0)
    paths = [f"data.json={data / 'dataset.json'}", f"data.images={data / 'images'}"]
    raw = apply_overrides(load_yaml(SEARCH_SPACES / "demo.yaml"), TINY + paths)
    path = work / f"{NAME}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def start(config: Path, results: Path, log: Path, *extra: str) -> subprocess.Popen:
    """``msa tune`` in its own session (process group), output to ``log``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    args = ["tune", str(config), "--results", str(results), "--num-cpus", "2", *extra]
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "workflows", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of ``proc`` (the driver, its local cluster, its trials)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run(config: Path, results: Path, log: Path, *extra: str, timeout: float = 900) -> int:
    """Run ``msa tune`` to its end; its exit status."""
    proc = start(config, results, log, *extra)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return -9
    finally:
        kill_group(proc)  # whatever its local cluster left behind


def phase(log: Path) -> str:
    """Where the driver was, from its output: start, search or final."""
    text = log.read_text(errors="replace")
    if "final stage" in text:
        return "final"
    return "search" if "epoch 1/" in text else "start"


def recorded_histories(out: Path) -> dict[str, pd.DataFrame]:
    """Each trial's history as its run recorded it: the latest checkpoint's meta."""
    histories = {}
    for record in sorted((out / "ray" / "trials").glob(f"{NAME}_*/checkpoints.json")):
        entries = json.loads(record.read_text())["checkpoints"]
        if not entries:
            continue
        latest = max(entries, key=lambda e: e["epoch"])
        meta = json.loads((record.parent / latest["name"] / "meta.json").read_text())
        histories[record.parent.name.removeprefix(f"{NAME}_")] = pd.DataFrame(meta["history"])
    return histories


def check(out: Path, metric: str = "val_mr") -> dict[str, Any]:
    """The repetition's checks (see the module docstring); problems listed under ``errors``."""
    from workflows.results.read_ledger import recorded_reads
    from workflows.results.trials import read_table

    errors = []
    table = read_table(out / "trials.csv")
    history = read_table(out / "history.csv")
    truth = recorded_histories(out)
    for trial_id, recorded in truth.items():
        rows = history[history["trial_id"] == trial_id].sort_values("epoch")
        if trial_id not in set(table["trial_id"]):
            errors.append(f"trial {trial_id} missing from trials.csv")
        elif rows["epoch"].tolist() != recorded["epoch"].tolist():
            errors.append(
                f"trial {trial_id}: epochs {rows['epoch'].tolist()} in history.csv, "
                f"{recorded['epoch'].tolist()} recorded"
            )
        elif any(abs(a - b) > 1e-6 for a, b in zip(rows[metric], recorded[metric], strict=True)):
            errors.append(f"trial {trial_id}: {metric} differs from the recorded history")
    best_truth = max(truth, key=lambda t: truth[t][metric].max())
    best = table.iloc[0]
    if abs(best[f"best_{metric}"] - truth[best_truth][metric].max()) > 1e-6:
        errors.append(f"best trial {best['trial_id']}, true best {best_truth}")
    reads = recorded_reads(out / "final")
    finished = {key: sum(1 for r in rs if r.get("finished")) for key, rs in reads.items()}
    if not finished or any(n != 1 for n in finished.values()):
        errors.append(f"finished test reads per model: {finished}")
    return {
        "trials": len(table),
        "recorded": len(truth),
        "interrupted_reads": sum(len(rs) for rs in reads.values()) - sum(finished.values()),
        "errors": errors,
    }


def repetition(config: Path, work: Path, rng: random.Random, max_delay: float) -> dict[str, Any]:
    """One search with one fault at a random point, resumed to its end and checked."""
    results = work / "results"
    out = results / NAME
    fault = rng.choice(FAULTS)
    delay = rng.uniform(2.0, max_delay)
    row: dict[str, Any] = {"fault": fault, "delay_s": round(delay, 1)}
    proc = start(config, results, work / "0.log")
    try:
        proc.wait(timeout=delay)
        row["phase"] = "finished first"
    except subprocess.TimeoutExpired:
        row["phase"] = phase(work / "0.log")
        if fault in EXIT_STATUS:
            proc.send_signal(getattr(signal, fault))  # to the driver alone
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                pass
        else:
            kill_group(proc)
    finally:
        kill_group(proc)
    row["exit"] = proc.returncode
    text = (work / "0.log").read_text(errors="replace")
    if fault in EXIT_STATUS and row["phase"] != "finished first":
        row["signal_ok"] = proc.returncode == EXIT_STATUS[fault] and "rerun with --resume" in text
        row["signal_ok"] = row["signal_ok"] and "Fatal Python error" not in text
    resumes = 0
    status = proc.returncode if row["phase"] == "finished first" else None
    while status != 0 and resumes < 3:
        resumes += 1
        started = (out / "experiment.yaml").is_file()  # else it stopped before creating out/
        status = run(config, results, work / f"{resumes}.log", *(["--resume"] if started else []))
    row["resumes"], row["final_exit"] = resumes, status
    if status != 0:
        tail = (work / f"{resumes}.log").read_text(errors="replace")[-400:]
        row["errors"] = [f"did not finish: exit {status}: {tail}"]
        return row
    row.update(check(out))
    if not row.get("signal_ok", True):
        row["errors"].append(f"{fault}: exit {row['exit']}, expected {EXIT_STATUS[fault]} + hint")
    before = _snapshot(out)
    again = run(config, results, work / "again.log", "--resume")
    changed = _changes(before, _snapshot(out))
    if again != 0 or changed:
        row["errors"].append(f"--resume of the finished search: exit {again}, changed {changed}")
    return row


def _snapshot(out: Path) -> dict[str, Any]:
    """What a resume of the finished search must leave as it is."""
    return {
        "test_reads": json.loads((out / "final" / "test_reads.json").read_text()),
        "final": json.loads((out / "final" / "metrics.json").read_text()),
        "trials.csv": _rows(out / "trials.csv"),
        "history.csv": _rows(out / "history.csv"),
    }


def _rows(path: Path) -> list[str]:
    """A table's rows as text, in a fixed order (the content, not Tune's listing order)."""
    return sorted(path.read_text().splitlines())


def _changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The snapshot entries (and final/metrics.json keys) that differ."""
    changed = [key for key in before if key != "final" and before[key] != after[key]]
    old, new = before["final"], after["final"]
    return changed + [f"final.{k}" for k in sorted({*old, *new}) if old.get(k) != new.get(k)]


def main(argv: list[str] | None = None) -> int:
    """Run the repetitions; print each and the summary; 0 when every check held."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=60.0, help="latest fault, seconds")
    parser.add_argument("--out", type=Path, help="write the rows and summary as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders")
    args = parser.parse_args(argv)
    # each driver takes SIGINT as a terminal's Ctrl-C, even when this runs as a background job
    # (started with SIGINT ignored, which exec passes on: a Ctrl-C before Tune's handler is lost)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rng = random.Random(args.seed)
    base = Path(tempfile.mkdtemp(prefix="msa-faults-"))
    config = write_config(base)
    rows = []
    began = time.perf_counter()
    for rep in range(args.reps):
        work = base / f"rep{rep}"
        work.mkdir()
        row = {"rep": rep, **repetition(config, work, rng, args.max_delay)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    ok = [r for r in rows if not r.get("errors")]
    signalled = [r for r in rows if "signal_ok" in r]
    summary = {
        "reps": len(rows),
        "all_checks_held": len(ok),
        **{fault.lower(): sum(r["fault"] == fault for r in rows) for fault in FAULTS},
        "signal_mid_run_exit_ok": f"{sum(r['signal_ok'] for r in signalled)}/{len(signalled)}",
        "phases": {p: sum(r["phase"] == p for r in rows) for p in {r["phase"] for r in rows}},
        "resumes": sum(r["resumes"] for r in rows),
        "minutes": round((time.perf_counter() - began) / 60, 1),
    }
    print(json.dumps({"summary": summary}, indent=1))
    if args.out:
        args.out.write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    if not args.keep:
        import shutil

        shutil.rmtree(base, ignore_errors=True)
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
