"""The test-read record: a model's test split is read once, unless a reread is asked for."""

from __future__ import annotations

import json

import pytest

from workflows.results.read_ledger import (
    RECORD,
    TestAlreadyRead,
    claim_test_read,
    finish_test_read,
    recorded_reads,
)


def test_finished_read_refuses_a_second(tmp_path):
    final = tmp_path / "final"
    claim_test_read(final, "t1:ckpt_3")
    finish_test_read(final, "t1:ckpt_3")
    with pytest.raises(TestAlreadyRead, match="t1:ckpt_3.*--reread-test"):
        claim_test_read(final, "t1:ckpt_3")
    claim_test_read(final, "t2:ckpt_1")  # another model: its own first read
    reads = json.loads((final / RECORD).read_text())
    assert {k: len(v) for k, v in reads.items()} == {"t1:ckpt_3": 1, "t2:ckpt_1": 1}
    assert reads["t2:ckpt_1"][0]["finished"] is None


def test_unfinished_read_does_not_count(tmp_path):
    claim_test_read(tmp_path, "m")  # the process died before writing results
    claim_test_read(tmp_path, "m")
    finish_test_read(tmp_path, "m")
    reads = recorded_reads(tmp_path)["m"]
    assert [r["finished"] is None for r in reads] == [True, False]


def test_reread_asked_for_is_recorded(tmp_path):
    claim_test_read(tmp_path, "m")
    finish_test_read(tmp_path, "m")
    claim_test_read(tmp_path, "m", reread=True)
    assert len(recorded_reads(tmp_path)["m"]) == 2


def test_unreadable_record_refuses(tmp_path):
    (tmp_path / RECORD).write_text("{not json")
    with pytest.raises(TestAlreadyRead, match="unreadable"):
        claim_test_read(tmp_path, "m")
