"""The table of trials: plain functions over per-trial histories (callable without Ray)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from msa_model.constants import score_key
from workflows.results.schema import TrialRow
from workflows.results.status import FAIL, trial_status

__all__ = ["TrialRecord", "trials_table", "trial_rows", "history_table", "read_table"]


@dataclass
class TrialRecord:
    """What one trial left: its searched params, status, error and per-epoch reports."""

    trial_id: str
    params: dict[str, Any]
    status: str  # COMPLETE or FAIL (:mod:`workflows.results.status`); PRUNED in the row
    error: str | None = None
    history: pd.DataFrame = field(default_factory=pd.DataFrame)


def history_table(records: list[TrialRecord]) -> pd.DataFrame:
    """All trials' per-epoch reports in one long table with a ``trial_id`` column."""
    frames = [r.history.assign(trial_id=r.trial_id) for r in records if not r.history.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["trial_id"])


def trial_row(rec: TrialRecord, metric: str, mode: str, epochs: int | None = None) -> TrialRow:
    """The trial's row: its best epoch by ``metric``, its last epoch's metrics, its times.

    Its status is :func:`~workflows.results.status.trial_status`: ``PRUNED`` when it did not
    fail and trained fewer than ``epochs`` epochs.
    """
    hist, best = rec.history, {}
    if not hist.empty and metric in hist:
        valid = hist[hist[metric].notna()]
        top = valid.loc[valid[metric].map(lambda v: score_key(v, mode)).idxmax()]
        last = hist.iloc[-1]
        best = {
            "best": float(top[metric]),
            "best_epoch": int(top["epoch"]),
            "best_checkpoint": top.get("checkpoint_path"),
            "last": {k: last[k] for k in hist.columns if k.startswith(("val_", "train_"))},
        }
    trained = int(hist["epoch"].max()) if "epoch" in hist else 0
    train_s = float(hist["epoch_time_s"].sum()) if "epoch_time_s" in hist else 0.0
    return TrialRow(
        trial_id=rec.trial_id,
        status=trial_status(rec.status == FAIL, trained, epochs),
        params=rec.params,
        **best,
        epochs=trained,
        train_s=train_s,
        time_s=float(hist["time_total_s"].max()) if "time_total_s" in hist else train_s,
        collapsed=bool("collapsed" in hist and (hist["collapsed"].fillna(0) > 0).any()),
        error=rec.error,
    )


def trials_table(
    records: list[TrialRecord], metric: str, mode: str, epochs: int | None = None
) -> pd.DataFrame:
    """One row per trial (:class:`~workflows.results.schema.TrialRow`'s columns), sorted best
    first (errored trials last)."""
    table = pd.DataFrame([trial_row(r, metric, mode, epochs).to_row(metric) for r in records])
    key = f"best_{metric}"
    if key in table:
        # ties in trial id order: the table (and the best trial) the same however Tune lists them
        table = table.sort_values(
            [key, "trial_id"], ascending=[mode == "min", True], na_position="last", kind="stable"
        )
    return table.reset_index(drop=True)


def trial_rows(table: pd.DataFrame, metric: str) -> list[TrialRow]:
    """The rows of a trials table (as :func:`read_table` reads it), in its order."""
    return [TrialRow.from_row(row, metric) for row in table.to_dict("records")]


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
