"""Paths in results files: relative to the results folder, so the folder can move."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["relative_to_results", "resolve_in_results"]


def relative_to_results(path: str | Path | None, out: str | Path) -> str | None:
    """``path`` relative to the results folder ``out`` when it lies inside it.

    A URI (``s3://...``) or a path outside ``out`` (``--storage`` elsewhere) stays as given;
    None stays None.
    """
    if path is None or "://" in str(path):
        return None if path is None else str(path)
    absolute = Path(os.path.abspath(path))
    root = Path(os.path.abspath(out))
    if absolute == root or not absolute.is_relative_to(root):
        return str(path)
    return absolute.relative_to(root).as_posix()


def resolve_in_results(path: str, out: str | Path) -> str:
    """A path read from a results file: relative ones are under ``out``; others as written."""
    if "://" in path or os.path.isabs(path):
        return path
    return str(Path(out) / path)
