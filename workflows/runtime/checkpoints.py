"""The checkpoints of a run that trains in its Tune trial's process, kept like a Train run's.

Each checkpoint goes to ``<run_dir>/checkpoint_<epoch>`` (a local folder or an ``s3://`` /
``gs://`` URI, through pyarrow), and ``<run_dir>/checkpoints.json`` records the kept ones: the
best ``keep`` by the search metric plus the latest. The record is rewritten after each copy and
before any deletion, so a restarted trial resumes from the latest checkpoint it names, whatever
state the Tune driver saved before it crashed. Only the latest keeps its training state
(``optimizer.pt``): the best ones kept beside it are weights only, which is all their readers
(evaluation, export, the final stage) need.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow.fs

from msa_model.checkpoint import STATE_FILE
from msa_model.constants import score_key

__all__ = ["RunCheckpoints", "RECORD"]

RECORD = "checkpoints.json"


class RunCheckpoints:
    """Save, record, prune and find the checkpoints of one run."""

    def __init__(self, run_dir: str, keep: int, metric: str, mode: str) -> None:
        self.run_dir = run_dir.rstrip("/")
        self.fs, self.root = pyarrow.fs.FileSystem.from_uri(self.run_dir)
        self.keep, self.metric, self.mode = keep, metric, mode
        self.fs.create_dir(self.root, recursive=True)
        self.entries: list[dict[str, Any]] = self._read()

    def _read(self) -> list[dict[str, Any]]:
        try:
            with self.fs.open_input_stream(f"{self.root}/{RECORD}") as f:
                return json.loads(f.read().decode())["checkpoints"]
        except FileNotFoundError:
            return []

    def latest(self) -> str | None:
        """Path (or URI) of the latest recorded checkpoint, None before the first."""
        if not self.entries:
            return None
        return f"{self.run_dir}/{max(self.entries, key=lambda e: e['epoch'])['name']}"

    def save(self, local_dir: str, epoch: int, metrics: dict[str, Any]) -> str:
        """Copy ``local_dir`` in as the checkpoint of ``epoch``; prune; its path (or URI)."""
        name = f"checkpoint_{epoch:06d}"
        self.fs.create_dir(f"{self.root}/{name}", recursive=True)
        pyarrow.fs.copy_files(local_dir, f"{self.root}/{name}", destination_filesystem=self.fs)
        score = metrics.get(self.metric)
        entry = {"name": name, "epoch": epoch, "score": None if score is None else float(score)}
        self.entries = [e for e in self.entries if e["epoch"] != epoch] + [entry]
        kept = self._kept()
        dropped = [e for e in self.entries if e not in kept]
        self.entries = kept
        self._write()
        for old in dropped:
            try:
                self.fs.delete_dir(f"{self.root}/{old['name']}")
            except FileNotFoundError:
                pass
        for older in self.entries[:-1]:  # the record names the new latest: resume reads only it
            try:
                self.fs.delete_file(f"{self.root}/{older['name']}/{STATE_FILE}")
            except FileNotFoundError:
                pass
        return f"{self.run_dir}/{name}"

    def _kept(self) -> list[dict[str, Any]]:
        latest = max(self.entries, key=lambda e: e["epoch"])
        best = sorted(self.entries, key=lambda e: score_key(e["score"], self.mode), reverse=True)[
            : self.keep
        ]
        return sorted({e["name"]: e for e in [*best, latest]}.values(), key=lambda e: e["epoch"])

    def _write(self) -> None:
        tmp = f"{self.root}/{RECORD}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            f.write(json.dumps({"checkpoints": self.entries}, indent=1).encode())
        self.fs.move(tmp, f"{self.root}/{RECORD}")
