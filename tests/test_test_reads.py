"""The test-read record: a model's test split is read once, unless a reread is asked for."""

from __future__ import annotations

import json

import pytest

from workflows.results.test_reads import RECORD, TestAlreadyRead, claim_test_read, recorded_reads


def test_first_read_recorded_second_refused(tmp_path):
    final = tmp_path / "final"
    claim_test_read(final, "t1:ckpt_3")
    assert list(recorded_reads(final)) == ["t1:ckpt_3"]
    with pytest.raises(TestAlreadyRead, match="t1:ckpt_3.*--reread-test"):
        claim_test_read(final, "t1:ckpt_3")
    claim_test_read(final, "t2:ckpt_1")  # another model: its own first read
    reads = json.loads((final / RECORD).read_text())
    assert {k: len(v) for k, v in reads.items()} == {"t1:ckpt_3": 1, "t2:ckpt_1": 1}


def test_reread_asked_for_is_recorded(tmp_path):
    claim_test_read(tmp_path, "m")
    claim_test_read(tmp_path, "m", reread=True)
    assert len(recorded_reads(tmp_path)["m"]) == 2


def test_unreadable_record_refuses(tmp_path):
    (tmp_path / RECORD).write_text("{not json")
    with pytest.raises(TestAlreadyRead, match="unreadable"):
        claim_test_read(tmp_path, "m")
