"""The typed results records: metrics.json round-trips, older files load, newer are refused."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.test_final_summary import _final
from workflows.errors import ResultsFolderError
from workflows.results.schema import (
    SCHEMA_VERSION,
    FinalSummary,
    read_final,
    write_final,
)

TOP_KEYS = {
    "schema_version", "metric", "mode", "epochs", "seeds", "retrained", "search_trials",
    "gallery", "candidates", "winner", "baseline", "comparison", "trial_id", "params",
    "checkpoint",
}  # fmt: skip
CANDIDATE_KEYS = {"label", "rank", "baseline", "trial_id", "search_score", "params", "seeds",
                  "val", "test"}  # fmt: skip
RUN_KEYS = {"label", "seed", "run", "checkpoint", "epoch", "val", "test", "examples"}


def test_metrics_json_round_trips(tmp_path: Path) -> None:
    final = _final()
    path = write_final(tmp_path / "metrics.json", final)
    assert read_final(path) == final
    data = json.loads(path.read_text())
    assert FinalSummary.from_json(data).to_json() == data
    # the file's layout: what users and tests read by key
    assert set(data) == TOP_KEYS and data["schema_version"] == SCHEMA_VERSION
    assert set(data["winner"]) == CANDIDATE_KEYS and set(data["winner"]["seeds"][0]) == RUN_KEYS
    assert set(data["comparison"]) == {"winner", "baseline", "val", "test"}
    assert data["comparison"]["val"]["seeds"] == [1, 2, 3]
    assert data["gallery"]["val"]["images"] == 100
    assert (data["trial_id"], data["checkpoint"]) == ("t2", "/ckpt/rank2-3")  # the winner's
    assert data["winner"] == next(c for c in data["candidates"] if c["label"] == "rank2")


def test_a_file_from_before_versions_loads(tmp_path: Path) -> None:
    data = _final().to_json()
    del data["schema_version"]
    for cand in [data["winner"], data["baseline"], *data["candidates"]]:
        for run in cand["seeds"]:
            del run["examples"]  # runs written before the example queries had none
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(data))
    final = read_final(path)
    assert final == _final() and final.winner.runs[0].examples == {}
    assert final.winner.val is not None and final.winner.val["mr"].mean == pytest.approx(64.0)


@pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, "1", None])
def test_newer_or_unknown_version_is_refused(tmp_path: Path, version: object) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({**_final().to_json(), "schema_version": version}))
    refused = rf"^{re.escape(str(path))}: schema_version {re.escape(repr(version))} is not"
    with pytest.raises(ResultsFolderError, match=refused):
        read_final(path)


def test_missing_or_renamed_field_names_file_and_key(tmp_path: Path) -> None:
    data = _final().to_json()
    data["winner"]["seeds"][0]["tested_epoch"] = data["winner"]["seeds"][0].pop("epoch")
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(data))
    missing = rf"^{re.escape(str(path))}: not a final summary \(no key 'epoch'\)"
    with pytest.raises(ResultsFolderError, match=missing):
        read_final(path)
    path.write_text("{not json")
    with pytest.raises(ResultsFolderError, match=rf"^{re.escape(str(path))}: unreadable final"):
        read_final(path)
