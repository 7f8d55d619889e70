"""Results folders that msa created, and the rules for reusing or replacing one.

Every results folder msa creates holds ``.msa-results`` (a JSON marker naming the command).
A folder is reused only with ``--resume`` and replaced only with ``--overwrite``, and
``--overwrite`` never deletes a folder without the marker: msa did not create it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from msa_model.config import ConfigError
from workflows.errors import ResultsFolderError
from workflows.experiment import Experiment, load_experiment

__all__ = ["MARKER", "created_by", "mark_created", "prepare_results_dir", "remove_stored"]

MARKER = ".msa-results"


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


def prepare_results_dir(
    out: Path,
    command: str,
    resume: bool,
    overwrite: bool,
    experiment: Experiment | None = None,
) -> None:
    """Make ``out`` ready for a run of ``command``: new, resumed, or replaced.

    Args:
        out: The results folder (``<results>/<name>``).
        command: What creates it, recorded in the marker (``"msa train"``).
        resume: Continue the run ``out`` holds (it must exist, with the same experiment).
        overwrite: Delete ``out`` first; only a folder msa created (one with the marker).
        experiment: Compared on resume with ``out/experiment.yaml`` (both as parsed: keys the
            schema gained since take their defaults on both sides).

    Raises:
        ConfigError: Both flags, ``resume`` without a folder or with another config, or a
            non-empty folder and no flag.
        ResultsFolderError: ``overwrite`` of a folder msa did not create.
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other")
    exists = out.exists() and (not out.is_dir() or any(p.name != MARKER for p in out.iterdir()))
    if resume:
        if not exists:
            raise ConfigError(f"--resume: {out} holds no run to resume")
        stored = out / "experiment.yaml"
        if experiment is not None and stored.is_file() and _differs(stored, experiment):
            raise ConfigError(
                f"--resume: {stored} differs from the given config; resume with the same file"
            )
        return
    if exists and not overwrite:
        raise ConfigError(
            f"{out} already holds results: pass --resume to continue that run, --overwrite to "
            "replace it, or change `name` (or --results)"
        )
    if exists:
        if not out.is_dir() or created_by(out) is None:
            raise ResultsFolderError(
                f"--overwrite: refusing to delete {out}: msa did not create it (no {MARKER} "
                "marker); remove it yourself or choose another name"
            )
        shutil.rmtree(out)
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
