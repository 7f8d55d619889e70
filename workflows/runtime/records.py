"""A finished search's trials as :class:`TrialRecord` objects: params, status, error, history."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pyarrow.fs
import ray.train
from ray import tune
from ray.tune import ExperimentAnalysis

from msa_model.checkpoint import read_checkpoint_meta
from workflows.results.status import COMPLETE, FAIL
from workflows.results.trials import TrialRecord
from workflows.runtime.checkpoints import RECORD
from workflows.runtime.trainable import trial_run_name

__all__ = ["checkpoint_history", "collect_records", "error_summary", "unfinished_trials"]


def error_summary(error: BaseException) -> str:
    """The root cause of a trial's error in one line (Ray wraps it in several layers)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    causes = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception)\b.*:", ln)]
    text = causes[-1] if causes else (lines[-1] if lines else type(error).__name__)
    return re.sub(r"\x1b\[[0-9;]*m", "", text)[:500]


def _run_record(run_dir: str) -> pd.DataFrame:
    """A run's own history: its latest recorded checkpoint's, with the kept checkpoints' paths.

    Empty when the run keeps no :class:`~workflows.runtime.checkpoints.RunCheckpoints` record
    (a TorchTrainer run, or a trial that never saved one).
    """
    fs, root = pyarrow.fs.FileSystem.from_uri(run_dir.rstrip("/"))
    try:
        with fs.open_input_stream(f"{root}/{RECORD}") as f:
            entries = json.loads(f.read().decode())["checkpoints"]
    except FileNotFoundError:
        return pd.DataFrame()
    if not entries:
        return pd.DataFrame()
    latest = max(entries, key=lambda e: e["epoch"])
    history = pd.DataFrame(checkpoint_history(f"{run_dir.rstrip('/')}/{latest['name']}"))
    if history.empty or "epoch" not in history:
        return pd.DataFrame()
    kept = {int(e["epoch"]): f"{run_dir.rstrip('/')}/{e['name']}" for e in entries}
    return history.assign(checkpoint_path=history["epoch"].map(kept))


def checkpoint_history(path: str) -> list[dict]:
    """The history in a checkpoint's meta; empty when the checkpoint is gone."""
    try:
        with ray.train.Checkpoint(path).as_directory() as local:
            return read_checkpoint_meta(local).get("history", [])
    except FileNotFoundError:  # deleted: not among the best kept
        return []


def _with_missing_epochs(history: pd.DataFrame, run_dir: str | None = None) -> pd.DataFrame:
    """Add the epochs Tune's history of a trial lacks, from its checkpoints' own record.

    Every checkpoint's meta carries the run's whole history up to its epoch. Tune's history
    misses the epochs reported before the trial was restored (Tune restarts a trial that gave
    it no checkpoint with an empty result file), and a report whose process died before the
    driver took it. The run's own record in ``run_dir`` (read only when epochs may be missing)
    fills them in, with the paths of the checkpoints still kept; without one, the latest
    checkpoint named in Tune's history does.
    """
    if "epoch" in history and not history.empty:
        epochs = set(history["epoch"])
        if run_dir is None and set(range(1, int(history["epoch"].max()) + 1)) <= epochs:
            return history
    recorded = _run_record(run_dir) if run_dir is not None else pd.DataFrame()
    if recorded.empty and "checkpoint_path" in history:
        for path in reversed(history["checkpoint_path"].dropna().tolist()):
            recorded = pd.DataFrame(checkpoint_history(path))
            if not recorded.empty:
                break
    if recorded.empty or "epoch" not in recorded:
        return history
    if history.empty or "epoch" not in history:
        return recorded.reset_index(drop=True)
    missing = recorded[~recorded["epoch"].isin(history["epoch"])]
    if missing.empty:
        return history
    merged = pd.concat([history, missing], ignore_index=True)
    return merged.sort_values("epoch", kind="stable").reset_index(drop=True)


def collect_records(
    results: tune.ResultGrid, runs_dir: str | None = None, name: str = ""
) -> list[TrialRecord]:
    """TrialRecords from a ResultGrid (params as dotted keys, per-epoch histories).

    ``runs_dir`` is where the trials' runs keep their checkpoints (``<runs_dir>/<name>_<trial
    id>``); their own records complete what Tune's history lacks.
    """
    records = []
    for result in results:
        history = result.metrics_dataframe
        if history is None:
            history = pd.DataFrame()
        history = history[[c for c in history.columns if not c.startswith("config/")]]
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name.removeprefix(
            f"{name}_"
        )
        run_dir = None if runs_dir is None else f"{runs_dir}/{trial_run_name(name, trial_id)}"
        history = _with_missing_epochs(history, run_dir)
        error = result.error
        records.append(
            TrialRecord(
                trial_id=trial_id,
                params=dict(result.config or {}),
                status=FAIL if error else COMPLETE,
                error=None if error is None else error_summary(error),
                history=history,
            )
        )
    return records


def unfinished_trials(results: tune.ResultGrid, expected: int | None) -> int:
    """How many of the ``expected`` trials neither finished nor failed (an interrupted search).

    Read from the state Tune saved, which ``--resume`` restores: after Ctrl-C Tune saves the
    running trials as such, then stops them, and the ResultGrid calls them TERMINATED.
    ``expected`` None: the trials Tune saved.
    """
    saved = ExperimentAnalysis(results.experiment_path, storage_filesystem=results.filesystem)
    done = sum(t.status in ("TERMINATED", "ERROR") for t in saved.trials)
    return max(0, (len(saved.trials) if expected is None else expected) - done)
