"""SIGTERM handled like Ctrl-C: ``timeout``, ``kill`` and ``ray job stop`` stop a run cleanly.

Ray's driver turns SIGTERM into ``sys.exit`` wherever the main thread is (inside native code
that aborts with a stack dump, exit 134). :func:`handle_sigterm` makes SIGTERM call the current
SIGINT handler instead (Tune's: stop the trials and save the search's state; else a
KeyboardInterrupt) and remembers it, so the command exits 143 with the resume hint. While
``ray.init`` runs its own handler is in place (``sys.exit(15)``, set as it starts, taken back
once it returns): :func:`sigterm_as_interrupt` turns that exit into the same interrupt.

Tune's own SIGINT handler (stop the trials, save the state) stays installed when a run ends
normally, so a later Ctrl-C or SIGTERM would only print Tune's warning and the command would go
on (export, the final stage) and exit 0: :func:`tune_interrupts` puts the previous handler back
after each ``Tuner.fit`` and says whether Tune's handler took a signal.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["handle_sigterm", "sigterm_as_interrupt", "terminated", "tune_interrupts"]

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


@contextmanager
def tune_interrupts() -> Iterator[Callable[[], bool]]:
    """Around one ``Tuner.fit``: the SIGINT handler before it is put back after it, and the
    yielded function says (after the block) whether Tune's handler took a Ctrl-C or SIGTERM.

    Tune installs its handler on the main thread unless ``TUNE_DISABLE_SIGINT_HANDLER`` is set;
    when it takes a signal it puts back the handler it found, which is how it is recognised.
    """
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main else None
    took = threading.Event()
    try:
        yield took.is_set
    finally:
        if main:
            tune_handles = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER", "0") in ("", "0")
            if tune_handles and signal.getsignal(signal.SIGINT) is before:
                took.set()
            signal.signal(signal.SIGINT, before)
