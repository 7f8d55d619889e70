"""Results folders that msa created, the rules for reusing or replacing one, and its lock.

Every results folder msa creates holds ``.msa-results`` (a JSON marker naming the command).
One rule for every command that writes a results folder (``msa train``, ``tune``, ``demo``,
``export --out DIR``): msa writes only into a folder it created. An existing non-empty folder
without the marker (one that is not an older msa search with Tune's state, on ``--resume``) is
refused and never marked, and so is a symbolic link in its place. A folder is reused only with
``--resume`` and replaced only with ``--overwrite``, which deletes only a folder msa created.

While a run writes a folder it holds ``.msa-lock`` (its pid, host and command): a second run on
the same folder refuses at once, naming the holder; the lock of a dead process on this host is
taken over.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import time
from pathlib import Path

from msa_model.config import ConfigError
from workflows.errors import ResultsFolderError
from workflows.experiment import Experiment, load_experiment

__all__ = [
    "LOCK",
    "MARKER",
    "check_ownership",
    "claim_results_dir",
    "created_by",
    "lock_results_dir",
    "mark_created",
    "prepare_results_dir",
    "release_lock",
    "remove_stored",
]

MARKER = ".msa-results"
LOCK = ".msa-lock"
_OWN = (MARKER, LOCK)
_HELD: set[Path] = set()  # the locks this process holds, released at exit


def mark_created(folder: Path, command: str) -> None:
    """Create ``folder`` (if needed) and mark it as made by ``command`` (e.g. ``"msa train"``)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / MARKER
    if not marker.is_file():
        marker.write_text(json.dumps({"created_by": command}) + "\n")


def created_by(folder: Path) -> str | None:
    """The command that created ``folder`` per its marker; None without a (readable) marker."""
    try:
        return str(json.loads((folder / MARKER).read_text())["created_by"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _has_content(folder: Path) -> bool:
    """Whether ``folder`` exists and holds more than msa's marker and lock (or is not a folder)."""
    if not folder.exists():
        return False
    return not folder.is_dir() or any(p.name not in _OWN for p in folder.iterdir())


def check_ownership(out: Path, resume: bool = False) -> None:
    """Refuse ``out`` unless msa may write into it; nothing is written.

    Raises:
        ResultsFolderError: ``out`` is a symbolic link or not a folder, or an existing non-empty
            folder without the marker (on ``resume``, one holding Tune's state is accepted).
    """
    if out.is_symlink():
        raise ResultsFolderError(
            f"{out} is a symbolic link (to {os.readlink(out)}): msa writes only into results "
            "folders it created; remove the link or choose another name (or --results)"
        )
    if out.exists() and not out.is_dir():
        raise ResultsFolderError(f"{out} exists and is not a folder; choose another name")
    if not _has_content(out) or created_by(out) is not None:
        return
    if resume and (out / "ray" / "tune").is_dir():  # a search of an msa without markers
        return
    raise ResultsFolderError(
        f"{out} exists, is not empty and msa did not create it (no {MARKER} marker): refusing "
        "to write into it; choose another name (or --results) or move its files away"
    )


def _alive(holder: dict) -> bool:
    """Whether the lock's process still runs (always True for another host: not checkable)."""
    if holder.get("host") != socket.gethostname():
        return True
    import psutil

    try:
        started = psutil.Process(int(holder["pid"])).create_time()
    except (psutil.NoSuchProcess, ValueError, KeyError, TypeError):
        return False
    since = holder.get("since_epoch")  # another process that got the pid since: not the holder
    return not isinstance(since, (int, float)) or abs(started - since) < 1


def _read_lock(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def lock_results_dir(out: Path, command: str) -> None:
    """Hold ``out/.msa-lock`` for this process (created with ``out`` if missing).

    Re-entrant within one process; released by :func:`release_lock` or at exit.

    Raises:
        ResultsFolderError: Another live process holds it (naming its pid, host and command).
    """
    import psutil

    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "since_epoch": psutil.Process().create_time(),
    }
    tmp = out / f"{LOCK}.{os.getpid()}"
    tmp.write_text(json.dumps(me))
    try:
        for _ in range(20):
            try:
                os.link(tmp, path)  # atomic: fails if a lock exists, never half written
                _HELD.add(path)
                return
            except FileExistsError:
                pass
            holder = _read_lock(path)
            if holder is None:  # vanished or unreadable: try again
                time.sleep(0.05)
                continue
            if holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                _HELD.add(path)
                return
            if _alive(holder):
                raise ResultsFolderError(
                    f"{out} is in use by {holder.get('command', 'another msa run')} (pid "
                    f"{holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}): "
                    f"wait for it to end or stop it; if that process is gone, delete {path}"
                )
            if _read_lock(path) == holder:  # a dead process's lock: take it over
                print(f"[msa] taking over the lock of pid {holder.get('pid')} (not running)")
                path.unlink(missing_ok=True)
        raise ResultsFolderError(f"{path}: cannot take the lock (unreadable); delete it")
    finally:
        tmp.unlink(missing_ok=True)


def release_lock(out: Path) -> None:
    """Drop this process's lock on ``out`` (a lock another process holds is left alone)."""
    path = out / LOCK
    holder = _read_lock(path)
    if holder is not None and holder.get("pid") == os.getpid():
        path.unlink(missing_ok=True)
    _HELD.discard(path)


@atexit.register
def _release_all() -> None:
    for path in list(_HELD):
        release_lock(path.parent)


def claim_results_dir(out: Path, command: str, resume: bool = False) -> None:
    """Check ``out`` is msa's (:func:`check_ownership`), lock it, and mark a new one."""
    check_ownership(out, resume)
    new = not out.exists()
    lock_results_dir(out, command)
    if new or not _has_content(out):
        mark_created(out, command)


def prepare_results_dir(
    out: Path,
    command: str,
    resume: bool,
    overwrite: bool,
    experiment: Experiment | None = None,
) -> None:
    """Make ``out`` ready for a run of ``command``: new, resumed, or replaced; and lock it.

    Args:
        out: The results folder (``<results>/<name>``).
        command: What creates it, recorded in the marker (``"msa train"``).
        resume: Continue the run ``out`` holds (it must exist, with the same experiment).
        overwrite: Delete what ``out`` holds first; only in a folder msa created.
        experiment: Compared on resume with ``out/experiment.yaml`` (both as parsed: keys the
            schema gained since take their defaults on both sides).

    Raises:
        ConfigError: Both flags, ``resume`` without a folder or with another config, or a
            non-empty folder and no flag.
        ResultsFolderError: A folder msa did not create, or one another run holds.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    exists = _has_content(out)
    if resume and not exists:
        raise ConfigError(f"--resume: {out} holds no run to resume")
    check_ownership(out, resume)
    if exists and not resume and not overwrite:
        raise ConfigError(
            f"{out} already holds results: pass --resume to continue that run, --overwrite to "
            "replace it, or change `name` (or --results)"
        )
    lock_results_dir(out, command)
    if resume:
        stored = out / "experiment.yaml"
        if experiment is not None and stored.is_file() and _differs(stored, experiment):
            raise ConfigError(
                f"--resume: {stored} differs from the given config; resume with the same file"
            )
        return
    if exists:  # overwrite, in a folder msa created (checked above)
        for entry in out.iterdir():
            if entry.name == LOCK:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    mark_created(out, command)


def _differs(stored: Path, experiment: Experiment) -> bool:
    return load_experiment(stored).to_dict(with_search=False) != experiment.to_dict(
        with_search=False
    )


def remove_stored(uri: str) -> None:
    """Delete a run's folder in ``--storage`` (a directory or an ``s3://``/``gs://`` URI)."""
    import pyarrow.fs

    fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    if fs.get_file_info(path).type != pyarrow.fs.FileType.NotFound:
        fs.delete_dir(path)
