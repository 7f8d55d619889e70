"""Issue 14 on a real local Ray cluster (each `msa tune` starts its own, one CPU): Ctrl-C
stops a search with 130 and nothing exported or tested, `--resume` finishes it and reads the
test split once; a trial whose loss is not finite fails once, and a search of only such
trials ends with "no trial reported"."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.cluster_utils import background_cli, epochs_saved, wait_for
from tests.cluster_utils import run_cli as _msa
from tests.conftest import tiny_experiment, write_yaml
from workflows.results.read_ledger import recorded_reads
from workflows.results.trials import read_table

pytestmark = pytest.mark.ray
EPOCHS = 40  # ~0.1 s each: the window to press Ctrl-C mid-search


def _search(data: Path, name: str, epochs: int, **loss: float) -> dict:
    exp = tiny_experiment(
        data,
        name=name,
        search={"num_samples": 1, "scheduler": {"type": "fifo"}, "space": {}},
        final={"enabled": True, "top_k": 1, "seeds": 1},
    )
    exp["train"].update(epochs=epochs, max_failures=1)
    exp["loss"] = loss
    return exp


def test_ctrl_c_exits_130_untested_then_resume_tests_once(synth_data: Path, tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "s.yaml", _search(synth_data, "sig", epochs=EPOCHS))
    args = ["tune", str(cfg), "--results", str(tmp_path / "results"), "--num-cpus", "1"]
    log = tmp_path / "first.log"
    with background_cli(*args, cwd=tmp_path, log=log) as proc:
        wait_for(lambda: epochs_saved(tmp_path / "results" / "sig") >= 2, 120, "two epochs")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    text = log.read_text()
    assert proc.returncode == 130, text[-3000:]
    assert "rerun with --resume" in text
    out = tmp_path / "results" / "sig"
    assert not (out / "best_config.yaml").exists() and not (out / "final").exists()

    done = _msa(*args, "--resume", cwd=tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    table = read_table(out / "trials.csv")
    assert table["status"].tolist() == ["COMPLETE"] and table["epochs"].tolist() == [EPOCHS]
    history = read_table(out / "history.csv")
    assert history["epoch"].tolist() == list(range(1, EPOCHS + 1))  # before and after Ctrl-C
    reads = recorded_reads(out / "final")
    assert [len(r) for r in reads.values()] == [1] and all(r[0]["finished"] for r in reads.values())


def test_non_finite_loss_fails_once_and_no_trial_reported(synth_data: Path, tmp_path: Path) -> None:
    cfg = write_yaml(tmp_path / "nan.yaml", _search(synth_data, "nan", 2, lambda_mscma=1e308))
    done = _msa(
        "tune", str(cfg), "--results", str(tmp_path / "results"), "--num-cpus", "1", cwd=tmp_path
    )
    assert done.returncode == 1, (done.stdout + done.stderr)[-3000:]
    assert "msa: error: no trial reported val_mr: all 1 failed" in done.stderr
    out = tmp_path / "results" / "nan"
    table = read_table(out / "trials.csv")
    assert table["status"].tolist() == ["FAIL"]
    assert "FloatingPointError: non-finite loss" in table["error"].iloc[0]
    (errors,) = (out / "ray" / "tune").glob("nan_*/error.txt")
    attempts = errors.read_text().split("Failure # ")[1:]
    assert len(attempts) == 2  # Tune's retry (train.max_failures=1) ...
    assert "RepeatedError" in attempts[1]  # ... did not train again
    assert not (out / "best_config.yaml").exists() and not (out / "final").exists()


def test_dashboard_port_taken_while_ray_starts_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of issue 14: the port is free at Ray's check and taken before its dashboard
    binds it. Ray waits for the dashboard, fails, and connect() starts again on another port."""
    import socket
    import types

    import ray
    import ray._private.services as services
    from ray._private import ray_constants

    from workflows.runtime import cluster

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    free_port = cluster._free_port
    offered = iter([port])
    monkeypatch.setattr(cluster, "_free_port", lambda pref: next(offered, None) or free_port(0))

    class Unchecked:  # Ray's own port check passes: the port is taken right after it
        def __init__(self, *args: object) -> None: ...
        def setsockopt(self, *args: object) -> None: ...
        def bind(self, *args: object) -> None: ...
        def close(self) -> None: ...

    fake = types.SimpleNamespace(**{k: getattr(socket, k) for k in dir(socket) if k.isupper()})
    fake.socket, fake.error = Unchecked, socket.error
    monkeypatch.setattr(services, "socket", fake)
    monkeypatch.setattr(ray_constants, "RAY_DASHBOARD_STARTUP_TIMEOUT_S", 30)  # Ray: 60 s
    # ~/.ray/auth_token stays where it is: Ray caches a token per process, so a new HOME here
    # would give the new cluster a token this process's earlier clusters never sent
    for key in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(key, raising=False)
    try:
        ctx = cluster.connect(num_cpus=1, quiet=True)
        url = cluster.dashboard_url(ctx)
        assert url and not url.endswith(f":{port}"), url
        assert ray.cluster_resources()["CPU"] == 1
    finally:
        ray.shutdown()
        taken.close()
