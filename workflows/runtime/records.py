"""A finished search's trials as :class:`TrialRecord` objects: params, status, error, history."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import ray.train
from ray import tune

from msa_model.checkpoint import read_checkpoint_meta
from workflows.results.trials import TrialRecord

__all__ = ["collect_records", "error_summary", "unfinished_trials"]


def error_summary(error: BaseException) -> str:
    """The root cause of a trial's error in one line (Ray wraps it in several layers)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    causes = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception)\b.*:", ln)]
    text = causes[-1] if causes else (lines[-1] if lines else type(error).__name__)
    return re.sub(r"\x1b\[[0-9;]*m", "", text)[:500]


def _with_missing_epochs(history: pd.DataFrame) -> pd.DataFrame:
    """Add the epochs Tune's history of a trial lacks, from its checkpoints' own record.

    Every checkpoint's meta carries the run's whole history up to its epoch. Tune's history
    misses the epochs reported before the trial was restored, and a report whose process died
    before the driver took it; the latest checkpoint still on disk fills them in (read only
    when epochs are missing).
    """
    if history.empty or "checkpoint_path" not in history or "epoch" not in history:
        return history
    if set(range(1, int(history["epoch"].max()) + 1)) <= set(history["epoch"]):
        return history
    recorded = pd.DataFrame()
    for path in reversed(history["checkpoint_path"].dropna().tolist()):
        try:
            with ray.train.Checkpoint(path).as_directory() as local:
                recorded = pd.DataFrame(read_checkpoint_meta(local).get("history", []))
            break
        except FileNotFoundError:  # deleted: not among the best kept
            continue
    if recorded.empty:
        return history
    missing = recorded[~recorded["epoch"].isin(history["epoch"])]
    merged = pd.concat([history, missing], ignore_index=True)
    return merged.sort_values("epoch", kind="stable").reset_index(drop=True)


def collect_records(results: tune.ResultGrid) -> list[TrialRecord]:
    """TrialRecords from a ResultGrid (params as dotted keys, per-epoch histories)."""
    records = []
    for result in results:
        history = result.metrics_dataframe
        if history is None:
            history = pd.DataFrame()
        history = history[[c for c in history.columns if not c.startswith("config/")]]
        history = _with_missing_epochs(history)
        error = result.error
        records.append(
            TrialRecord(
                trial_id=(result.metrics or {}).get("trial_id") or Path(result.path).name,
                params=dict(result.config or {}),
                status="ERROR" if error else "TERMINATED",
                error=None if error is None else error_summary(error),
                history=history,
            )
        )
    return records


def unfinished_trials(results: tune.ResultGrid, expected: int) -> int:
    """How many of the ``expected`` trials neither finished nor failed (an interrupted search)."""
    return max(0, expected - results.num_terminated - results.num_errors)
