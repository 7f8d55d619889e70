"""Progress within an epoch: a tqdm bar on a terminal, else a line every ``interval_s`` seconds."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "format_duration"]


def format_duration(seconds: float) -> str:
    """``1:02:03``, ``2:03`` or ``0:07``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """Steps of one epoch: ``update(samples)`` after each step, ``close()`` at the end.

    On a TTY (``stream.isatty()``) a tqdm bar; otherwise (a log file, a Ray worker's captured
    output) one line ``<desc> step k/N  x samples/s  ETA m:ss`` every ``interval_s`` seconds.

    Args:
        total: Steps in the epoch.
        desc: What runs, e.g. ``demo epoch 3/8``.
        interval_s: Seconds between plain lines.
        stream: Where to write (default: stdout).
        clock: The time source (tests pass a fake one).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        interval_s: float = 30.0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total, self.desc, self.interval_s = total, desc, interval_s
        self.stream = stream or sys.stdout
        self.clock = clock
        self.steps = self.samples = 0
        self.began = self.last_line = clock()
        self._bar = None
        if _is_tty(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit="step", file=self.stream, leave=False)

    def update(self, samples: int) -> None:
        """One step of ``samples`` samples done."""
        self.steps += 1
        self.samples += samples
        if self._bar is not None:
            self._bar.update(1)
            return
        now = self.clock()
        if now - self.last_line >= self.interval_s and self.steps < self.total:
            self.last_line = now
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float) -> str:
        """The plain progress line at time ``now``."""
        elapsed = max(now - self.began, 1e-9)
        rate = self.samples / elapsed
        eta = elapsed / self.steps * (self.total - self.steps) if self.steps else float("nan")
        return (
            f"[msa] {self.desc} step {self.steps}/{self.total}  {rate:.1f} samples/s  "
            f"ETA {format_duration(eta) if eta == eta else '?'}"
        )

    def close(self) -> None:
        """Remove the bar (plain lines need no closing)."""
        if self._bar is not None:
            self._bar.close()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
