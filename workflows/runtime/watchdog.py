"""A local cluster's processes end with its driver, even a SIGKILLed one.

``ray.init`` ties the processes it starts to the driver (on Linux the kernel kills them with
it), but not the raylet's own children: its dashboard and runtime-env agents see the raylet
die at once, then wait up to 60 s (``RAY_gcs_server_request_timeout_seconds``) to report it to
the GCS that died with the driver, holding their ports and memory meanwhile; a trial's worker
can outlive it too. :func:`guard` starts a small process with the cluster that follows the
processes ``ray.init`` started and their descendants while the driver runs; once the driver is
gone it ends those left (SIGTERM, then SIGKILL), each by pid and start time, never by process
group: no process of another cluster or of the user's shell is touched. It exits with the
cluster (after ``ray.shutdown()`` it has nothing left to follow).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

__all__ = ["children", "guard", "main"]

INTERVAL_S = 1.0  # how often it looks: the driver's end is noticed within this
GRACE_S = 2.0  # between SIGTERM and SIGKILL
READY = "following"


def children() -> set[int]:
    """The pids of this process's children (taken before ``ray.init``, to tell Ray's apart)."""
    return {p.pid for p in psutil.Process().children()}


def guard(before: set[int]) -> subprocess.Popen:
    """Start the watchdog of the children this process started since ``before`` (a local
    cluster's processes); it returns once the watchdog follows them.

    The watchdog runs in its own session (Ctrl-C on the terminal or a signal to the driver's
    process group does not reach it) with no stdout/stderr of the driver's: a caller reading
    the driver's output to its end is not kept waiting by it.
    """
    roots = sorted(children() - before)
    proc = subprocess.Popen(
        [sys.executable, "-m", __name__, str(os.getpid()), *map(str, roots)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    proc.stdout.close()
    if line != READY:
        print(
            f"[msa] warning: the cluster's watchdog did not start ({line!r}): if this process "
            "is killed, Ray's agents may outlive it for a minute",
            file=sys.stderr,
        )
    return proc


def _follow(followed: dict[int, psutil.Process]) -> dict[int, psutil.Process]:
    """The followed processes still running, with every descendant they have now."""
    alive = {pid: p for pid, p in followed.items() if _running(p)}
    parents: dict[int, list[psutil.Process]] = {}
    for p in psutil.process_iter(["ppid"]):
        parents.setdefault(p.info["ppid"], []).append(p)
    todo = list(alive)
    while todo:
        for child in parents.get(todo.pop(), []):
            if child.pid not in alive and child.pid != os.getpid():
                alive[child.pid] = child
                todo.append(child.pid)
    return alive


def _running(p: psutil.Process) -> bool:
    """Running and not a zombie (``is_running`` also checks the pid was not reused)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _end(procs: list[psutil.Process]) -> None:
    """SIGTERM each, SIGKILL those still running after :data:`GRACE_S`."""
    for p in procs:
        try:
            p.terminate()  # psutil refuses a reused pid
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=GRACE_S)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def main(argv: list[str] | None = None) -> int:
    """``python -m workflows.runtime.watchdog DRIVER_PID ROOT_PID...`` (see :func:`guard`)."""
    driver, *roots = (int(arg) for arg in (sys.argv[1:] if argv is None else argv))
    followed = {}
    for pid in roots:
        try:
            followed[pid] = psutil.Process(pid)
        except psutil.NoSuchProcess:
            pass
    followed = _follow(followed)
    try:
        print(READY, flush=True)
    except BrokenPipeError:  # the driver stopped waiting (a signal): follow all the same
        pass
    while os.getppid() == driver:  # the driver's end makes someone else our parent
        time.sleep(INTERVAL_S)
        followed = _follow(followed)
        if not followed:  # ray.shutdown(): nothing left to guard
            return 0
    _end([p for p in followed.values() if _running(p)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
