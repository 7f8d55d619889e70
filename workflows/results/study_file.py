"""The Optuna study's storage, checked before a search uses it (no Ray).

Optuna opens any file as SQLite and creates its tables in an empty one: a 0-byte ``optuna.db``
would silently become a new study (the search's history lost), and a file that is not SQLite
fails deep inside SQLAlchemy after Ray started. :func:`check_study` reads the storage first.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from msa_model.config import ConfigError

__all__ = ["check_study"]

SQLITE = "sqlite:///"
SQLITE_HEADER = b"SQLite format 3\x00"


def check_study(url: str, name: str, must_exist: bool = False) -> bool:
    """Whether the Optuna storage at ``url`` holds the study ``name``; nothing is created.

    Args:
        url: The storage URL (``sqlite:///path`` or any URL Optuna takes).
        name: The study (the experiment's name).
        must_exist: The study must be there (a resumed search): a missing, empty or foreign
            file would start a new study and lose its history.

    Raises:
        ConfigError: An empty or non-SQLite file, a database that is not Optuna's, an
            unreachable storage, or a missing study when ``must_exist``.
    """
    if url.startswith(SQLITE):
        names = _sqlite_studies(Path(url.removeprefix(SQLITE)), must_exist)
    else:
        names = _studies(url)
    if must_exist and name not in names:
        raise ConfigError(
            f"{url}: holds no Optuna study named {name!r}; resuming would start a new study and "
            "lose the search's history: restore the file, or start a new search under another name"
        )
    return name in names


def _sqlite_studies(path: Path, must_exist: bool) -> list[str]:
    if not path.exists():
        if must_exist:
            raise ConfigError(f"{path}: the search's Optuna study is missing")
        return []
    try:
        with path.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the Optuna study ({exc.strerror})") from None
    if not header:
        raise ConfigError(
            f"{path}: the Optuna study file is empty (0 bytes), not a study: restore it, or remove "
            "it to start a new study"
        )
    if header != SQLITE_HEADER:
        raise ConfigError(
            f"{path}: not an SQLite database, so not an Optuna study: restore it, or remove it to "
            "start a new study"
        )
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            if tables and "studies" not in tables:
                raise ConfigError(
                    f"{path}: an SQLite database without Optuna's tables, not an Optuna study"
                )
            if not tables:
                return []
            return [row[0] for row in db.execute("SELECT study_name FROM studies")]
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{path}: a damaged Optuna study ({exc})") from None


def _studies(url: str) -> list[str]:
    import optuna

    try:
        return list(optuna.get_all_study_names(url))
    except Exception as exc:  # SQLAlchemy's errors for a bad URL, a server down, a bad database
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"search.storage {url}: cannot read the Optuna studies ({reason})"
        ) from None
