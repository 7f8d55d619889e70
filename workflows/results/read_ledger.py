"""The record of test-split reads: each model's test metrics are computed once, ever.

The record is ``<final dir>/test_reads.json``: per model key, every read with the time it
started and the time its results were written (``finished``, None while running or when the
process died first). A second read of a model whose earlier read finished is refused unless
asked for (``--reread-test``), so the test split cannot quietly become a selection set. A read
that never finished produced no result anyone saw, so it does not count.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "RECORD",
    "TestAlreadyRead",
    "claim_test_read",
    "finish_test_read",
    "ledger_of",
    "recorded_reads",
]

RECORD = "test_reads.json"


class TestAlreadyRead(RuntimeError):
    """The test split was already read for this model."""

    __test__ = False  # not a pytest test class


def recorded_reads(final_dir: Path) -> dict[str, list[dict[str, str | None]]]:
    """Model key -> its reads (``started``, ``finished``: ISO 8601 UTC); empty without a record."""
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
    """Record that the test split is about to be read for ``model_key``.

    Call it right before the evaluation and :func:`finish_test_read` once its results are
    written.

    Args:
        final_dir: The folder of the final stage (``results/<name>/final``); created if missing.
        model_key: What identifies the model tested, e.g. ``"<trial id>:<checkpoint>"``.
        reread: Allow another read of a model already read (recorded too).

    Raises:
        TestAlreadyRead: A read of the model finished before and ``reread`` is False.
    """
    reads = recorded_reads(final_dir)
    earlier = reads.get(model_key, [])
    done = [read["finished"] for read in earlier if read.get("finished")]
    if done and not reread:
        raise TestAlreadyRead(
            f"the test split was already read for {model_key} ({done[-1]}, recorded in "
            f"{Path(final_dir) / RECORD}); it is read once per model: pass --reread-test to read "
            "it again knowingly"
        )
    reads[model_key] = [*earlier, {"started": _now(), "finished": None}]
    _write_atomic(Path(final_dir) / RECORD, reads)


def finish_test_read(final_dir: Path, model_key: str) -> None:
    """Mark the latest claimed read of ``model_key`` finished (its results are written)."""
    reads = recorded_reads(final_dir)
    if not reads.get(model_key):
        raise TestAlreadyRead(f"{Path(final_dir) / RECORD}: no read of {model_key} was claimed")
    reads[model_key][-1]["finished"] = _now()
    _write_atomic(Path(final_dir) / RECORD, reads)


def ledger_of(
    checkpoint: Path, target: Path, source: dict[str, Any] | None = None
) -> tuple[Path, str]:
    """Where a test read of ``checkpoint`` is recorded, and its model key.

    The ledger of a results folder (``<results>/final``): ``target`` itself, else the folder
    (marked as msa's) holding the checkpoint, else the one an exported model came from
    (``source``: its meta's ``results`` and ``checkpoint``); a model outside any results folder
    keeps its own record in its folder. The key names the checkpoint the weights came from; a
    final-stage run's is the final stage's own (``final:<run>``): a model tested there, or its
    export, is not read again.
    """
    from workflows.results.folders import MARKER

    checkpoint, target = Path(checkpoint).resolve(), Path(target).resolve()
    results = next((p for p in [target, *checkpoint.parents] if (p / MARKER).is_file()), None)
    if results is None and (target / "trials.csv").is_file():  # a search without the marker
        results = target
    origin = Path(str((source or {}).get("results", "")))
    if results is None and source and (origin / MARKER).is_file():
        results = origin.resolve()
    if results is not None and source and source.get("checkpoint"):
        checkpoint = (results / str(source["checkpoint"])).resolve()  # the weights' origin
    parts = checkpoint.parts
    if "final_runs" in parts[:-1]:
        key = f"final:{parts[parts.index('final_runs') + 1]}"
    elif results is not None and checkpoint.is_relative_to(results):
        key = f"checkpoint:{checkpoint.relative_to(results).as_posix()}"
    else:
        key = f"checkpoint:{checkpoint}"
    return (results / "final" if results is not None else checkpoint), key


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_atomic(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename: the record is never half written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)
