"""Joining or starting a Ray cluster with safe defaults."""

from __future__ import annotations

import os
import socket
from typing import Any

import ray

__all__ = ["connect", "dashboard_url", "DRIVER_RESOURCE", "driver_resources", "RUNTIME_ENV_VARS"]

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


def connect(address: str | None = None, num_cpus: int | None = None, quiet: bool = False) -> Any:
    """``ray.init`` for the CLI: join ``address`` (or ``RAY_ADDRESS``), else start a local cluster.

    A local cluster's dashboard binds to 127.0.0.1 (reach a remote head through an SSH tunnel);
    the dashboard must run, Ray Train uses it to free the workers of trials stopped early.
    Ray's token authentication is left on. Returns Ray's context.
    """
    if ray.is_initialized():
        return ray.get_runtime_context()
    # a variable already set wins (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=2 restores Ray's default);
    # the local raylet's processes inherit os.environ, every worker gets the runtime env
    env_vars = {key: os.environ.setdefault(key, value) for key, value in RUNTIME_ENV_VARS.items()}
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ctx = ray.init(address=address, runtime_env={"env_vars": env_vars})
    else:
        # nothing drains a local node: skip the preemption watcher actor each Train run starts
        env_vars[PREEMPTION_ENV_VAR] = os.environ.setdefault(PREEMPTION_ENV_VAR, "0")
        ctx = _start_local(env_vars, num_cpus)
    url = dashboard_url(ctx)
    if url and not quiet:
        print(f"[msa] Ray dashboard: {url}", flush=True)
    return ctx


def _start_local(env_vars: dict[str, str], num_cpus: int | None) -> Any:
    """A new local cluster (``address="local"``: never one a ``ray start`` left running).

    Ray Train frees the workers of a stopped trial after asking the State API whether its
    controller died; with several Ray instances on one machine that lookup fails unless the API
    server is named, so the dashboard gets a known port (a second try if it was taken meanwhile).
    """
    for attempt in range(2):
        port = _free_port(8265 if attempt == 0 else 0)
        env_vars["RAY_API_SERVER_ADDRESS"] = os.environ["RAY_API_SERVER_ADDRESS"] = (
            f"http://127.0.0.1:{port}"
        )
        try:
            return ray.init(
                address="local",
                include_dashboard=True,
                dashboard_host="127.0.0.1",
                dashboard_port=port,
                num_cpus=num_cpus,
                resources={DRIVER_RESOURCE: DRIVER_SLOTS},
                runtime_env={"env_vars": env_vars},
            )
        except ValueError as exc:
            if attempt or "already occupied" not in str(exc):
                raise
    raise AssertionError("unreachable")


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
