"""Issue 20 on a real local Ray cluster (each command starts its own, one CPU): SIGTERM stops a
search like Ctrl-C (143, the resume hint, no native stack dump), ``--resume`` after ``--resume
--more 1`` finishes, an emptied study file stops ``--resume`` before Ray, a SIGKILLed driver
leaves no process of its cluster running (and another cluster's alone), a run whose CPUs the
cluster can never give is refused instead of waiting forever, and a ``msa train`` whose weights
file is broken fails once, in one line."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import psutil
import pytest

from tests.cluster_utils import background_cli, epochs_saved, start_node, wait_for
from tests.cluster_utils import run_cli as _msa
from tests.conftest import tiny_experiment, write_yaml
from workflows.results.trials import read_table

pytestmark = pytest.mark.ray
EPOCHS = 10  # the window to send SIGTERM mid-search (after 2), short for --more's trial


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
    with background_cli(*args, cwd=tmp_path, log=log) as proc:
        wait_for(lambda: epochs_saved(out) >= 2, 180, "two epochs")
        proc.send_signal(signal.SIGTERM)  # as `kill PID` or `timeout` sends it, to the driver
        proc.wait(timeout=120)
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


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


NODE_PROCESSES = {"gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent"}


def test_sigkilled_driver_leaves_no_process_of_its_cluster(
    synth_data: Path, tmp_path: Path
) -> None:
    """Without the watchdog Ray's two agents outlive the driver by a minute (they wait on the
    GCS that died with it); another Ray cluster on the machine is never touched."""
    other = start_node(num_cpus=1)
    try:
        theirs = [p for p in other.processes() if p.name() in NODE_PROCESSES]
        cfg = write_yaml(tmp_path / "kill.yaml", tiny_experiment(synth_data, name="kill"))
        args = ["train", str(cfg), "--results", str(tmp_path / "results"), "--num-cpus", "1"]
        log = tmp_path / "kill.log"
        with background_cli(*args, cwd=tmp_path, log=log) as proc:

            def started() -> bool:
                if proc.poll() is not None:
                    pytest.fail(f"exit {proc.returncode} before Ray: {log.read_text()[-3000:]}")
                return "Ray dashboard" in log.read_text()

            wait_for(started, 180, "the local cluster")
            ours = psutil.Process(proc.pid).children(recursive=True)
            assert NODE_PROCESSES <= {p.name() for p in ours}, log.read_text()[-3000:]
            proc.kill()
            proc.wait()
        wait_for(lambda: not [p for p in ours if _running(p)], 20, "the cluster's processes to end")
        assert len(theirs) == len(NODE_PROCESSES) and all(map(_running, theirs))
    finally:
        other.remove()


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
def test_train_with_broken_weights_fails_once_in_one_line(synth_data: Path, tmp_path: Path) -> None:
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
