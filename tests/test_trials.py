"""The trials table, built from per-trial histories without Ray, and read back from CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from workflows.results.schema import TrialRow
from workflows.results.trials import TrialRecord, read_table, trial_rows, trials_table


def _history(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "epoch": range(1, len(values) + 1),
            "val_mr": values,
            "epoch_time_s": [2.0] * len(values),
            "time_total_s": [5.0 * (i + 1) for i in range(len(values))],
            "checkpoint_path": [f"/ckpt/{i}" for i in range(len(values))],
        }
    )


def test_table_rows_status_best_and_times(tmp_path: Path) -> None:
    records = [
        TrialRecord("1234e567", {"loss.margin": 0.2}, "COMPLETE", history=_history([10, 30, 20])),
        TrialRecord("00000abc", {"loss.margin": 0.4}, "COMPLETE", history=_history([15])),
        TrialRecord("deadbeef", {"loss.margin": 0.6}, "FAIL", "ValueError: boom"),
    ]
    table = trials_table(records, "val_mr", "max", epochs=3)
    assert list(table["trial_id"]) == ["1234e567", "00000abc", "deadbeef"]
    assert list(table["status"]) == ["COMPLETE", "PRUNED", "FAIL"]
    best = table.iloc[0]
    assert (best["best_val_mr"], best["best_epoch"], best["best_checkpoint"]) == (30, 2, "/ckpt/1")
    assert (best["train_s"], best["time_s"], best["last.val_mr"]) == (6.0, 15.0, 20)
    assert "best_val_mr" in table and pd.isna(table.iloc[2]["best_val_mr"])  # the error: none
    table.to_csv(tmp_path / "trials.csv", index=False)
    again = read_table(tmp_path / "trials.csv")
    assert list(again["trial_id"]) == ["1234e567", "00000abc", "deadbeef"]  # not 1.234e+570
    rows = trial_rows(again, "val_mr")  # typed, read back from the file
    assert rows[0] == TrialRow(
        "1234e567", "COMPLETE", {"loss.margin": 0.2}, 30.0, 2, "/ckpt/1",
        {"val_mr": 20}, 3, 6.0, 15.0, False, None,
    )  # fmt: skip
    assert (rows[1].status, rows[1].best, rows[1].epochs) == ("PRUNED", 15.0, 1)
    assert (rows[2].best, rows[2].last, rows[2].error) == (None, {}, "ValueError: boom")


def test_collapsed_trials_are_marked() -> None:
    flagged = _history([10, 5, 5]).assign(collapsed=[0.0, 1.0, 1.0])
    healthy = _history([10, 20]).assign(collapsed=[0.0, 0.0])
    records = [
        TrialRecord("aaaa0001", {}, "COMPLETE", history=flagged),
        TrialRecord("aaaa0002", {}, "COMPLETE", history=healthy),
        TrialRecord("aaaa0003", {}, "COMPLETE", history=_history([7])),  # before the verdict
    ]
    table = trials_table(records, "val_mr", "max").set_index("trial_id")
    assert table["collapsed"].to_dict() == {"aaaa0001": True, "aaaa0002": False, "aaaa0003": False}
