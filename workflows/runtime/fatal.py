"""Trial errors that would repeat: recorded once, never trained again on a retry.

Tune restarts a failed trial (``FailureConfig.max_failures``) whatever the error. A bad config,
a dataset error, an unreadable checkpoint or a non-finite loss (``FloatingPointError``) would
fail the same way again, so :func:`run_once` records it in the run's folder
(``failed.json``) and a restarted trial raises it again at once instead of training.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pyarrow.fs

from msa_model.checkpoint import CheckpointError
from msa_model.config import ConfigError
from msa_model.data import DatasetError
from msa_model.weights import RemoteCodeRefusedError, WeightsNotFoundError

__all__ = [
    "DETERMINISTIC",
    "RECORD",
    "RepeatedError",
    "deterministic",
    "forget_failure",
    "run_once",
]

DETERMINISTIC = (
    ConfigError,
    DatasetError,
    CheckpointError,
    FloatingPointError,
    WeightsNotFoundError,
    RemoteCodeRefusedError,
)
RECORD = "failed.json"


class RepeatedError(RuntimeError):
    """A deterministic error an earlier attempt of the run recorded, raised without retrying."""


def deterministic(exc: BaseException) -> BaseException | None:
    """The deterministic error behind ``exc`` (its causes, a Train worker's failure), or None."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, (*DETERMINISTIC, RepeatedError)):
            return err
        todo += [err.__cause__, err.__context__]
        todo += list(getattr(err, "worker_failures", {}).values())  # ray.train.WorkerGroupError
    return None


def run_once(run_dir: str, train: Callable[[], None]) -> None:
    """Call ``train``; record a deterministic error in ``run_dir`` and raise it on every retry.

    Args:
        run_dir: The run's folder (a path or an ``s3://``/``gs://`` URI).
        train: The run.

    Raises:
        RepeatedError: An earlier attempt of this run recorded a deterministic error.
    """
    fs, root = pyarrow.fs.FileSystem.from_uri(run_dir.rstrip("/"))
    record = f"{root}/{RECORD}"
    try:
        with fs.open_input_stream(record) as f:
            earlier = json.loads(f.read().decode())["error"]
    except FileNotFoundError:
        earlier = None
    if earlier is not None:
        raise RepeatedError(f"{earlier} (an earlier attempt failed so; not retried)")
    try:
        train()
    except Exception as exc:
        cause = deterministic(exc)
        if cause is not None:
            fs.create_dir(root, recursive=True)
            with fs.open_output_stream(record) as f:
                text = f"{type(cause).__name__}: {cause}"
                f.write(json.dumps({"error": text}).encode())
        raise


def forget_failure(run_dir: str) -> None:
    """Delete the run's recorded error: a new command (the user fixed its cause) tries again."""
    fs, root = pyarrow.fs.FileSystem.from_uri(run_dir.rstrip("/"))
    if fs.get_file_info(f"{root}/{RECORD}").type != pyarrow.fs.FileType.NotFound:
        fs.delete_file(f"{root}/{RECORD}")
