"""Issue 20 on a real local Ray cluster (each command starts its own, one CPU): SIGTERM stops a
search like Ctrl-C (143, the resume hint, no native stack dump), ``--resume`` after ``--resume
--more 1`` finishes, an emptied study file stops ``--resume`` before Ray, a run whose CPUs the
cluster can never give is refused instead of waiting forever, and a ``msa train`` whose weights
file is broken fails once, in one line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cluster_utils import node_env, wait_for
from tests.cluster_utils import run_cli as _msa
from tests.conftest import tiny_experiment, write_yaml
from workflows.results.trials import read_table

pytestmark = pytest.mark.ray
EPOCHS = 10  # the window to send SIGTERM mid-search (after 2), short for --more's trial


def _epochs_saved(out: Path) -> int:
    for record in (out / "ray" / "trials").glob("*/checkpoints.json"):
        return max((e["epoch"] for e in json.loads(record.read_text())["checkpoints"]), default=0)
    return 0


def test_sigterm_then_resume_more_resume_and_an_emptied_study(
    synth_data: Path, tmp_path: Path
) -> None:
    raw = tiny_experiment(
        synth_data,
        name="term",
        search={"num_samples": 1, "space": {"optim.lr": {"loguniform": [1e-4, 1e-2]}}},
    )
    raw["train"]["epochs"] = EPOCHS
    cfg = write_yaml(tmp_path / "term.yaml", raw)
    out = tmp_path / "results" / "term"
    args = ["tune", str(cfg), "--results", str(tmp_path / "results"), "--num-cpus", "1"]
    args += ["--no-final"]
    log = tmp_path / "first.log"
    env = node_env()
    env.pop("RAY_ADDRESS", None)
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workflows", *args],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: _epochs_saved(out) >= 2, 180, "two epochs")
        proc.send_signal(signal.SIGTERM)  # as `kill PID` or `timeout` sends it, to the driver
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert proc.returncode == 143, text[-3000:]
    assert "msa: error: terminated (SIGTERM)" in text and "rerun with --resume" in text
    for crash in ("Fatal Python error", "Aborted", "core dumped", "Traceback"):
        assert crash not in text, text[-3000:]
    assert not (out / "best_config.yaml").exists()

    for extra in ([], ["--more", "1"], []):  # the last: after --more, nothing left to run
        done = _msa(*args, "--resume", *extra, cwd=tmp_path)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert len(read_table(out / "trials.csv")) == 2

    (out / "optuna.db").write_bytes(b"")  # the study's history lost: never a new study silently
    done = _msa(*args, "--resume", cwd=tmp_path)
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    assert "optuna.db: the Optuna study file is empty (0 bytes)" in done.stderr
    assert "Ray dashboard" not in done.stdout  # before Ray started


def test_cpus_the_cluster_never_has_refused(synth_data: Path, tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "big.yaml", tiny_experiment(synth_data, name="big"))
    done = _msa(
        "train", str(cfg), "--results", str(tmp_path / "results"), "--num-cpus", "1",
        "--set", "train.cpus_per_worker=2", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    assert "msa: error:" in done.stderr
    assert "train.cpus_per_worker: each of the 1 worker(s) needs 2 CPU, the cluster has 1" in (
        done.stderr
    )


@pytest.mark.slow  # ~100 s (Train starts its workers twice); the unwrapping is unit-tested too
def test_train_with_broken_weights_fails_once_in_one_line(
    synth_data: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"not a state dict")
    raw = tiny_experiment(synth_data, name="bad")
    image = {**raw["model"]["image"], "weights_file": str(weights)}
    raw["model"] = {**raw["model"], "image": image}
    raw["train"]["max_failures"] = 1  # Train restarts the workers once: the record stops it
    cfg = write_yaml(tmp_path / "bad.yaml", raw)
    done = _msa("train", str(cfg), "--results", str(tmp_path / "results"), "--num-cpus", "1",
                cwd=tmp_path)  # fmt: skip
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("msa: error:")]
    assert done.returncode == 1, (done.stdout + done.stderr)[-3000:]
    assert len(errors) == 1 and done.stderr.splitlines()[-1] == errors[0]  # the last line
    assert errors[0].startswith("msa: error: ConfigError: model.image.weights_file: cannot read")
    assert "WorkerGroupError" not in errors[0] and "\n" not in errors[0]
    record = tmp_path / "results" / "bad" / "ray" / "train" / "failed.json"
    failed = json.loads(record.read_text())
    assert "weights_file" in failed["error"]  # recorded once: Train's retries did not retrain
