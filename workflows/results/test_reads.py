"""The record of test-split reads: each model's test metrics are computed once, ever.

The record is ``<final dir>/test_reads.json``: one entry per model key, with the time of each
read. A second read of the same model is refused unless asked for (``--reread-test``), so the
test split cannot quietly become a selection set.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["RECORD", "TestAlreadyRead", "claim_test_read", "recorded_reads"]

RECORD = "test_reads.json"


class TestAlreadyRead(RuntimeError):
    """The test split was already read for this model."""

    __test__ = False  # not a pytest test class


def recorded_reads(final_dir: Path) -> dict[str, list[str]]:
    """Model key -> the times (ISO 8601, UTC) its test split was read; empty without a record."""
    path = Path(final_dir) / RECORD
    if not path.is_file():
        return {}
    try:
        reads = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TestAlreadyRead(
            f"{path}: unreadable test-read record ({exc}); it guards the test split, so fix or "
            "remove it knowingly"
        ) from exc
    if not isinstance(reads, dict):
        raise TestAlreadyRead(f"{path}: the test-read record is not a mapping")
    return reads


def claim_test_read(final_dir: Path, model_key: str, reread: bool = False) -> None:
    """Record a read of the test split for ``model_key``, before reading it.

    Args:
        final_dir: The folder of the final stage (``results/<name>/final``); created if missing.
        model_key: What identifies the model tested, e.g. ``"<trial id>:<checkpoint>"``.
        reread: Allow a second read of the same model (recorded too).

    Raises:
        TestAlreadyRead: The model's test split was read before and ``reread`` is False.
    """
    final_dir = Path(final_dir)
    reads = recorded_reads(final_dir)
    earlier = reads.get(model_key, [])
    if earlier and not reread:
        raise TestAlreadyRead(
            f"the test split was already read for {model_key} ({earlier[-1]}, recorded in "
            f"{final_dir / RECORD}); it is read once per model: pass --reread-test to read it "
            "again knowingly"
        )
    reads[model_key] = [*earlier, datetime.now(timezone.utc).isoformat(timespec="seconds")]
    _write_atomic(final_dir / RECORD, reads)


def _write_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename: the record is never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)
