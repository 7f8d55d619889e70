"""The trials table, built from per-trial histories without Ray, and read back from CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from workflows.results.trials import TrialRecord, best_row, read_table, trials_table


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
        TrialRecord("1234e567", {"loss.margin": 0.2}, "TERMINATED", history=_history([10, 30, 20])),
        TrialRecord("00000abc", {"loss.margin": 0.4}, "TERMINATED", history=_history([15])),
        TrialRecord("deadbeef", {"loss.margin": 0.6}, "ERROR", "ValueError: boom"),
    ]
    table = trials_table(records, "val_mr", "max", epochs=3)
    assert list(table["trial_id"]) == ["1234e567", "00000abc", "deadbeef"]
    assert list(table["status"]) == ["TERMINATED", "STOPPED", "ERROR"]
    best = best_row(table, "val_mr")
    assert (best["best_val_mr"], best["best_epoch"], best["best_checkpoint"]) == (30, 2, "/ckpt/1")
    assert (best["train_s"], best["time_s"], best["last.val_mr"]) == (6.0, 15.0, 20)
    table.to_csv(tmp_path / "trials.csv", index=False)
    again = read_table(tmp_path / "trials.csv")
    assert list(again["trial_id"]) == ["1234e567", "00000abc", "deadbeef"]  # not 1.234e+570


def test_collapsed_trials_are_marked() -> None:
    flagged = _history([10, 5, 5]).assign(collapsed=[0.0, 1.0, 1.0])
    healthy = _history([10, 20]).assign(collapsed=[0.0, 0.0])
    records = [
        TrialRecord("aaaa0001", {}, "TERMINATED", history=flagged),
        TrialRecord("aaaa0002", {}, "TERMINATED", history=healthy),
        TrialRecord("aaaa0003", {}, "TERMINATED", history=_history([7])),  # before the verdict
    ]
    table = trials_table(records, "val_mr", "max").set_index("trial_id")
    assert table["collapsed"].to_dict() == {"aaaa0001": True, "aaaa0002": False, "aaaa0003": False}
