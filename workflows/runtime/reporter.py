"""What a run prints: one line per epoch per trial (the loop's), one per finished trial, the best.

Ray's tables, its INFO logs and the libraries' progress bars are off unless ``--verbose``
(``MSA_VERBOSE=1``), through Ray's and the libraries' own settings: Tune's legacy output engine
(``RAY_AIR_NEW_OUTPUT=0``) with a :class:`TrialLines` reporter in place of its tables, the
driver's ``ray`` logger at WARNING (``ray.init(logging_level=...)``), Ray Train's
(``RunConfig(logging_config=...)``), Optuna's verbosity, and
Hugging Face's progress bars (``HF_HUB_DISABLE_PROGRESS_BARS``). ``--verbose`` brings back a
narrow Tune table (:func:`progress_reporter`) and Ray's INFO logs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from ray.tune import CLIReporter, ProgressReporter
from ray.tune.experiment import Trial

from workflows.experiment import Experiment
from workflows.results.status import FAIL, trial_status
from workflows.runtime.session import running_best_key

__all__ = [
    "VERBOSE_ENV",
    "abbreviate",
    "console_env",
    "final_console",
    "is_verbose",
    "logging_level",
    "progress_reporter",
    "quiet_driver",
    "search_console",
    "TrialLines",
]

VERBOSE_ENV = "MSA_VERBOSE"  # "1": Ray's tables, INFO logs and progress bars (--verbose)
WIDTH = 12  # characters per column at least (longer headers wrap)
EVERY_S = 30  # at most one table per this many seconds
FINISHED = (Trial.TERMINATED, Trial.ERROR)


def is_verbose() -> bool:
    """Whether this run prints Ray's own output too (``--verbose`` or ``MSA_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_ENV, "0") not in ("", "0")


def console_env() -> dict[str, str]:
    """Variables every process of the run gets (a variable the user set is kept).

    Tune's legacy output engine, the one that takes a ``progress_reporter``; the verbosity;
    without ``--verbose`` no Hugging Face progress bars (transformers' "Loading weights").
    """
    env = {"RAY_AIR_NEW_OUTPUT": "0", VERBOSE_ENV: "1" if is_verbose() else "0"}
    if not is_verbose():
        env["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    return {key: os.environ.setdefault(key, value) for key, value in env.items()}


def logging_level() -> int:
    """The driver's ``ray`` logger's and Ray Train's level: INFO with ``--verbose``, else
    WARNING."""
    return logging.INFO if is_verbose() else logging.WARNING


def quiet_driver() -> None:
    """Without ``--verbose``, in this process: Optuna's INFO lines, transformers' bars and Ray's
    warning that token authentication is on (its advice is to turn it off; the dashboard line
    says where the token is) off."""
    if is_verbose():
        return
    import optuna
    import transformers.utils.logging

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    transformers.utils.logging.disable_progress_bar()  # imported before the variable was set
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.ERROR
    )


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
    """``--verbose``: a table of trial, status, node, searched values, epoch, metric and best."""
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


class TrialLines(ProgressReporter):
    """Tune's reporter without tables: ``line(trial)`` once per trial when it ends, then
    ``best(trials)`` (when given and not None) at the end of the run."""

    def __init__(
        self,
        line: Callable[[Trial], str],
        best: Callable[[list[Trial]], str | None] | None = None,
    ) -> None:
        self.line, self.best = line, best
        self.printed: set[str] = set()

    def _new(self, trials: list[Trial]) -> list[Trial]:
        return [t for t in trials if t.status in FINISHED and t.trial_id not in self.printed]

    def should_report(self, trials: list[Trial], done: bool = False) -> bool:
        return done or bool(self._new(trials))

    def report(self, trials: list[Trial], done: bool, *sys_info: str) -> None:
        for trial in self._new(trials):
            self.printed.add(trial.trial_id)
            print(self.line(trial), flush=True)
        best = self.best(trials) if done and self.best else None
        if best:
            print(best, flush=True)


def _value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def search_lines(exp: Experiment) -> TrialLines:
    """``[msa] trial <name> COMPLETE after 2/2 epochs: best val_mr 61.11 (lr=0.001, ...)``.

    The status is the results' (``COMPLETE``, ``PRUNED``, ``FAIL``); at the end, the run's best
    trial by the running best of the search metric.
    """
    assert exp.search is not None
    metric, mode, epochs = exp.search.metric, exp.search.mode, exp.train.epochs
    key, names = running_best_key(metric), abbreviate([d.key for d in exp.space], width=24)

    def params(trial: Trial) -> str:
        return ", ".join(f"{names[k]}={_value(trial.config.get(k))}" for k in names)

    def line(trial: Trial) -> str:
        result = trial.last_result or {}
        trained = int(result.get("epoch") or 0)
        status = trial_status(trial.status == Trial.ERROR, trained, epochs)
        score = result.get(key)
        best = f"best {metric} {score:.2f}" if score is not None else f"no {metric}"
        text = f"[msa] trial {trial} {status} after {trained}/{epochs} epochs: {best}"
        if status == FAIL and trial.error_file:
            text += f", error in {trial.error_file}"
        return f"{text} ({params(trial)})"

    def best(trials: list[Trial]) -> str | None:
        scored = [t for t in trials if (t.last_result or {}).get(key) is not None]
        if not scored:
            return None
        top = (max if mode == "max" else min)(scored, key=lambda t: t.last_result[key])
        return f"[msa] best trial {top}: {metric} {top.last_result[key]:.2f} ({params(top)})"

    return TrialLines(line, best)


def final_lines(metric: str) -> TrialLines:
    """``[msa] final run <label>_seed<s> COMPLETE: epoch 2, val mr 61.11, test mr 50.00``."""
    short = metric.removeprefix("val_")

    def line(trial: Trial) -> str:
        result = trial.last_result or {}
        if trial.status == Trial.ERROR or "final_epoch" not in result:
            return f"[msa] final run {trial} {FAIL}: error in {trial.error_file}"
        scores = [f"{split} {short} {result[k]:.2f}" for split, k in
                  (("val", metric), ("test", f"test_{short}")) if k in result]  # fmt: skip
        return f"[msa] final run {trial} COMPLETE: epoch {result['final_epoch']}, " + ", ".join(
            scores
        )

    return TrialLines(line)


def search_console(exp: Experiment) -> dict[str, Any]:
    """``tune.RunConfig`` arguments of a search: its console (see the module)."""
    reporter = progress_reporter(exp) if is_verbose() else search_lines(exp)
    return {"verbose": 1, "progress_reporter": reporter}


def final_console(metric: str) -> dict[str, Any]:
    """``tune.RunConfig`` arguments of the final stage: one line per run, or a narrow table."""
    test = f"test_{metric.removeprefix('val_')}"
    reporter = (
        CLIReporter(
            parameter_columns={"run/label": "label", "run/seed": "seed"},
            metric_columns={"final_epoch": "epoch", metric: metric, test: test},
            max_report_frequency=EVERY_S,
        )
        if is_verbose()
        else final_lines(metric)
    )
    return {"verbose": 1, "progress_reporter": reporter}
