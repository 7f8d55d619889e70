"""Tune's saved state is unpickled on ``--resume``: only files the user alone could have written.

Tune restores a search from pickles (the searcher, the trainable, each trial's state) in the
storage folder, and unpickling runs code. On a local or mounted folder every file and folder
there must belong to the user and not be writable by others; a bucket (``s3://``, ``gs://``)
cannot be checked this way and must be trusted (the README says so).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from workflows.errors import ResultsFolderError

__all__ = ["check_trusted"]


def check_trusted(state_dir: str) -> None:
    """Refuse ``state_dir`` if any file or folder in it is another user's or world-writable.

    Raises:
        ResultsFolderError: Naming the first such path, its owner and mode.
    """
    if "://" in state_dir:
        return
    root = Path(state_dir)
    uid = os.getuid()
    paths = [root]
    for folder, dirs, files in os.walk(root):
        paths += [Path(folder, name) for name in dirs + files]
    for path in paths:
        info = path.lstat()
        if info.st_uid != uid or info.st_mode & stat.S_IWOTH:
            raise ResultsFolderError(
                f"--resume: refusing to load Tune's saved state: {path} (owner uid "
                f"{info.st_uid}, mode {stat.filemode(info.st_mode)}) is not yours alone to write; "
                f"unpickling it could run another user's code. Check the folder, then fix owner "
                f"and permissions (chmod o-w) if it is yours"
            )
