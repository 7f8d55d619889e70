"""Ray jobs: ``msa tune CONFIG`` submitted to a cluster's job server (``msa submit``).

A thin wrapper over :class:`ray.job_submission.JobSubmissionClient`, equivalent to::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- msa tune CONFIG ...

The working directory is uploaded (without results/, data/, caches, virtual environments, and,
at any depth, .git/ and secrets: env files, keys, cloud, cluster and database credentials, shell
histories, Ray's token; never / or $HOME; no symbolic link in it may lead out or loop; files
over 100 MiB are named before the upload; every request to the job server times out) and
becomes the job's current directory on the head node, so CONFIG must be a path inside it. The
job writes its results to an absolute ``--results`` folder (default: ``<working dir>/results``
as seen from here), not into the uploaded copy, which Ray may delete; on a remote cluster pass a
folder the head node can write (``-- --results /shared/results``) and ``--storage`` for
multi-node runs. Data paths that point into an excluded folder are passed as absolute paths (the
cluster must see them: same machine or shared storage).
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from msa_model.config import ConfigError
from msa_model.constants import DATA_PATH_KEYS

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_EXCLUDES",
    "default_address",
    "use_token_auth",
    "prepare_submission",
    "submit",
    "token_hint",
    "upload_listing",
]

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# gitignore-style patterns relative to the working dir (Ray also honours .gitignore/.rayignore)
DEFAULT_EXCLUDES = [
    "/results/",
    "/data/",
    ".git/",  # any depth: a nested clone's history and its credentials
    "__pycache__/",
    "*.egg-info/",
    ".pytest_cache/",
    ".ruff_cache/",
    # environments (any folder holding a pyvenv.cfg is excluded too)
    ".venv/",
    "venv/",
    ".conda/",
    ".tox/",
    "node_modules/",
    # secrets, at any depth: env files, keys, cloud, cluster and database credentials, shell
    # histories, Ray's token
    ".env",
    ".env.*",
    ".envrc",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "*.jks",
    "*.keystore",
    "id_rsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "id_dsa*",
    ".ssh/",
    ".gnupg/",
    ".aws/",
    ".azure/",
    ".kube/",
    ".docker/",
    ".config/gcloud/",
    ".ray/",
    "auth_token",
    ".netrc",
    ".pgpass",
    ".my.cnf",
    ".pypirc",
    ".npmrc",
    ".s3cfg",
    ".boto",
    ".git-credentials",
    "credentials",
    "credentials.*",
    "*credentials*.json",
    "*service-account*.json",
    "kubeconfig",
    "kubeconfig.*",
    "*.kubeconfig",
    "secrets.yaml",
    "secrets.yml",
    "secrets.json",
    "secrets.toml",
    ".*history",  # .bash_history, .zsh_history, .python_history, .psql_history, ...
    "*.tfstate",
    "*.tfstate.*",
]
LARGE_FILE_BYTES = 100 * 2**20  # named before the upload: --exclude them if the job needs none
HTTP_TIMEOUT_S = 30.0  # every request to the job server: one that never answers fails, not hangs
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def default_address() -> str:
    """The job server: RAY_API_SERVER_ADDRESS, an http RAY_ADDRESS, else the local dashboard."""
    for key in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
        value = os.environ.get(key, "")
        if value.startswith(("http://", "https://")):
            return value
    return DEFAULT_ADDRESS


def _config_in_working_dir(config: Path, working_dir: Path, excludes: list[str]) -> str:
    """CONFIG as a POSIX path relative to the working dir; ConfigError when it is not uploaded."""
    wd = working_dir.expanduser().resolve()
    if not wd.is_dir():
        raise ConfigError(f"--working-dir {working_dir}: not a directory")
    path = config.expanduser()
    absolute = (path if path.is_absolute() else Path.cwd() / path).resolve()
    if not absolute.is_file():
        raise ConfigError(f"{config}: no such file")
    try:
        rel = absolute.relative_to(wd).as_posix()
    except ValueError:
        raise ConfigError(
            f"{config}: the config must be inside the working dir {wd} (the job runs in an "
            f"uploaded copy of it); move the file there or pass --working-dir"
        ) from None
    if _excluded(rel, excludes):
        raise ConfigError(
            f"{config}: {rel} is in a folder that is not uploaded ({', '.join(excludes)}); "
            f"put the config elsewhere in {wd}"
        )
    return rel


def _excluded(rel: str, excludes: list[str]) -> bool:
    from ray._private.thirdparty.pathspec import PathSpec  # the matcher Ray's upload uses

    return PathSpec.from_lines("gitwildmatch", excludes).match_file(rel)


def upload_listing(wd: Path, excludes: list[str]) -> dict[str, Any]:
    """What ``msa submit`` uploads from ``wd``, as Ray packs it (symbolic links followed).

    Returns ``{"files", "bytes", "environments", "large"}``: the file count and size, the
    virtual environments found (as exclude patterns), and the files over
    :data:`LARGE_FILE_BYTES` (``(relative path, bytes)``).

    Raises:
        ConfigError: ``wd`` is ``/`` or the home folder, a symbolic link in it leads outside,
            or a linked folder contains itself (Ray would pack it again and again).
    """
    from ray._private.thirdparty.pathspec import PathSpec

    if wd in (Path(wd.anchor), Path.home().resolve()):
        raise ConfigError(
            f"--working-dir {wd}: refusing to upload / or the home folder (keys, credentials, "
            "every project); pass the project's folder"
        )
    spec = PathSpec.from_lines("gitwildmatch", excludes)
    listing: dict[str, Any] = {"files": 0, "bytes": 0, "environments": [], "large": []}
    _walk(wd, wd, "", spec, (wd,), listing)
    return listing


def _walk(
    wd: Path, here: Path, prefix: str, spec: Any, real: tuple[Path, ...], listing: dict
) -> None:
    """List ``here`` (``prefix`` relative to ``wd``; ``real``: the resolved folders above)."""
    for path in sorted(here.iterdir()):
        rel = prefix + path.name
        if path.is_dir():
            if spec.match_file(rel + "/"):
                continue
            if (path / "pyvenv.cfg").is_file():
                listing["environments"].append(f"/{rel}/")
                continue
        elif spec.match_file(rel):
            continue
        target = path.resolve()
        if path.is_symlink():
            if not target.is_relative_to(wd):
                raise ConfigError(
                    f"{path}: a symbolic link leading out of the working dir (to {target}); "
                    "remove it or --exclude it"
                )
            if target in real:
                raise ConfigError(
                    f"{path}: a symbolic link to {target}, a folder that contains it: Ray would "
                    "pack it inside itself again and again; remove it or --exclude it"
                )
        if path.is_dir():
            _walk(wd, path, rel + "/", spec, (*real, target), listing)
        elif path.is_file():
            size = path.stat().st_size
            listing["files"] += 1
            listing["bytes"] += size
            if size > LARGE_FILE_BYTES:
                listing["large"].append((rel, size))


def _data_overrides(exp: Any, working_dir: Path, excludes: list[str]) -> list[str]:
    """``--set`` values making relative data paths into excluded folders absolute."""
    sets = []
    wd = working_dir.expanduser().resolve()
    for key in DATA_PATH_KEYS:
        value = getattr(exp.data, key, None)
        if not value or os.path.isabs(os.path.expanduser(str(value))):
            continue
        rel = Path(value).as_posix()
        if _excluded(rel, excludes):
            absolute = (wd / rel).resolve()
            sets.append(f"data.{key}={absolute}")
    return sets


def prepare_submission(
    config: Path,
    working_dir: Path = Path("."),
    sets: list[str] | None = None,
    tune_args: list[str] | None = None,
    exclude: list[str] | None = None,
) -> dict[str, Any]:
    """Validate the experiment here and build the job: entrypoint, runtime_env, notes.

    Returns ``{"entrypoint", "runtime_env", "results", "notes", "name"}``; ConfigError on a bad
    config (the same checks `msa tune` makes, before anything is uploaded).
    """
    from workflows.experiment import load_experiment

    sets = list(sets or [])
    tune_args = list(tune_args or [])
    excludes = DEFAULT_EXCLUDES + list(exclude or [])
    rel = _config_in_working_dir(config, working_dir, excludes)
    upload = upload_listing(working_dir.expanduser().resolve(), excludes)
    excludes += upload["environments"]
    exp = load_experiment(config, sets)
    if exp.search is None:
        raise ConfigError(f"{config}: no `search` section; msa submit runs `msa tune`")
    notes = [
        f"uploading {upload['files']} files, {upload['bytes'] / 2**20:.1f} MiB (secrets, "
        f"environments and {', '.join(DEFAULT_EXCLUDES[:3])} excluded; more with --exclude)"
    ]
    for rel, size in upload["large"]:
        notes.append(
            f"large file uploaded: {rel} ({size / 2**20:.0f} MiB); --exclude {rel} if the job "
            "does not need it"
        )
    data_sets = _data_overrides(exp, working_dir, excludes)
    for item in data_sets:
        notes.append(
            f"{item.split('=')[0]} is not uploaded: the job reads {item.split('=', 1)[1]} (the "
            f"cluster must see it: same machine or shared storage)"
        )
    wd = working_dir.expanduser().resolve()
    if "--results" in tune_args or any(a.startswith("--results=") for a in tune_args):
        results = None
    else:
        results = wd / "results"
        tune_args = ["--results", str(results), *tune_args]
        notes.append(
            f"results go to {results / exp.name} on the head node (pass `-- --results DIR` to "
            f"change it; add `--storage DIR_OR_URI` for a multi-node cluster)"
        )
    command = ["msa", "tune", rel]
    for item in sets + data_sets:
        command += ["--set", item]
    command += tune_args
    runtime_env = {
        "working_dir": str(wd),
        "excludes": excludes,
        "env_vars": {"PYTHONUNBUFFERED": "1"},
    }
    return {
        "entrypoint": shlex.join(command),
        "runtime_env": runtime_env,
        "results": results,
        "notes": notes,
        "name": exp.name,
    }


def token_hint() -> str | None:
    """Where the dashboard's token is (its file, or ``$RAY_AUTH_TOKEN``); None without token auth.

    The dashboard and its API ask for the token: paste it at the login prompt, or send it as an
    ``Authorization: Bearer`` header.
    """
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.lower() != "token":
        return None
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "$RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return os.environ["RAY_AUTH_TOKEN_PATH"]
    path = Path.home() / ".ray" / "auth_token"
    return str(path) if path.is_file() else None


def use_token_auth() -> None:
    """Send Ray's auth token with every request when one is available.

    Like ``ray start --head``: with RAY_AUTH_MODE unset, a token in RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token turns token mode on for this process (a client
    otherwise sends no token and a token-protected job server answers 401).
    """
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # another Ray version: RAY_AUTH_MODE=token must be set by hand
        return
    import logging

    log = logging.getLogger(maybe_enable_token_auth_if_token_available.__module__)
    level = log.level
    log.setLevel(logging.ERROR)  # its warning speaks of starting a cluster, not of a client
    try:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        log.setLevel(level)


def _client(address: str):
    from ray.job_submission import JobSubmissionClient

    class TimedClient(JobSubmissionClient):
        """Every request with a timeout (Ray's client sends them without one)."""

        def _do_request(self, method: str, endpoint: str, **kwargs: Any) -> Any:
            import requests

            kwargs.setdefault("timeout", HTTP_TIMEOUT_S)
            try:
                return super()._do_request(method, endpoint, **kwargs)
            except requests.exceptions.Timeout:
                raise ConnectionError(
                    f"the Ray job server at {address} did not answer within "
                    f"{HTTP_TIMEOUT_S:g} s ({method} {endpoint})"
                ) from None

    use_token_auth()
    try:
        return TimedClient(address)
    except Exception as exc:  # ConnectionError, or an auth error as RuntimeError
        raise ConnectionError(
            f"cannot reach the Ray job server at {address}: {exc}".strip()
            + "\n  start a cluster with `ray start --head --dashboard-host 127.0.0.1`, reach a "
            "remote one through `ssh -L 8265:127.0.0.1:8265 user@head`, and check "
            "`ray get-auth-token` matches the cluster's token"
        ) from None


def follow(client: Any, job_id: str, out=sys.stdout, poll_s: float = 1.0) -> str:
    """Print the job's logs as they come, until it ends; returns its final status."""
    import asyncio

    async def tail() -> None:
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()

    try:
        asyncio.run(tail())
    except Exception as exc:  # the log stream broke (e.g. network): fall back to polling
        print(f"[msa] log stream ended ({exc}); polling the job status", file=sys.stderr)
    while True:
        status = str(client.get_job_status(job_id))
        status = status.split(".")[-1]
        if status in TERMINAL:
            return status
        time.sleep(poll_s)


def submit(
    config: Path,
    address: str | None = None,
    working_dir: Path = Path("."),
    sets: list[str] | None = None,
    tune_args: list[str] | None = None,
    exclude: list[str] | None = None,
    wait: bool = False,
    out=sys.stdout,
) -> int:
    """Submit ``msa tune CONFIG`` as a Ray job; print how to follow it.

    Returns 0 after submitting, or with ``wait`` 0 when the job SUCCEEDED and 1 otherwise.
    """
    address = (address or default_address()).rstrip("/")
    job = prepare_submission(config, working_dir, sets, tune_args, exclude)
    for note in job["notes"]:  # before the upload: what goes, what is large
        print(f"[msa] note: {note}", file=out, flush=True)
    client = _client(address)
    job_id = client.submit_job(
        entrypoint=job["entrypoint"],
        runtime_env=job["runtime_env"],
        # the dashboard's Jobs view names a job by its submission id: the experiment's
        submission_id=f"{job['name']}_{time.strftime('%Y%m%d-%H%M%S')}",
        metadata={"msa_experiment": job["name"], "job_name": job["name"]},
    )
    print(f"[msa] submitted job {job_id}: {job['entrypoint']}", file=out)
    token = token_hint()
    hint = f" (token: {token})" if token else ""
    print(f"[msa] dashboard: {address}/#/jobs/{job_id}{hint}", file=out)
    print(f"[msa] follow the logs: ray job logs -f {job_id} --address {address}", file=out)
    print(
        f"[msa] status / stop: ray job status {job_id} --address {address} | "
        f"ray job stop {job_id} --address {address}",
        file=out,
        flush=True,
    )
    if not wait:
        return 0
    try:
        status = follow(client, job_id, out)
    except KeyboardInterrupt:
        print(
            f"\n[msa] stopped following; job {job_id} keeps running "
            f"(ray job stop {job_id} --address {address})",
            file=out,
        )
        return 130
    print(f"[msa] job {job_id} {status}", file=out, flush=True)
    return 0 if status == "SUCCEEDED" else 1
