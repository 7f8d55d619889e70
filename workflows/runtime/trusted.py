"""Tune's saved state is unpickled on ``--resume``: only files the user alone could have written.

Tune restores a search from pickles (the searcher, the trainable, each trial's state) in the
storage folder, and unpickling runs code. On a local or mounted folder every file and folder
there must belong to the user and be writable by no one else: not by others, and not by its
group unless that group is the user's own private group (a umask of 002 gives every file group
write; a private group holds no one else). A bucket (``s3://``, ``gs://``) cannot be checked this
way and must be trusted (the README says so).
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from functools import cache
from pathlib import Path

from workflows.errors import ResultsFolderError

__all__ = ["check_trusted"]


def check_trusted(state_dir: str) -> None:
    """Refuse ``state_dir`` if any file or folder in it is another user's, or writable by others
    or by a group other people are in.

    Raises:
        ResultsFolderError: Naming the first such path, its owner and mode.
    """
    if "://" in state_dir:
        return
    root = Path(state_dir)
    if not root.exists():  # stopped before Tune saved anything: nothing to unpickle
        return
    uid = os.getuid()
    paths = [root]
    for folder, dirs, files in os.walk(root):
        paths += [Path(folder, name) for name in dirs + files]
    for path in paths:
        info = path.lstat()
        shared = info.st_mode & stat.S_IWGRP and not _private_group(info.st_gid)
        if info.st_uid != uid or info.st_mode & stat.S_IWOTH or shared:
            raise ResultsFolderError(
                f"--resume: refusing to load Tune's saved state: {path} (owner uid "
                f"{info.st_uid}, mode {stat.filemode(info.st_mode)}) is not yours alone to write; "
                f"unpickling it could run another user's code. Check the folder, then fix owner "
                f"and permissions (chmod -R go-w) if it is yours"
            )


@cache
def _private_group(gid: int) -> bool:
    """Whether ``gid`` is this user's own group: named after the user, no other member."""
    try:
        group, user = grp.getgrgid(gid), pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return False
    others = [m for m in group.gr_mem if m != user]
    primary = [p.pw_name for p in pwd.getpwall() if p.pw_gid == gid and p.pw_name != user]
    return group.gr_name == user and not others and not primary
