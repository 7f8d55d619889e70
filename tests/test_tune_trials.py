"""A real search's trials, as Ray users look at them: one name per trial everywhere, progress
lines that name it, Tune's best result with a checkpoint, and a narrow progress table."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from ray.tune import ExperimentAnalysis, ResultGrid

from msa_model.checkpoint import read_checkpoint_meta
from tests.conftest import tiny_experiment, write_yaml
from workflows.results.trials import read_table

pytestmark = pytest.mark.ray


def test_trials_are_named_and_their_best_checkpoints_registered_with_tune(
    synth_data: Path, tmp_path: Path
) -> None:
    exp = tiny_experiment(
        synth_data,
        search={
            "num_samples": 2,
            "scheduler": {"type": "fifo"},
            "space": {"loss.lambda_mscma": {"loguniform": [1.0, 30.0]}},
        },
    )
    write_yaml(tmp_path / "tiny.yaml", exp)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "workflows",
            "tune",
            "tiny.yaml",
            "--num-cpus",
            "2",
            "--no-final",
            "--verbose",
        ],  # fmt: skip
        cwd=tmp_path,
        env={**os.environ, "RAY_DEDUP_LOGS": "0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "results" / "tiny"
    trials = read_table(out / "trials.csv")
    ids = sorted(trials["trial_id"])
    names = [f"tiny_{i}" for i in ids]
    # one folder name per trial: Tune's trial dir, the run's checkpoints, TensorBoard
    assert sorted(p.name for p in (out / "ray" / "tune").glob("tiny_*")) == names
    assert sorted(p.name for p in (out / "ray" / "trials").iterdir()) == names
    assert sorted(p.name for p in (out / "tensorboard").iterdir() if p.is_dir()) == names
    assert [list((out / "tensorboard" / n).glob("events.*")) != [] for n in names] == [True] * 2
    assert not list((out / "ray" / "tune").glob("tiny_*/events.*"))  # no second set from Ray
    text = proc.stdout + proc.stderr
    for trial_id in ids:  # every epoch line names its trial
        assert re.search(rf"\[tiny {trial_id}\] epoch 2/2  train_loss=", text), trial_id
    # a log file gets no colour codes around Ray's worker prefixes ("(tiny pid=12) ...")
    assert re.search(r"^\([\w:.]+ pid=\d+\) ", text, re.MULTILINE)
    assert not re.search(r"\x1b\[[0-9;]*m\([\w:.]+ pid=", text)
    # --verbose: Ray's table; the last one (after the trials reported; empty metric columns are
    # hidden before)
    header = [line for line in text.splitlines() if "| Trial name" in line][-1]
    assert [c.strip() for c in header.strip().strip("|").split("|")] == [
        "Trial name", "status", "loc", "lambda_mscma", "epoch", "mr", "best",
    ]  # fmt: skip

    # Ray's way to the best model: the best trial's best epoch, through checkpoint_path (Tune keeps
    # no second copy of the run's checkpoints: Result.checkpoint is None)
    grid = ResultGrid(
        ExperimentAnalysis(str(out / "ray" / "tune"), default_metric="val_mr_best",
                           default_mode="max")
    )  # fmt: skip
    best = grid.get_best_result()
    assert best.checkpoint is None
    row = trials.set_index("trial_id").loc[best.metrics["trial_id"]]
    assert row["best_val_mr"] == trials["best_val_mr"].max()  # ties: either trial
    frame = best.metrics_dataframe
    at_best = frame.loc[frame["val_mr"].idxmax()]
    meta = read_checkpoint_meta(at_best["checkpoint_path"])
    assert meta["epoch"] == row["best_epoch"]
    assert meta["metrics"]["val_mr"] == pytest.approx(row["best_val_mr"])
    kept = Path(at_best["checkpoint_path"])  # weights; + the optimizer when it is the latest
    record = json.loads((kept.parent / "checkpoints.json").read_text())["checkpoints"]
    latest = max(record, key=lambda e: e["epoch"])["name"]
    expected = ["meta.json", "model.pt", "tokenizer"] + (["optimizer.pt"] * (kept.name == latest))
    assert sorted(os.listdir(kept)) == sorted(expected)
    for result in grid:  # no copy in Tune's folder
        assert not list(Path(result.path).glob("checkpoint_*"))
    # the run keeps its own record (what a restarted trial resumes from), paths relative
    for row in trials.itertuples():
        assert row.best_checkpoint.startswith(f"ray/trials/tiny_{row.trial_id}/checkpoint_")
        run = out / "ray" / "trials" / f"tiny_{row.trial_id}"
        record = json.loads((run / "checkpoints.json").read_text())["checkpoints"]
        latest = max(record, key=lambda e: e["epoch"])["name"]
        assert sorted(p.parent.name for p in run.glob("*/optimizer.pt")) == [latest]
