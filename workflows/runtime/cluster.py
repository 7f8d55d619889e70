"""Joining or starting a Ray cluster with safe defaults."""

from __future__ import annotations

import contextlib
import inspect
import os
import secrets
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray

from workflows.runtime import watchdog
from workflows.runtime.jobs import token_hint
from workflows.runtime.reporter import console_env, logging_level, quiet_driver
from workflows.signals import handle_sigterm

__all__ = [
    "connect",
    "dashboard_url",
    "secure_token_file",
    "DRIVER_RESOURCE",
    "driver_resources",
    "RUNTIME_ENV_VARS",
    "check_feasible",
]

# A Tune trial that drives a TorchTrainer only waits on it; the workers hold the CPUs and GPUs.
# A custom resource gives drivers their own slots so they never take a worker's CPU (Tune
# refuses a trial that asks for nothing). Local clusters get it; start remote nodes with
# `ray start --resources='{"msa_driver": 64}'`, else drivers fall back to a sliver of a CPU.
DRIVER_RESOURCE = "msa_driver"
DRIVER_SLOTS = 1000
FALLBACK_DRIVER_CPU = 0.01

# Ray Train's controller polls its workers every 2 s by default; on short trials that idles the
# CPUs for seconds at every start and end. 0.2 s removes most of it.
RUNTIME_ENV_VARS = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "TOKENIZERS_PARALLELISM": "false"}
PREEMPTION_ENV_VAR = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"


def connect(
    address: str | None = None,
    num_cpus: int | None = None,
    quiet: bool = False,
    name: str | None = None,
) -> Any:
    """``ray.init`` for the CLI: join ``address`` (or ``RAY_ADDRESS``), else start a local cluster.

    A local cluster's dashboard binds to 127.0.0.1 (reach a remote head through an SSH tunnel);
    the dashboard must run, Ray Train uses it to free the workers of trials stopped early.
    A local cluster's processes end with this process, however it ends (:mod:`.watchdog`).
    Ray's token authentication is left on. The job carries ``name`` (the experiment's) in its
    metadata (``job_name``); the console follows ``--verbose`` (:mod:`.reporter`). Prints the
    dashboard's URL and where its token is (unless ``quiet``). Returns Ray's context.
    """
    if ray.is_initialized():
        return ray.get_runtime_context()
    secure_token_file(create=not (address or os.environ.get("RAY_ADDRESS")))
    # a variable already set wins (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=2 restores Ray's default);
    # the local raylet's processes inherit os.environ, every worker gets the runtime env
    env_vars = {key: os.environ.setdefault(key, value) for key, value in RUNTIME_ENV_VARS.items()}
    env_vars.update(console_env())
    quiet_driver()
    job = {
        "job_config": ray.job_config.JobConfig(metadata={"job_name": name} if name else None),
        "logging_level": logging_level(),
    }
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ctx = ray.init(address=address, runtime_env={"env_vars": env_vars}, **job)
    else:
        # nothing drains a local node: skip the preemption watcher actor each Train run starts
        env_vars[PREEMPTION_ENV_VAR] = os.environ.setdefault(PREEMPTION_ENV_VAR, "0")
        before = watchdog.children()
        try:
            ctx = _start_local(env_vars, num_cpus, job)
        finally:  # what an interrupted or failed ray.init started too
            watchdog.guard(before)  # its processes end with this one, even a SIGKILLed one
    handle_sigterm()  # ray.init made SIGTERM a sys.exit anywhere in the driver
    url = dashboard_url(ctx)
    if url and not quiet:
        token = token_hint()
        print(f"[msa] Ray dashboard: {url}" + (f" (token: {token})" if token else ""), flush=True)
    return ctx


def _start_local(env_vars: dict[str, str], num_cpus: int | None, job: dict[str, Any]) -> Any:
    """A new local cluster (``address="local"``: never one a ``ray start`` left running).

    Ray Train frees the workers of a stopped trial after asking the State API whether its
    controller died; with several Ray instances on one machine that lookup fails unless the API
    server is named, so the dashboard gets a known port. Another process can take it between
    the check and the dashboard's start: Ray then refuses it at once ("already occupied") or its
    dashboard fails to start; either way the cluster is shut down and started once more on
    another free port. Every other port of the node is one the OS gives (:func:`_agent_port`).
    """
    for attempt in range(2):
        port = _free_port(8265 if attempt == 0 else 0)
        env_vars["RAY_API_SERVER_ADDRESS"] = os.environ["RAY_API_SERVER_ADDRESS"] = (
            f"http://127.0.0.1:{port}"
        )
        try:
            with _agent_port():
                return ray.init(
                    address="local",
                    include_dashboard=True,
                    dashboard_host="127.0.0.1",
                    dashboard_port=port,
                    num_cpus=num_cpus,
                    resources={DRIVER_RESOURCE: DRIVER_SLOTS},
                    runtime_env={"env_vars": env_vars},
                    **job,
                )
        except Exception as exc:
            if attempt or not _port_lost(exc):
                raise
            ray.shutdown()
            print(f"[msa] dashboard port {port} was taken while Ray started; trying another")
    raise AssertionError("unreachable")


@contextlib.contextmanager
def _agent_port() -> Iterator[None]:
    """Within: a new node's dashboard agent listens on a port the OS gives, not on 52365.

    The dashboard reads each actor's log through its node's agent; with another Ray instance
    on the machine holding 52365, the agent cannot start and every log pane says "Failed to
    load". ``ray start --dashboard-agent-listen-port`` sets the port, ``ray.init`` has no
    option for it: its node parameters default to 52365, here to None, which the node turns
    into 0 (as Ray's own ``cluster_utils`` does for a second node on one machine). The other
    ports ``ray.init`` leaves to Ray (GCS, raylet, object manager, workers, metrics export,
    the agent's gRPC, the runtime env agent) are already 0, chosen by the OS. Nothing changes
    where Ray's parameters differ from 2.60's.
    """
    from ray._private import parameter

    original = parameter.RayParams.__init__
    if "dashboard_agent_listen_port" not in inspect.signature(original).parameters:
        yield
        return

    def init(self: Any, *args: Any, dashboard_agent_listen_port: int | None = None, **kw: Any):
        original(self, *args, dashboard_agent_listen_port=dashboard_agent_listen_port, **kw)

    parameter.RayParams.__init__ = init
    try:
        yield
    finally:
        parameter.RayParams.__init__ = original


def _port_lost(exc: Exception) -> bool:
    """Whether ``ray.init`` failed because the dashboard could not have its port."""
    text = str(exc)  # Ray's own port check, or its dashboard's log tail after a failed start
    return "already occupied" in text or "dashboard.log" in text


def secure_token_file(create: bool) -> None:
    """Keep Ray's auth token private: the file 0600, ``~/.ray`` 0700 (Ray writes 0644/0755).

    With ``create`` (a new local cluster that will use token authentication and no token yet)
    the token is written here, private from the start; Ray then reads it instead of writing
    its own. A token given by RAY_AUTH_TOKEN, or a cluster with RAY_AUTH_MODE other than
    ``token``, is left alone; only files of the current user are changed.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if (mode is not None and mode.lower() != "token") or os.environ.get("RAY_AUTH_TOKEN"):
        return
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        _tighten(Path(os.environ["RAY_AUTH_TOKEN_PATH"]).expanduser(), 0o600)
        return
    path = Path.home() / ".ray" / "auth_token"
    if create and not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))  # as `ray get-auth-token --generate`: 256 bits
    _tighten(path.parent, 0o700)
    _tighten(path, 0o600)


def _tighten(path: Path, allowed: int) -> None:
    """Drop the permission bits of ``path`` outside ``allowed``, if it exists and is ours."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & ~allowed:
        path.chmod(stat.S_IMODE(info.st_mode) & allowed)


def _free_port(preferred: int) -> int:
    """``preferred`` when nothing listens there on 127.0.0.1, else a free port."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]


def driver_resources() -> dict[str, float]:
    """Resources of one Tune trial's driver on the connected cluster."""
    if ray.cluster_resources().get(DRIVER_RESOURCE, 0) >= 1:
        return {"CPU": 0, DRIVER_RESOURCE: 1}
    return {"CPU": FALLBACK_DRIVER_CPU}


def dashboard_url(ctx: Any) -> str | None:
    """The dashboard's http URL from a ``ray.init`` context, when it runs."""
    url = getattr(ctx, "dashboard_url", None)
    if not url:
        return None
    return url if url.startswith("http") else f"http://{url}"


def check_feasible(exp: Any, in_trial: bool = False) -> None:
    """Refuse a run whose resources the connected cluster can never give (it would wait forever).

    Each Train worker (or a trial that trains in its own process) needs ``train.cpus_per_worker``
    CPUs (and ``gpus_per_worker`` GPUs with ``use_gpu``) on one node, and all ``num_workers``
    together must fit the cluster.

    Raises:
        ConfigError: Naming the key, what it asks and what the cluster has.
    """
    from msa_model.config import ConfigError

    train = exp.train
    need = {"CPU": train.cpus_per_worker}
    if train.use_gpu:
        need["GPU"] = train.gpus_per_worker
    workers = 1 if in_trial else train.num_workers
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    for key, amount in need.items():
        setting = "cpus_per_worker" if key == "CPU" else "gpus_per_worker"
        largest = max((n.get(key, 0.0) for n in nodes), default=0.0)
        total = sum(n.get(key, 0.0) for n in nodes)
        if largest < amount or total < amount * workers:
            raise ConfigError(
                f"train.{setting}: each of the {workers} worker(s) needs {amount:g} {key}, the "
                f"cluster has {total:g} {key} (at most {largest:g} on one node): the run could "
                f"never start; lower train.{setting} or train.num_workers, or give the cluster "
                f"more (--num-cpus)"
            )
