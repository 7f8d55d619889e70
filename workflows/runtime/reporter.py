"""Tune's progress table for a search, kept narrow: the searched values and the metric only."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from ray.tune import CLIReporter

from workflows.experiment import Experiment
from workflows.runtime.session import running_best_key

__all__ = ["abbreviate", "progress_reporter", "reporter_output"]

WIDTH = 12  # characters per column at least (longer headers wrap)
EVERY_S = 30  # at most one table per this many seconds


def abbreviate(keys: list[str], width: int = WIDTH) -> dict[str, str]:
    """A short, distinct column name per dotted key.

    The last part of the key (``loss.lambda_mscma`` -> ``lambda_mscma``), its words cut to
    their first letters while it is longer than ``width``; keys whose names would collide keep
    their parent's initial (``l.dropout``, ``m.dropout``).
    """

    def shorten(name: str) -> str:
        words = name.split("_")
        cut = max(len(w) for w in words)
        while len("_".join(words)) > width and cut > 1:
            cut -= 1
            words = [w[:cut] for w in words]
        return "_".join(words)

    short = {key: shorten(key.split(".")[-1]) for key in keys}
    shared = {name for name in short.values() if list(short.values()).count(name) > 1}
    names = {}
    for key, name in short.items():
        parents = ".".join(part[0] for part in key.split(".")[:-1])
        names[key] = f"{parents}.{name}" if name in shared and parents else name
    return names


def progress_reporter(exp: Experiment) -> CLIReporter:
    """A table of trial, status, node, searched values (abbreviated), epoch, metric and best."""
    assert exp.search is not None
    metric = exp.search.metric
    # Ray cuts a longer value to width-5 characters plus an address (``triplet_e2b0``): the
    # columns are as wide as the longest choice
    choices = [str(c) for d in exp.space if d.kind == "choice" for c in d.args]
    width = max([WIDTH, *map(len, choices)])
    return CLIReporter(
        parameter_columns=abbreviate([d.key for d in exp.space]),
        metric_columns={
            "epoch": "epoch",
            metric: metric.removeprefix("val_"),
            running_best_key(metric): "best",
        },
        max_column_length=width,
        max_report_frequency=EVERY_S,
        sort_by_metric=True,  # by the Tuner's metric (the best so far) and mode
    )


@contextlib.contextmanager
def reporter_output() -> Iterator[None]:
    """Within: Tune prints through a ``progress_reporter`` (its newer console output ignores one).

    A ``RAY_AIR_NEW_OUTPUT`` the user set is kept (``1``: Ray's own output).
    """
    before = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
