"""Real Ray clusters on this machine: job submission to two nodes, resume after the driver dies,
a killed Train worker or trial process, a node lost mid-search, and the security defaults.

The clusters are `ray start --block` processes the tests start with their own temp dirs and free
ports (tests/cluster_utils.py) and kill by pid at the end; `ray stop` is never called.
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from msa_model.config import ConfigError
from tests.cluster_utils import (
    RAY,
    TRAIN_WORKER,
    TUNE_TRIAL,
    alive_actors,
    alive_nodes,
    node_env,
    start_node,
    wait_for,
)
from tests.conftest import tiny_experiment, write_yaml
from workflows.results.trials import read_table
from workflows.runtime.checkpoints import RECORD
from workflows.runtime.jobs import DEFAULT_EXCLUDES, prepare_submission

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]
LONG = 40  # epochs of the fault tests: ~0.1 s each, the window to act mid-trial
# a trial that trains in its own process runs an epoch of the tiny data in ~0.07 s, without a
# Train controller between its reports and Tune: more epochs keep a window of seconds
IN_TRIAL_LONG = 200
EPOCHS = {"torch_trainer": LONG, "auto": IN_TRIAL_LONG}


class Cluster:
    """A head (1 CPU + the msa_driver resource) and, on demand, one worker node (1 CPU)."""

    def __init__(self) -> None:
        self.head = start_node(num_cpus=1, resources={"msa_driver": 64})
        self.worker = None

    @property
    def address(self) -> str:
        return self.head.gcs_address

    @property
    def dashboard(self) -> str:
        assert self.head.dashboard_url
        return self.head.dashboard_url

    def two_nodes(self):
        """Start (or restart, after a test removed it) the worker node; wait until it joined."""
        if self.worker is None or self.worker.proc.poll() is not None:
            self.worker = start_node(
                head_address=self.address, dashboard_url=self.dashboard, num_cpus=1
            )
        nodes = wait_for(self._two_alive, 60, "the worker node to join")
        self.head_id = next(n["node_id"] for n in nodes if n["is_head_node"])
        self.worker_id = next(n["node_id"] for n in nodes if not n["is_head_node"])
        return self.worker

    def _two_alive(self) -> list[dict] | None:
        nodes = alive_nodes(self.dashboard)
        return nodes if len(nodes) == 2 else None

    def no_train_workers(self, timeout: float = 60) -> None:
        """Wait until no Train worker or trial is alive (a previous run's actors are gone)."""

        def idle() -> bool:
            return not any(alive_actors(self.dashboard, c) for c in (TRAIN_WORKER, TUNE_TRIAL))

        wait_for(idle, timeout, "idle cluster")

    def stop(self) -> None:
        for node in (self.worker, self.head):
            if node is not None:
                node.remove()


@pytest.fixture(scope="module")
def cluster():
    c = Cluster()
    try:
        yield c
    finally:
        c.stop()


def msa_env(**extra: str) -> dict[str, str]:
    env = node_env(extra)
    env.pop("RAY_ADDRESS", None)
    return env


def run_msa(*args: str, cwd: Path, timeout: int = 400, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workflows", *args],
        cwd=cwd,
        env=msa_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_msa(*args: str, cwd: Path, log: Path, **env: str) -> subprocess.Popen:
    """`msa ...` in the background (its own session), output to ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "workflows", *args],
            cwd=cwd,
            env=msa_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def finish(proc: subprocess.Popen, log: Path, timeout: float = 400) -> str:
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert proc.returncode == 0, text[-4000:]
    return text


def search_experiment(
    data: Path,
    name: str,
    epochs: int,
    samples: int,
    launcher: str = "auto",
    final: bool = True,
    **search,
) -> dict:
    exp = tiny_experiment(
        data,
        name=name,
        search={
            "num_samples": samples,
            "scheduler": {"type": "fifo"},
            "searcher": {"seed": 1},
            "space": {"loss.lambda_mscma": {"loguniform": [1.0, 30.0]}},
            **search,
        },
        final={"enabled": final, "top_k": 1, "seeds": 1},  # one retraining of best and baseline
    )
    exp["train"].update(epochs=epochs, max_failures=1, trial_launcher=launcher)
    return exp


def checkpoints(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob("checkpoint_*"))


def registered_metrics(run_dir: Path) -> list[dict]:
    """Metrics of the checkpoints the Train controller has recorded for a run.

    That is what a restart resumes from: a checkpoint folder appears on disk before the
    controller takes the report (a worker killed in between restarts from scratch). The
    snapshot is rewritten at every checkpoint, unlike Tune's buffered result.json.
    """
    try:
        snapshot = json.loads((run_dir / "checkpoint_manager_snapshot.json").read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [r.get("metrics", {}) for r in snapshot.get("checkpoint_results", [])]


def registered(run_dir: Path) -> int:
    return len(registered_metrics(run_dir))


def trial_states(tune_dir: Path) -> dict[str, str]:
    """Trial id -> status in Tune's latest saved experiment state (what a restore sees)."""
    files = sorted(glob.glob(str(tune_dir / "experiment_state-*.json")))
    if not files:
        return {}
    try:
        state = json.loads(Path(files[-1]).read_text())
    except (json.JSONDecodeError, OSError):  # being rewritten
        return {}
    return {json.loads(t)["trial_id"]: json.loads(t)["status"] for t, _ in state["trial_data"]}


def recorded_epochs(run_dir: Path) -> list[int]:
    """Epochs of the checkpoints an in-trial run has recorded (what its restart resumes from)."""
    try:
        record = json.loads((run_dir / RECORD).read_text())
    except (OSError, json.JSONDecodeError):
        return []
    return [entry["epoch"] for entry in record["checkpoints"]]


# --- security defaults ------------------------------------------------------------------------


def _get(url: str, token: str | None = None) -> int:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _token() -> str:
    return (Path.home() / ".ray" / "auth_token").read_text().strip()


BIND_PROBE = """
import json, os, sys
from workflows.runtime.cluster import connect, dashboard_url
import psutil  # Ray's vendored copy, importable once ray is
ctx = connect(num_cpus=1, quiet=True)
session = ctx.address_info["session_dir"]
listen = []
for p in psutil.process_iter(["cmdline"]):
    cmd = " ".join(p.info["cmdline"] or [])
    if "dashboard/dashboard.py" in cmd and session in cmd:
        listen += [c.laddr.ip + ":" + str(c.laddr.port) for c in p.net_connections("tcp")
                   if c.status == psutil.CONN_LISTEN]
print(json.dumps({"url": dashboard_url(ctx), "listen": listen,
                  "auth": os.environ.get("RAY_AUTH_MODE")}))
"""


def _start_probe(env: dict[str, str]) -> tuple[subprocess.Popen, dict]:
    """Start `connect()` in a subprocess that holds its local cluster until stdin closes.

    Retried when another Ray instance on the machine took the dashboard port between
    connect()'s check and Ray's bind (parallel test runs; see the report).
    """
    for _attempt in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", BIND_PROBE + "\nsys.stdout.flush(); sys.stdin.read()"],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        line = proc.stdout.readline()
        if line:
            return proc, json.loads(line)
        err = proc.stderr.read()
        proc.wait()
        if "already occupied" not in err:
            break
    raise AssertionError(err[-3000:])


def test_local_dashboard_binds_localhost_with_token_auth() -> None:
    """`msa` on a laptop: dashboard + job API on 127.0.0.1 only, and they need the token."""
    env = msa_env()
    env.pop("RAY_AUTH_MODE", None)  # the default, as a user has it
    proc, info = _start_probe(env)
    try:
        assert info["url"].startswith("http://127.0.0.1:")
        assert info["auth"] == "token"
        assert info["listen"], "dashboard process not found"
        port = info["url"].rsplit(":", 1)[1]
        http = [a for a in info["listen"] if a.endswith(f":{port}")]
        # the HTTP server (dashboard, job and State APIs) is on loopback only; Ray's Prometheus
        # metrics port of the same process (44227, read-only) binds all interfaces regardless
        assert http == [f"127.0.0.1:{port}"], info["listen"]
        jobs = f"{info['url']}/api/jobs/"
        assert _get(jobs) == 401  # the job API runs code: no token, no access
        assert _get(jobs, _token()) == 200
    finally:
        proc.stdin.close()  # the probe exits and Ray's exit hook stops its local cluster
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


OTHER_CLUSTER = """
import sys, tempfile, ray
# a user's own Ray on this machine: plain ray.init, Ray's default ports (dashboard agent: 52365)
temp = tempfile.mkdtemp(dir="/tmp")
ray.init(address="local", num_cpus=1, include_dashboard=True, _temp_dir=temp)
print("up", flush=True)
sys.stdin.read()
"""

LOG_PROBE = """
import json, time, urllib.request, ray
from pathlib import Path
from workflows.runtime.cluster import connect, dashboard_url
url = dashboard_url(connect(num_cpus=1, quiet=True, name="probe"))
token = (Path.home() / ".ray" / "auth_token").read_text().strip()

def get(path):  # as the dashboard's pages ask its HTTP API
    request = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read().decode()

@ray.remote(num_cpus=0)
class Trial:
    def say(self):
        print("[probe 1e540e59] epoch 1/1", flush=True)

actor = Trial.remote()
ray.get(actor.say.remote())
text, error = "", None
for _ in range(30):  # the log monitor writes the actor's file within a few seconds
    try:  # the log pane's request
        text = get(f"/api/v0/logs/file?actor_id={actor._actor_id.hex()}&suffix=out&lines=100")
    except Exception as exc:
        error = repr(exc)
    if "1e540e59" in text:
        break
    time.sleep(1)
job = ray.get_runtime_context().get_job_id()
jobs = [j for j in json.loads(get("/api/jobs/")) if j.get("job_id") == job]
print(json.dumps({"text": text, "error": error, "job": jobs[0]["metadata"] if jobs else None,
                  "agent_port": ray.nodes()[0].get("DashboardAgentListenPort")}))
"""


def _taken(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_actor_logs_load_with_another_cluster_on_the_machine() -> None:
    """With another Ray on the machine holding Ray's default agent port (52365), our cluster's
    dashboard agent listens elsewhere: an actor's log loads through the dashboard's log API (the
    dashboard's log pane said "Failed to load"), and the job carries the experiment's name."""
    env = node_env()
    other = subprocess.Popen([sys.executable, "-c", OTHER_CLUSTER], cwd=REPO, env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             start_new_session=True)  # fmt: skip
    try:
        assert other.stdout.readline().strip() == "up"
        assert _taken(52365)  # by the other cluster's agent (or another Ray here before it)
        probe = subprocess.run([sys.executable, "-c", LOG_PROBE], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=300)  # fmt: skip
        assert probe.returncode == 0, probe.stderr[-3000:]
        seen = json.loads(probe.stdout.strip().splitlines()[-1])
        assert "[probe 1e540e59] epoch 1/1" in seen["text"], seen
        assert seen["agent_port"] != 52365
        assert seen["job"] == {"job_name": "probe"}
    finally:
        other.stdin.close()  # its ray.init's exit hook stops the other cluster
        try:
            other.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(other.pid, signal.SIGKILL)
            other.wait()


def test_yaml_and_checkpoints_are_loaded_safely() -> None:
    sources = [*REPO.glob("msa_model/**/*.py"), *REPO.glob("workflows/**/*.py")]
    text = {p: p.read_text() for p in sources}
    unsafe_yaml = [
        str(p)
        for p, t in text.items()
        if re.search(r"yaml\.(load|unsafe_load|full_load)\(", t)
        or "yaml.Loader" in t
        or "UnsafeLoader" in t
    ]
    assert not unsafe_yaml, unsafe_yaml
    loads = [(p, m) for p, t in text.items() for m in re.finditer(r"torch\.load\(([^)]*)\)", t)]
    assert loads, "no torch.load found"
    unsafe_torch = [str(p) for p, m in loads if "weights_only=True" not in m.group(1)]
    assert not unsafe_torch, unsafe_torch


# --- msa submit: arguments and checks (no cluster) --------------------------------------------


def test_submit_builds_the_job_and_rejects_configs_outside_the_working_dir(
    synth_data: Path, tmp_path: Path
) -> None:
    work = tmp_path / "repo"
    (work / "search_spaces").mkdir(parents=True)
    exp = search_experiment(synth_data, "sub", epochs=2, samples=2)
    exp["data"]["json"] = "data/synth/dataset.json"  # relative, in a folder not uploaded
    write_yaml(work / "search_spaces" / "sub.yaml", exp)

    job = prepare_submission(
        work / "search_spaces" / "sub.yaml", work, ["optim.lr=0.01"], ["--no-final"]
    )
    assert job["entrypoint"].startswith("msa tune search_spaces/sub.yaml --set optim.lr=0.01 ")
    assert f"--set data.json={work.resolve()}/data/synth/dataset.json" in job["entrypoint"]
    assert job["entrypoint"].endswith(f"--results {work.resolve()}/results --no-final")
    assert job["runtime_env"]["working_dir"] == str(work.resolve())
    assert job["runtime_env"]["excludes"] == DEFAULT_EXCLUDES
    assert any("not uploaded" in n for n in job["notes"])
    job = prepare_submission(work / "search_spaces/sub.yaml", work, [], ["--results", "/x"])
    assert "--results /x" in job["entrypoint"] and job["results"] is None

    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ConfigError, match="must be inside the working dir"):
        prepare_submission(work / "search_spaces" / "sub.yaml", tmp_path / "elsewhere", [])
    (work / "results").mkdir()
    write_yaml(work / "results" / "old.yaml", exp)
    with pytest.raises(ConfigError, match="not uploaded"):
        prepare_submission(work / "results" / "old.yaml", work, [])
    with pytest.raises(ConfigError, match="loss.margn"):
        prepare_submission(work / "search_spaces" / "sub.yaml", work, ["loss.margn=1"])

    # the CLI: options after `--` go to `msa tune`, unknown ones before it are refused
    proc = run_msa("submit", "search_spaces/sub.yaml", "--wait", "--results", "x", cwd=work)
    assert proc.returncode == 2 and "go after `--`" in proc.stderr, proc.stderr
    proc = run_msa("submit", "../sub.yaml", "--working-dir", ".", cwd=work, timeout=60)
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_resume_without_a_search_is_a_clear_error(synth_data: Path, tmp_path: Path) -> None:
    write_yaml(tmp_path / "fresh.yaml", search_experiment(synth_data, "fresh", 2, 2))
    proc = run_msa("tune", "fresh.yaml", "--resume", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--resume: no search to resume" in proc.stderr and "Traceback" not in proc.stderr


# --- a cluster of two nodes -------------------------------------------------------------------


@pytest.mark.slow  # pytest -m slow: in the extended run, not the default suite
def test_submit_job_runs_trials_on_both_nodes(cluster: Cluster, synth_data: Path, tmp_path):
    cluster.two_nodes()
    cluster.no_train_workers()
    work = tmp_path / "job"
    work.mkdir()
    write_yaml(work / "tiny.yaml", search_experiment(synth_data, "tiny-job", 2, 2))
    proc = run_msa(
        "submit",
        "tiny.yaml",
        "--address",
        cluster.dashboard,
        "--working-dir",
        ".",
        "--wait",
        cwd=work,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-5000:]
    job_id = re.search(r"submitted job (\S+):", output).group(1)
    assert f"ray job logs -f {job_id} --address {cluster.dashboard}" in output
    assert f"job {job_id} SUCCEEDED" in output

    from ray.job_submission import JobSubmissionClient

    assert str(JobSubmissionClient(cluster.dashboard).get_job_status(job_id)).endswith("SUCCEEDED")
    out = work / "results" / "tiny-job"  # msa submit's default: <working dir>/results
    assert (out / "final" / "metrics.json").is_file()
    trials = read_table(out / "trials.csv")
    assert len(trials) == 2 and (trials["status"] == "COMPLETE").all()
    history = read_table(out / "history.csv")
    assert set(history["node_id"]) == {cluster.head_id, cluster.worker_id}


def test_plain_ray_job_submit(cluster: Cluster, synth_data: Path, tmp_path: Path) -> None:
    """The README's `ray job submit --working-dir . -- msa tune ...` (absolute --results)."""
    write_yaml(tmp_path / "plain.yaml", search_experiment(synth_data, "plain", 1, 1))
    proc = subprocess.run(
        [RAY, "job", "submit", "--address", cluster.dashboard, "--working-dir", ".", "--",
         "msa", "tune", "plain.yaml", "--no-final", "--results", str(tmp_path / "out")],
        cwd=tmp_path,
        env=msa_env(RAY_AUTH_MODE="token"),  # `ray job` sends the token only in token mode
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "succeeded" in proc.stdout + proc.stderr
    trials = read_table(tmp_path / "out" / "plain" / "trials.csv")
    assert len(trials) == 1 and trials["status"].iloc[0] == "COMPLETE"


@pytest.mark.slow  # pytest -m slow: in the extended run, not the default suite
def test_killed_train_worker_resumes_from_checkpoint(cluster: Cluster, synth_data, tmp_path):
    cluster.two_nodes()
    cluster.no_train_workers()
    exp = search_experiment(synth_data, "ft", epochs=LONG, samples=1, launcher="torch_trainer")
    write_yaml(tmp_path / "ft.yaml", exp)
    log = tmp_path / "ft.log"
    proc = start_msa("tune", "ft.yaml", "--address", cluster.address, cwd=tmp_path, log=log)
    try:
        run_dir = tmp_path / "results" / "ft" / "ray" / "trials"
        workers = wait_for(lambda: alive_actors(cluster.dashboard), 180, "the trial's Train worker")
        pid = workers[0].pid
        wait_for(lambda: any(registered(d) for d in run_dir.glob("*")), 120, "a checkpoint", 0.05)
        os.kill(pid, signal.SIGKILL)  # a process of our own cluster
    except BaseException:
        proc.kill()
        raise
    _assert_resumed_and_complete(finish(proc, log), tmp_path / "results" / "ft", LONG)


def test_killed_trial_process_resumes_from_checkpoint(cluster: Cluster, synth_data, tmp_path):
    """A one-worker trial trains in its Tune process; Tune restarts it from its checkpoint."""
    cluster.no_train_workers()
    exp = search_experiment(synth_data, "it", epochs=IN_TRIAL_LONG, samples=1, final=False)
    write_yaml(tmp_path / "it.yaml", exp)
    log = tmp_path / "it.log"
    proc = start_msa("tune", "it.yaml", "--address", cluster.address, cwd=tmp_path, log=log)
    try:
        runs = tmp_path / "results" / "it" / "ray" / "trials"

        def trial_pid() -> int | None:  # Ray prefixes a trial's output with its pid (in colour)
            found = re.search(r"\(it pid=(\d+)\)\S* \[it \w+\] epoch", log.read_text())
            return int(found.group(1)) if found else None

        pid = wait_for(trial_pid, 180, "the trial's first epoch")

        # Tune's report blocks until the driver takes the result: with a second checkpoint on
        # disk, the first is registered
        def saved() -> list[int] | None:
            epochs = [e for d in runs.glob("it_*") for e in recorded_epochs(d)]
            return epochs or None

        epochs = wait_for(saved, 120, "a recorded checkpoint", 0.05)
        # never kill a pid whose trial may have ended: its process may be gone or reused
        assert max(epochs) < IN_TRIAL_LONG - 20, f"the trial outran the test: {epochs}"
        assert b"ray::ImplicitFunc" in Path(f"/proc/{pid}/cmdline").read_bytes()
        os.kill(pid, signal.SIGKILL)  # the trial's process, of our own cluster
    except BaseException:
        proc.kill()
        raise
    text = finish(proc, log)
    # the run kept its own record; a Train run would have left Train's checkpoint snapshot
    run_dirs = list(runs.glob("it_*"))
    assert len(run_dirs) == 1 and (run_dirs[0] / RECORD).is_file()
    assert not (run_dirs[0] / "checkpoint_manager_snapshot.json").exists()
    _assert_resumed_and_complete(text, tmp_path / "results" / "it", IN_TRIAL_LONG)


def _assert_resumed_and_complete(text: str, out: Path, epochs: int) -> None:
    resumed = re.findall(r"resumed from \S+ at epoch (\d+)", text)
    assert resumed and 1 <= int(resumed[0]) < epochs, text[-4000:]
    trials = read_table(out / "trials.csv")
    assert (trials["status"] == "COMPLETE").all() and (trials["epochs"] == epochs).all()
    history = read_table(out / "history.csv")
    assert set(history["epoch"]) == set(range(1, epochs + 1))


@pytest.mark.parametrize(
    "launcher", [pytest.param("torch_trainer", marks=pytest.mark.slow), "auto"]
)
def test_resume_after_the_driver_is_killed(
    cluster: Cluster, synth_data, tmp_path, launcher: str
) -> None:
    cluster.no_train_workers()
    long = EPOCHS[launcher]
    # no final stage: 2 x 200 more epochs; test_faults' Ctrl-C test resumes into one
    exp = search_experiment(synth_data, "res", long, 2, launcher, False, max_concurrent_trials=1)
    write_yaml(tmp_path / "res.yaml", exp)
    out = tmp_path / "results" / "res"
    tune_dir = out / "ray" / "tune"

    def run_dir(trial_id: str) -> Path:
        return out / "ray" / "trials" / f"res_{trial_id}"

    def checkpointed(trial_id: str) -> bool:  # what a restarted trial resumes from
        if launcher == "auto":
            return bool(recorded_epochs(run_dir(trial_id)))
        return registered(run_dir(trial_id)) > 0

    log = tmp_path / "first.log"
    proc = start_msa(
        "tune",
        "res.yaml",
        "--address",
        cluster.address,
        cwd=tmp_path,
        log=log,
        TUNE_GLOBAL_CHECKPOINT_S="0.5",
    )

    def one_done_one_checkpointed():
        states = trial_states(tune_dir)
        done = [t for t, s in states.items() if s == "TERMINATED"]
        running = [t for t, s in states.items() if s == "RUNNING" and checkpointed(t)]
        return (done, running) if done and running else None

    try:
        done, running = wait_for(one_done_one_checkpointed, 300, "one trial done, one running", 0.1)
        os.kill(proc.pid, signal.SIGKILL)  # the driver crashes; the cluster stays up
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    cluster.no_train_workers()  # Ray ends the dead driver's actors
    before = {t: checkpoints(run_dir(t)) for t in done}
    assert not (out / "trials.csv").exists()

    proc = run_msa("tune", "res.yaml", "--resume", "--address", cluster.address, cwd=tmp_path)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-5000:]
    resumed = dict(re.findall(r"resumed from \S*/res[-_](\w+)/checkpoint_\S+ at epoch (\d+)", text))
    assert set(running) <= set(resumed), (running, resumed, text[-4000:])
    assert all(1 <= int(resumed[t]) < long for t in running)
    for trial_id in done:  # finished trials are kept, not run again
        assert checkpoints(run_dir(trial_id)) == before[trial_id]
        assert trial_id not in resumed
    trials = read_table(out / "trials.csv")
    assert len(trials) == 2 and (trials["status"] == "COMPLETE").all()
    assert (trials["epochs"] == long).all()
    history = read_table(out / "history.csv")
    for trial_id in trials["trial_id"]:
        assert set(history.loc[history["trial_id"] == trial_id, "epoch"]) == set(range(1, long + 1))
    assert (out / "best_config.yaml").is_file() and not (out / "final").exists()


@pytest.mark.slow  # pytest -m slow: in the extended run, not the default suite
def test_search_survives_losing_a_node(cluster: Cluster, synth_data, tmp_path) -> None:
    worker = cluster.two_nodes()
    cluster.no_train_workers()
    worker_id = cluster.worker_id
    exp = search_experiment(synth_data, "nl", LONG, samples=2, launcher="torch_trainer")
    write_yaml(tmp_path / "nl.yaml", exp)
    log = tmp_path / "nl.log"
    runs = tmp_path / "results" / "nl" / "ray" / "trials"
    proc = start_msa("tune", "nl.yaml", "--address", cluster.address, cwd=tmp_path, log=log)

    def latest(run_dir: Path) -> dict:
        return max(registered_metrics(run_dir), key=lambda m: m["epoch"], default={})

    def trial_mid_run_on_the_worker():
        for run_dir in runs.glob("nl_*"):
            last = latest(run_dir)
            if last.get("node_id") == worker_id and last["epoch"] <= LONG - 10:
                return run_dir.name.removeprefix("nl_")
        return None

    try:
        moved = wait_for(trial_mid_run_on_the_worker, 240, "a trial checkpointed on node 2", 0.05)
        worker.kill()  # the node goes away: its raylet, agents and Train worker
    except AssertionError as exc:
        proc.kill()
        seen = {d.name: latest(d) for d in runs.glob("nl_*")}
        raise AssertionError(f"{exc}; worker {worker_id}, latest checkpoints {seen}") from None
    except BaseException:
        proc.kill()
        raise
    text = finish(proc, log)
    assert [n["node_id"] for n in alive_nodes(cluster.dashboard)] == [cluster.head_id]
    trials = read_table(tmp_path / "results" / "nl" / "trials.csv")
    assert len(trials) == 2 and (trials["status"] == "COMPLETE").all(), trials.to_string()
    assert (trials["epochs"] == LONG).all()
    # the trial of the lost node went on from its checkpoint, on the head
    assert re.search(rf"resumed from \S*/nl_{moved}/checkpoint_\S+ at epoch \d+", text), text
    history = read_table(tmp_path / "results" / "nl" / "history.csv")
    mine = history[history["trial_id"] == moved].sort_values("epoch")
    assert set(mine["epoch"]) == set(range(1, LONG + 1))
    assert mine["node_id"].iloc[0] == worker_id
    assert mine["node_id"].iloc[-1] == cluster.head_id
    assert (tmp_path / "results" / "nl" / "final" / "metrics.json").is_file()
