"""Joining or starting a Ray cluster with safe defaults."""

from __future__ import annotations

import os
from typing import Any

import ray

__all__ = ["connect", "dashboard_url"]


def connect(address: str | None = None, num_cpus: int | None = None, quiet: bool = False) -> Any:
    """``ray.init`` for the CLI: join ``address`` (or ``RAY_ADDRESS``), else start a local cluster.

    A local cluster's dashboard binds to 127.0.0.1 (reach a remote head through an SSH tunnel);
    Ray's token authentication is left as configured. Returns Ray's context.
    """
    if ray.is_initialized():
        return ray.get_runtime_context()
    address = address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"log_to_driver": True}
    if address:
        kwargs["address"] = address
    else:
        kwargs.update(include_dashboard=True, dashboard_host="127.0.0.1", num_cpus=num_cpus)
    ctx = ray.init(**kwargs)
    url = dashboard_url(ctx)
    if url and not quiet:
        print(f"[msa] Ray dashboard: {url}", flush=True)
    return ctx


def dashboard_url(ctx: Any) -> str | None:
    """The dashboard's http URL from a ``ray.init`` context, when it runs."""
    url = getattr(ctx, "dashboard_url", None)
    if not url:
        return None
    return url if url.startswith("http") else f"http://{url}"
