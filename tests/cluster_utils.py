"""Real Ray clusters for tests: `ray start --block` nodes this test process owns and kills.

Every node runs with its own ``--temp-dir`` (so a plain ``ray.init()`` elsewhere on the machine
never finds and joins it: Ray looks for ``<temp-dir>/ray_current_cluster``) and free ports.
Teardown kills only the processes a node started: the ``ray start --block`` process, its
descendants, and any process whose command line names the node's temp dir. ``ray stop`` is never
used: it kills every Ray process on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray  # noqa: F401  (puts Ray's vendored psutil on sys.path)

# isort: split
import psutil

from workflows.runtime.jobs import use_token_auth

VENV_BIN = Path(sys.executable).parent
RAY = str(VENV_BIN / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    """Poll ``check`` until it returns something truthy; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as exc:  # noqa: BLE001 - keep polling, report the last one
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last_exc!r})")


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of `ray start`: `msa` and `ray` on PATH, no RAY_ADDRESS leaking in."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("RAY_DEDUP_LOGS", "0")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    # token auth on every node (a joining node does not turn it on by itself); the token is
    # ~/.ray/auth_token, shared by the nodes of this machine
    env["RAY_AUTH_MODE"] = "token"
    env.update(extra or {})
    return env


def run_cli(
    *args: str, cwd: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``python -m workflows ARGS`` in its own process (:func:`node_env`, no terminal on stdin)."""
    return subprocess.run(
        [sys.executable, "-m", "workflows", *args],
        cwd=cwd,
        env=node_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def background_cli(
    *args: str, cwd: Path, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen]:
    """``python -m workflows ARGS`` in the background, in its own session (a signal sent to
    the process reaches the driver alone), output to ``log``; SIGKILLed if it still runs when
    the block ends."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workflows", *args],
            cwd=cwd,
            env=node_env(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def epochs_saved(out: Path) -> int:
    """The latest epoch a search's (first) trial has checkpointed, from its run's record."""
    for record in (out / "ray" / "trials").glob("*/checkpoints.json"):
        return max((e["epoch"] for e in json.loads(record.read_text())["checkpoints"]), default=0)
    return 0


@dataclass
class RayNode:
    """One `ray start --block` node (head or worker) owned by this process."""

    proc: subprocess.Popen
    temp_dir: Path
    log: Path
    head: bool
    gcs_address: str
    dashboard_url: str | None = None
    pids: set[int] = field(default_factory=set)

    def processes(self) -> list[psutil.Process]:
        """The node's processes: `ray start`'s descendants and those naming its temp dir."""
        found: dict[int, psutil.Process] = {}
        try:
            root = psutil.Process(self.proc.pid)
            found[root.pid] = root
            for child in root.children(recursive=True):
                found[child.pid] = child
        except psutil.NoSuchProcess:
            pass
        marker = str(self.temp_dir)
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if any(marker in part for part in proc.info["cmdline"] or []):
                    found[proc.pid] = proc
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        found.pop(os.getpid(), None)
        self.pids |= set(found)
        return list(found.values())

    def kill(self, sig: int = signal.SIGKILL, grace_s: float = 0.0) -> None:
        """Stop every process of this node (SIGTERM first when ``grace_s`` > 0)."""
        procs = self.processes()
        if grace_s > 0:
            for p in procs:
                _signal(p, signal.SIGTERM)
            psutil.wait_procs(procs, timeout=grace_s)
            procs = [p for p in self.processes() if p.is_running()]
        for p in procs:
            _signal(p, sig)
        psutil.wait_procs(procs, timeout=10)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def remove(self) -> None:
        """Kill the node and delete its temp dir (session logs included)."""
        self.kill(grace_s=3)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _signal(p: psutil.Process, sig: int) -> None:
    try:
        p.send_signal(sig)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        pass


def _short_temp_dir(prefix: str) -> Path:
    # Unix socket paths are limited to ~107 bytes: keep the temp dir short, under /tmp
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class NodeStartError(RuntimeError):
    """`ray start` exited before the node was up."""


def start_node(
    *,
    head_address: str | None = None,
    dashboard_url: str | None = None,
    num_cpus: int = 1,
    resources: dict[str, float] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 90,
    attempts: int = 3,
) -> RayNode:
    """`ray start --block` a head (``head_address`` None) or a worker joining ``head_address``.

    The node's processes get RAY_API_SERVER_ADDRESS (the head's dashboard): Ray Train's
    placement group cleaner asks the State API without an address, which fails when several
    Ray instances run on one machine and none is in /tmp/ray/ray_current_cluster.
    A start that fails (a free port taken meanwhile by another process) is retried with new
    ports.
    """
    for attempt in range(attempts):
        try:
            return _start_node(head_address, dashboard_url, num_cpus, resources, env, timeout)
        except NodeStartError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _start_node(
    head_address: str | None,
    dashboard_url: str | None,
    num_cpus: int,
    resources: dict[str, float] | None,
    env: dict[str, str] | None,
    timeout: float,
) -> RayNode:
    temp_dir = _short_temp_dir("msah" if head_address is None else "msaw")
    log = temp_dir / "ray_start.log"
    cmd = [
        RAY,
        "start",
        "--block",
        f"--num-cpus={num_cpus}",
        f"--temp-dir={temp_dir}",
        "--object-store-memory=200000000",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        "--disable-usage-stats",
    ]
    if resources:
        cmd.append(f"--resources={json.dumps(resources)}")
    if head_address is None:
        port, dash = free_port(), free_port()
        gcs = f"127.0.0.1:{port}"
        dashboard_url = f"http://127.0.0.1:{dash}"
        cmd += [
            "--head",
            f"--port={port}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--ray-client-server-port={free_port()}",
        ]
    else:
        gcs = head_address
        cmd.append(f"--address={head_address}")
    api = {"RAY_API_SERVER_ADDRESS": dashboard_url} if dashboard_url else {}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=node_env({**api, **(env or {})}),
            start_new_session=True,
        )
    head = head_address is None
    node = RayNode(proc, temp_dir, log, head, gcs, dashboard_url if head else None)
    deadline = time.monotonic() + timeout
    try:
        while not _started(node):
            if time.monotonic() > deadline:
                raise AssertionError(f"`{' '.join(cmd)}` not up after {timeout:.0f}s (log: {log})")
            time.sleep(0.5)
    except BaseException:
        node.kill()
        raise
    return node


def _started(node: RayNode) -> bool:
    if node.proc.poll() is not None:
        raise NodeStartError(f"ray start exited {node.proc.returncode}:\n{node.log.read_text()}")
    if "Ray runtime started" not in node.log.read_text():
        return False
    if node.dashboard_url:
        import urllib.request

        # the dashboard answers (auth or not) once its HTTP server is up
        try:
            urllib.request.urlopen(f"{node.dashboard_url}/api/version", timeout=2)
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
    return True


def alive_nodes(dashboard_url: str) -> list[dict[str, Any]]:
    """The cluster's ALIVE nodes through the State API (explicit address: several clusters run)."""
    from ray.util.state import list_nodes

    use_token_auth()
    return [
        n.__dict__ if hasattr(n, "__dict__") else dict(n)
        for n in list_nodes(
            address=dashboard_url,
            filters=[("state", "=", "ALIVE")],
            raise_on_missing_output=False,  # dead nodes count in the total: not an error
        )
    ]


TRAIN_WORKER = "RayTrainWorker"  # a TorchTrainer's worker actor
TUNE_TRIAL = "ImplicitFunc"  # a Tune function trial's actor (trains itself when in-trial)


def alive_actors(dashboard_url: str, class_name: str = TRAIN_WORKER) -> list[Any]:
    """ALIVE actors of a class on the cluster (pid and node_id)."""
    from ray.util.state import list_actors

    use_token_auth()
    return list_actors(
        address=dashboard_url,
        filters=[("class_name", "=", class_name), ("state", "=", "ALIVE")],
        raise_on_missing_output=False,
    )
