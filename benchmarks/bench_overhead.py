"""Tuning overhead: how much of each trial's wall time is training, and how busy the CPUs are.

A small version of the demo search (``search_spaces/demo.yaml``: its model, ASHA and Optuna, on
a small synthetic dataset with fewer epochs and trials) runs as ``msa tune --no-final`` in a
subprocess with its own local Ray cluster, twice: once with every trial training through a Ray
Train TorchTrainer (``train.trial_launcher: torch_trainer``, the baseline) and once with the
default ``auto``, where a one-worker trial trains in its own Tune process. For each run:

* per trial, from ``trials.csv``: ``train_s`` (the sum of the epochs' ``epoch_time_s``, training
  plus validation) against ``time_s`` (Tune's ``time_total_s``, from the trial's start to its
  last report); the overhead is ``1 - train_s / time_s``. ``span_s`` is the trial's wall time
  seen from outside (Tune's "started" to "completed" lines), which also counts the trial
  actor's own start-up and teardown;
* the average CPU use of the whole machine (``/proc/stat``) and of the run's own processes
  (the subprocess and all its descendants: the Ray cluster, trial actors, Train workers),
  sampled every 0.5 s, with the CPU-seconds of each kind of process (Ray process titles
  ``ray::TrainController``, ``ray::RayTrainWorker``, ...) to show where start-up goes: the
  CPU-seconds per trial of the processes Ray starts for it, minus its training, set against
  the training's own (one torch thread per worker in the demo).

Then the whole ``msa demo`` (8 trials, 8 epochs, ASHA; results in a temporary folder) is
measured the same way: the issue's targets (per-trial overhead <= 15%, CPUs >= 80% busy) apply
to it, the tiny runs show the launchers' difference where start-up matters most.

``python -m benchmarks.bench_overhead [--quick]`` prints the summary as JSON; ``--demo`` measures
only the demo.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from msa_model.data import write_synthetic_dataset
from workflows.results.trials import read_table

__all__ = ["ProcessTreeSampler", "experiment", "run_tune", "summarise", "run", "main"]

ROOT = Path(__file__).resolve().parents[1]
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
_UNKNOWN = ("IDLE", "?")  # roles a process can leave: Ray's idle workers, exiting processes
# the processes Ray starts for every trial (Tune's function actor and queue, Train's controller
# and its helper actors, the Train worker)
TRIAL_ROLES = (
    "ImplicitFunc",
    "_QueueActor",
    "TrainController",
    "PlacementGroupCleaner",
    "SynchronizationActor",
    "DatasetManager",
    "PreemptionWatcher",
    "RayTrainWorker",
)


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return None


def _role(cmdline: str, is_root: bool) -> str:
    """A short name of a process for the CPU breakdown (Ray titles its workers ``ray::X``)."""
    if is_root:
        return "msa tune (driver)"
    args = [a for a in cmdline.split("\0") if a]
    if not args:
        return "?"
    if args[0].startswith("ray::"):
        return args[0][5:].split(".")[0].split()[0]
    joined = " ".join(args)
    for key in (
        "gcs_server",
        "raylet",
        "dashboard",
        "log_monitor",
        "monitor.py",
        "runtime_env",
        "default_worker.py",
        "client.server",
    ):
        if key in joined:
            return key
    return Path(args[0]).name


class ProcessTreeSampler(threading.Thread):
    """CPU use of the machine and of a process tree, sampled every ``interval`` seconds.

    A process's CPU time counts from its start (even before it was first seen) and goes to its
    last role (a Ray worker started idle counts as the actor it became); a process that exits
    between two samples loses at most its last ``interval`` of CPU time.
    """

    def __init__(self, root: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self._stop_event = threading.Event()
        self._seen: dict[tuple[int, int], int] = {}  # (pid, start time) -> CPU ticks
        self._role: dict[tuple[int, int], str] = {}  # (pid, start time) -> its role
        self.peak_rss_gib = 0.0
        self._machine_start = self._machine()
        self._machine_end = self._machine_start
        self._began = self._ended = time.perf_counter()

    @staticmethod
    def _machine() -> tuple[int, int]:
        """(busy, total) jiffies of all CPUs."""
        first = (_read("/proc/stat") or "cpu 0 0 0 1").split("\n")[0]
        fields = [int(v) for v in first.split()[1:9]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields) - idle, sum(fields)

    def _sample(self) -> None:
        stats: dict[int, tuple[int, int, int, int]] = {}  # pid -> ppid, ticks, start, rss
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            text = _read(f"/proc/{entry.name}/stat")
            if not text:
                continue
            rest = text.rsplit(")", 1)[1].split()
            stats[int(entry.name)] = (
                int(rest[1]),
                int(rest[11]) + int(rest[12]),
                int(rest[19]),
                int(rest[21]),
            )
        children: dict[int, list[int]] = defaultdict(list)
        for pid, (ppid, *_) in stats.items():
            children[ppid].append(pid)
        tree, stack = [], [self.root]
        while stack:
            pid = stack.pop()
            if pid in stats:
                tree.append(pid)
                stack.extend(children[pid])
        rss = 0
        for pid in tree:
            _, ticks, start, pages = stats[pid]
            rss += pages
            key = (pid, start)
            if ticks != self._seen.get(key) or self._role.get(key, "IDLE") in _UNKNOWN:
                role = _role(_read(f"/proc/{pid}/cmdline") or "", pid == self.root)
                # a Ray worker keeps its last actor; an exiting process has no command line
                if role not in _UNKNOWN or key not in self._role:
                    self._role[key] = role
            self._seen[key] = ticks
        self.peak_rss_gib = max(self.peak_rss_gib, rss * PAGE / 2**30)
        self._machine_end, self._ended = self._machine(), time.perf_counter()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self._sample()
            self._stop_event.wait(self.interval)

    def stop(self) -> None:
        """Take a last sample and stop."""
        self._stop_event.set()
        self.join()
        self._sample()

    def tree(self) -> list[int]:
        """Pids of the tree's processes alive at the last sample."""
        return [pid for pid, _ in self._seen]

    def summary(self) -> dict[str, Any]:
        """Average busy share of all cores: machine-wide and the tree's own."""
        cores = os.cpu_count() or 1
        wall = max(self._ended - self._began, 1e-9)
        busy = self._machine_end[0] - self._machine_start[0]
        total = max(self._machine_end[1] - self._machine_start[1], 1)
        cpu: dict[str, float] = defaultdict(float)
        count: dict[str, int] = defaultdict(int)
        for key, ticks in self._seen.items():
            cpu[self._role[key]] += ticks / TICKS
            count[self._role[key]] += 1
        tree_cpu = sum(cpu.values())
        return {
            "cpu_busy_machine": busy / total,
            "cpu_busy_tune": tree_cpu / (wall * cores),
            "tune_cpu_s": tree_cpu,
            "cpu_s_by_role": {k: round(cpu[k], 2) for k in sorted(cpu, key=cpu.__getitem__)[::-1]},
            "processes_by_role": dict(count),
            "processes": len(self._seen),
            "peak_rss_gib": self.peak_rss_gib,
        }


def experiment(
    data_dir: Path, name: str, epochs: int, samples: int, images: int, image_size: int
) -> dict[str, Any]:
    """The demo experiment shrunk: a synthetic dataset at ``data_dir``, fewer epochs/trials."""
    exp = yaml.safe_load((ROOT / "search_spaces" / "demo.yaml").read_text())
    json_path = write_synthetic_dataset(data_dir, images, image_size)
    exp["name"] = name
    exp["data"].update(json=str(json_path), images=str(data_dir / "images"), image_size=image_size)
    exp["train"]["epochs"] = epochs
    exp["search"]["num_samples"] = samples
    exp["search"]["scheduler"]["grace_period"] = 1
    exp["final"]["enabled"] = False
    return exp


def _kill_tree(proc: subprocess.Popen, pids: list[int]) -> None:
    """SIGTERM the subprocess's group, then SIGKILL whatever of its tree is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_tune(
    config: Path, results: Path, env: dict[str, str], num_cpus: int, timeout: float
) -> dict[str, Any]:
    """Run ``msa tune`` once in a subprocess; its timestamped output, exit status and CPU use."""
    args = ["tune", str(config), "--no-final", "--num-cpus", str(num_cpus)]
    return run_msa([*args, "--results", str(results)], env, timeout)


def run_msa(args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run ``msa ARGS`` in a subprocess; its timestamped output, exit status and CPU use."""
    cmd = [sys.executable, "-u", "-m", "workflows", *args]
    full_env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    full_env.update({"RAY_DEDUP_LOGS": "0", "TOKENIZERS_PARALLELISM": "false", **env})
    began = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    sampler = ProcessTreeSampler(proc.pid)
    sampler.start()
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.perf_counter() - began, line.rstrip()))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        returncode = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc, sampler.tree())
        returncode = None
    wall = time.perf_counter() - began
    sampler.stop()
    reader.join(5)
    return {"wall_s": wall, "returncode": returncode, "lines": lines, **sampler.summary()}


def _first(lines: list[tuple[float, str]], pattern: str) -> float | None:
    return next((t for t, line in lines if re.search(pattern, line)), None)


def summarise(trials: pd.DataFrame, lines: list[tuple[float, str]]) -> list[dict[str, Any]]:
    """Per-trial ``train_s``, ``time_s``, outside ``span_s`` and the overhead shares."""
    started: dict[str, float] = {}
    ended: dict[str, float] = {}
    for t, line in lines:
        if m := re.search(r"Trial (\S+) started with configuration", line):
            started.setdefault(m.group(1), t)
        elif m := re.search(r"Trial (\S+) (completed|errored) after", line):
            ended[m.group(1)] = t
    rows = []
    for rec in trials.to_dict("records"):
        tid = str(rec["trial_id"])
        name = next((n for n in started if n.endswith(tid)), None)
        span = ended[name] - started[name] if name in ended else None
        train, total = float(rec["train_s"]), float(rec["time_s"])
        rows.append(
            {
                "trial_id": tid,
                "status": rec["status"],
                "epochs": int(rec["epochs"]),
                "train_s": train,
                "time_s": total,
                "span_s": span,
                "overhead": 1 - train / total if total > 0 else None,
                "span_overhead": 1 - train / span if span else None,
            }
        )
    return rows


def _one(
    exp: dict[str, Any], work: Path, launcher: str, num_cpus: int, timeout: float
) -> dict[str, Any]:
    exp = {**exp, "train": {**exp["train"], "trial_launcher": launcher}}
    config = work / f"{launcher}.yaml"
    config.write_text(yaml.safe_dump(exp, sort_keys=False))
    results = work / f"results_{launcher}"
    out = run_tune(config, results, {}, num_cpus, timeout)
    lines = out.pop("lines")
    csv = results / exp["name"] / "trials.csv"
    trials = summarise(read_table(csv), lines) if csv.is_file() else []
    overheads = [t["overhead"] for t in trials if t["overhead"] is not None]
    spans = [t["span_overhead"] for t in trials if t["span_overhead"] is not None]
    ray_up = _first(lines, r"Ray dashboard:|Started a local Ray instance")
    trial_cpu = sum(out["cpu_s_by_role"].get(role, 0.0) for role in TRIAL_ROLES)
    train_cpu = sum(t["train_s"] for t in trials)  # one torch thread per worker (demo config)
    tune_done = _first(lines, r"\[msa\] \d+ trials")
    row = {
        "setting": launcher,
        **out,
        "trials": trials,
        "overhead_mean": statistics.fmean(overheads) if overheads else None,
        "overhead_max": max(overheads) if overheads else None,
        "span_overhead_mean": statistics.fmean(spans) if spans else None,
        "trial_time_s_mean": statistics.fmean(t["time_s"] for t in trials) if trials else None,
        "trial_train_s_mean": statistics.fmean(t["train_s"] for t in trials) if trials else None,
        "startup_s_mean": statistics.fmean(t["time_s"] - t["train_s"] for t in trials)
        if trials
        else None,
        "trial_cpu_s_mean": trial_cpu / len(trials) if trials else None,
        "trial_cpu_s_outside_training_mean": (trial_cpu - train_cpu) / len(trials)
        if trials
        else None,
        "ray_start_s": ray_up,
        "first_trial_s": _first(lines, r"Trial \S+ started"),
        "tune_done_s": tune_done,
        "teardown_s": out["wall_s"] - tune_done if tune_done is not None else None,
    }
    if out["returncode"] != 0 or not trials:
        row["log_tail"] = [line for _, line in lines[-40:]]
    return row


def run(quick: bool = False, num_cpus: int | None = None, timeout: float = 300) -> dict[str, Any]:
    """Rows and checks: tiny trials under both launchers, then the whole demo (the targets).

    ``quick``: one tiny trial with the default launcher, no demo.
    """
    from benchmarks.runner import Check

    num_cpus = num_cpus or os.cpu_count() or 1
    if quick:
        sizes = {"epochs": 1, "samples": 1, "images": 60, "image_size": 32}
        settings = ["auto"]
    else:
        sizes = {"epochs": 3, "samples": 2, "images": 300, "image_size": 64}
        settings = ["torch_trainer", "auto"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        exp = experiment(work / "data", "overhead", **sizes)
        rows = [_one(exp, work, launcher, num_cpus, timeout) for launcher in settings]
    checks = []
    for r in rows:
        if r["overhead_mean"] is None:
            raise RuntimeError(
                f"{r['setting']}: no trial finished (exit {r['returncode']}); "
                + " / ".join(r.get("log_tail", [])[-5:])
            )
        checks.append(
            Check(
                "overhead",
                f"tiny trials, {r['setting']}: overhead, mean of {len(r['trials'])} "
                f"(max {100 * r['overhead_max']:.0f}%)",
                r["overhead_mean"],
                "%",
            )
        )
    now = rows[-1]
    if len(rows) == 2:
        before = rows[0]
        for case, key in (("trial time_s mean", "trial_time_s_mean"), ("run wall", "wall_s")):
            checks.append(
                Check(
                    "overhead",
                    f"tiny trials: {case}, in the trial vs TorchTrainer",
                    now[key],
                    "s",
                    before[key],
                    before[key] / now[key],
                )
            )
    checks.append(
        Check(
            "overhead",
            f"tiny trials, {now['setting']}: start-up per trial (time_s - train_s)",
            now["startup_s_mean"],
            "s",
        )
    )
    checks.append(
        Check(
            "overhead",
            f"tiny trials, {now['setting']}: CPU-s per trial outside training vs training",
            now["trial_cpu_s_outside_training_mean"],
            "s",
            now["trial_train_s_mean"],
            now["trial_cpu_s_outside_training_mean"] / now["trial_train_s_mean"],
        )
    )
    result: dict[str, Any] = {"rows": rows, "num_cpus": num_cpus, "sizes": sizes}
    if not quick:
        whole = demo()
        result["demo"] = whole
        n = len(whole["trials"])
        checks += [
            Check(
                "overhead",
                f"msa demo: trial overhead, mean of {n} (max {100 * whole['overhead_max']:.0f}%)",
                whole["overhead_mean"],
                "%",
                target="<= 0.15",
            ),
            Check(
                "overhead", "msa demo: overhead, all trials pooled", whole["overhead_pooled"], "%"
            ),
            Check(
                "overhead",
                "msa demo: CPU busy, whole machine",
                whole["cpu_busy_machine"],
                "%",
                target=">= 0.8",
            ),
            Check(
                "overhead",
                "msa demo: CPU busy, its own processes",
                whole["cpu_busy_tune"],
                "%",
                target=">= 0.8",
            ),
            Check("overhead", "msa demo: wall time", whole["wall_s"], "s"),
        ]
    result["checks"] = checks
    return result


def demo(timeout: float = 900) -> dict[str, Any]:
    """The whole ``msa demo`` (results in a temporary folder): per-trial overhead and CPU use."""
    with tempfile.TemporaryDirectory() as tmp:
        out = run_msa(["demo", "--results", tmp], {}, timeout)
        lines = out.pop("lines")
        csv = Path(tmp) / "demo" / "trials.csv"
        trials = summarise(read_table(csv), lines) if csv.is_file() else []
    if out["returncode"] != 0 or not trials:
        raise RuntimeError(f"msa demo failed: {' / '.join(line for _, line in lines[-5:])}")
    train = sum(t["train_s"] for t in trials)
    return {
        **out,
        "trials": trials,
        "overhead_mean": statistics.fmean(t["overhead"] for t in trials),
        "overhead_max": max(t["overhead"] for t in trials),
        "overhead_pooled": 1 - train / sum(t["time_s"] for t in trials),
        "span_overhead_pooled": 1 - train / sum(t["span_s"] or t["time_s"] for t in trials),
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints the rows as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--num-cpus", type=int)
    parser.add_argument("--demo", action="store_true", help="measure the whole `msa demo` instead")
    args = parser.parse_args(argv)
    if args.demo:
        print(json.dumps(demo(), indent=2))
        return 0
    result = run(args.quick, args.num_cpus)
    print(json.dumps(result["rows"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
