"""SIGTERM handled like Ctrl-C: ``timeout``, ``kill`` and ``ray job stop`` stop a run cleanly.

Ray's driver turns SIGTERM into ``sys.exit`` wherever the main thread is (inside native code
that aborts with a stack dump, exit 134). :func:`handle_sigterm` makes SIGTERM call the current
SIGINT handler instead (Tune's: stop the trials and save the search's state; else a
KeyboardInterrupt) and remembers it, so the command exits 143 with the resume hint. While
``ray.init`` runs its own handler is in place (``sys.exit(15)``, set as it starts, taken back
once it returns): :func:`sigterm_as_interrupt` turns that exit into the same interrupt.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["handle_sigterm", "sigterm_as_interrupt", "terminated"]

_received = threading.Event()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    _received.set()
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:  # SIG_IGN or SIG_DFL set by someone else: stop as Ctrl-C would
        raise KeyboardInterrupt


def handle_sigterm() -> None:
    """Route SIGTERM to the SIGINT handler (again after ``ray.init``, which replaces it)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM handled like Ctrl-C while the block runs (one command); the old handler after."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    _received.clear()
    handle_sigterm()
    try:
        yield
    except SystemExit as exc:
        if not _by_ray_init(exc):
            raise
        _received.set()
        raise KeyboardInterrupt from exc
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _by_ray_init(exc: SystemExit) -> bool:
    """Whether ``exc`` is SIGTERM met by ``ray.init``'s handler (ours not yet taken back)."""
    return exc.code == signal.SIGTERM and signal.getsignal(signal.SIGTERM) is not _on_sigterm


def terminated() -> bool:
    """Whether this process received SIGTERM."""
    return _received.is_set()
