"""The table of trials: plain functions over per-trial histories (callable without Ray)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from msa_model.constants import score_key

__all__ = ["TrialRecord", "trials_table", "history_table", "best_row", "read_table"]


@dataclass
class TrialRecord:
    """What one trial left: its searched params, status, error and per-epoch reports."""

    trial_id: str
    params: dict[str, Any]
    status: str  # TERMINATED (ran to the end), STOPPED (by the scheduler) or ERROR
    error: str | None = None
    history: pd.DataFrame = field(default_factory=pd.DataFrame)


def history_table(records: list[TrialRecord]) -> pd.DataFrame:
    """All trials' per-epoch reports in one long table with a ``trial_id`` column."""
    frames = [r.history.assign(trial_id=r.trial_id) for r in records if not r.history.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["trial_id"])


def trials_table(
    records: list[TrialRecord], metric: str, mode: str, epochs: int | None = None
) -> pd.DataFrame:
    """One row per trial: params, best and last metrics, best epoch, status, epochs, time.

    Columns: ``trial_id``, ``status``, ``param.<key>``..., ``params`` (JSON),
    ``best_<metric>``, ``best_epoch``, ``best_checkpoint``, ``last.<metric>``..., ``epochs``,
    ``train_s`` (inside the epochs), ``time_s`` (trial wall time), ``collapsed`` (the loop's
    collapse verdict in any epoch, :mod:`msa_model.collapse`), ``error``. Sorted best
    first (errored trials last).
    """
    rows = []
    for rec in records:
        row: dict[str, Any] = {"trial_id": rec.trial_id, "status": rec.status}
        row.update({f"param.{k}": v for k, v in rec.params.items()})
        row["params"] = json.dumps(rec.params, sort_keys=True)
        hist = rec.history
        if not hist.empty and metric in hist:
            valid = hist[hist[metric].notna()]
            best = valid.loc[valid[metric].map(lambda v: score_key(v, mode)).idxmax()]
            row[f"best_{metric}"] = float(best[metric])
            row["best_epoch"] = int(best["epoch"])
            row["best_checkpoint"] = best.get("checkpoint_path")
            last = hist.iloc[-1]
            for key in hist.columns:
                if key.startswith(("val_", "train_")):
                    row[f"last.{key}"] = last[key]
        row["epochs"] = int(hist["epoch"].max()) if "epoch" in hist else 0
        row["train_s"] = float(hist["epoch_time_s"].sum()) if "epoch_time_s" in hist else 0.0
        row["time_s"] = (
            float(hist["time_total_s"].max()) if "time_total_s" in hist else row["train_s"]
        )
        row["collapsed"] = bool("collapsed" in hist and (hist["collapsed"].fillna(0) > 0).any())
        if rec.status != "ERROR" and epochs is not None and row["epochs"] < epochs:
            row["status"] = "STOPPED"
        row["error"] = rec.error
        rows.append(row)
    table = pd.DataFrame(rows)
    key = f"best_{metric}"
    if key in table:
        # ties in trial id order: the table (and the best trial) the same however Tune lists them
        table = table.sort_values(
            [key, "trial_id"], ascending=[mode == "min", True], na_position="last", kind="stable"
        )
    return table.reset_index(drop=True)


def best_row(table: pd.DataFrame, metric: str) -> pd.Series:
    """The best trial of a sorted :func:`trials_table`; ValueError when no trial reported."""
    key = f"best_{metric}"
    if key not in table or table[key].notna().sum() == 0:
        raise ValueError(f"no trial reported {metric}; see the error column of trials.csv")
    return table[table[key].notna()].iloc[0]


def read_table(path: str | Path) -> pd.DataFrame:
    """Read ``trials.csv`` or ``history.csv`` keeping trial ids as text.

    Tune's ids are hex strings, and pandas would read one like ``1234e567`` as a float.

    Raises:
        ResultsFolderError: An empty or unparsable file.
    """
    from workflows.errors import ResultsFolderError

    try:
        table = pd.read_csv(path, dtype={"trial_id": str})
    except (ValueError, UnicodeDecodeError) as exc:  # EmptyDataError and ParserError among them
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ResultsFolderError(f"{path}: not a table msa wrote ({reason})") from None
    return table
