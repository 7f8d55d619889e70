"""The search-space syntax of ``search.space`` (no Ray: ``workflows.runtime.space_tune`` makes
Tune's domains of it).

Each entry maps a dotted key of the experiment to one distribution::

    model.image.num_scales: {choice: [1, 2, 3, 4]}
    loss.lambda_mscma: {loguniform: [1, 30]}
    optim.lr: {qloguniform: [1.0e-5, 1.0e-3, 1.0e-5]}

Distributions and their arguments follow ``ray.tune``: ``choice``, ``uniform``, ``loguniform``,
``randint`` (upper bound exclusive), ``quniform``, ``qloguniform``, ``qrandint`` (upper bound
inclusive). Every key and every value a distribution can produce is validated against the
experiment schema before anything starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from msa_model.config import ConfigError
from msa_model.constants import DATA_PATH_KEYS
from workflows.experiment.dotted import get_dotted

__all__ = [
    "YAML11_EXPONENT",
    "Distribution",
    "check_baseline",
    "parse_space",
    "config_point",
]

# YAML 1.1 (PyYAML) reads a number with an exponent and no dot (5e-5, 1E3) as text
YAML11_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")

ARITY = {
    "choice": None,
    "uniform": 2,
    "loguniform": 2,
    "randint": 2,
    "quniform": 3,
    "qloguniform": 3,
    "qrandint": 3,
}
FORBIDDEN_PREFIXES = ("name", "search", "final", *(f"data.{key}" for key in DATA_PATH_KEYS))
# Tune reserves each trial's resources (and picks how it trains) before the search starts
TRIAL_SHAPE_KEYS = (
    "train.num_workers",
    "train.use_gpu",
    "train.cpus_per_worker",
    "train.gpus_per_worker",
    "train.trial_launcher",
)


@dataclass(frozen=True)
class Distribution:
    """One searched key: ``kind`` is a ``ray.tune`` sampler name, ``args`` its arguments."""

    key: str
    kind: str
    args: tuple[Any, ...]

    def extremes(self) -> list[Any]:
        """Values the distribution can produce at its bounds (or all choices)."""
        if self.kind == "choice":
            return list(self.args)
        low, high = self.args[0], self.args[1]
        if self.kind == "randint":
            return [low, high - 1]
        return [low, high]

    def contains(self, value: Any) -> bool:
        """Whether the distribution can produce ``value`` (on its grid for the ``q`` kinds)."""
        if self.kind == "choice":
            return any(
                _same_number(value, c) if isinstance(c, (int, float)) else value == c
                for c in self.args
            )
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        low, high = self.args[0], self.args[1]
        if self.kind == "randint":
            return isinstance(value, int) and low <= value < high
        if self.kind == "qrandint" and not isinstance(value, int):
            return False
        if not low <= value <= high:
            return False
        if len(self.args) == 3:  # Optuna's grid: low + k * q
            steps = (value - low) / self.args[2]
            return abs(steps - round(steps)) < 1e-6
        return True


def _parse_entry(key: str, spec: Any) -> Distribution:
    where = f"search.space.{key}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where}: expected one distribution, e.g. {{loguniform: [1, 30]}}")
    ((kind, args),) = spec.items()
    if kind not in ARITY:
        raise ConfigError(f"{where}: unknown distribution {kind!r} (allowed: {', '.join(ARITY)})")
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}: {kind} needs a non-empty list of arguments")
    if kind == "choice":
        return Distribution(key, kind, tuple(args))
    args = [float(a) if isinstance(a, str) and YAML11_EXPONENT.fullmatch(a) else a for a in args]
    if len(args) != ARITY[kind]:
        raise ConfigError(f"{where}: {kind} takes {ARITY[kind]} numbers, got {args}")
    if not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
        raise ConfigError(f"{where}: {kind} arguments must be numbers, got {args}")
    if not all(math.isfinite(a) for a in args):
        raise ConfigError(f"{where}: {kind} arguments must be finite, got {args}")
    if kind.endswith("randint") and not all(isinstance(a, int) for a in args):
        raise ConfigError(f"{where}: {kind} arguments must be integers, got {args}")
    low, high = args[0], args[1]
    if not low < high:
        raise ConfigError(f"{where}: empty range, lower bound {low} must be < upper bound {high}")
    if "log" in kind and low <= 0:
        raise ConfigError(f"{where}: {kind} needs a positive lower bound, got {low}")
    if len(args) == 3 and args[2] <= 0:
        raise ConfigError(f"{where}: quantum must be > 0, got {args[2]}")
    return Distribution(key, kind, tuple(args))


def parse_space(
    space: dict[str, Any], base: dict[str, Any], with_params: Callable[[dict[str, Any]], Any]
) -> list[Distribution]:
    """Validate ``search.space`` against the experiment mapping ``base`` (without ``search``).

    ``with_params`` applies dotted values to the experiment and validates the result (raising
    ConfigError, :meth:`~workflows.experiment.schema.Experiment.with_params`); it is run with
    each distribution's extreme values.

    Raises:
        ConfigError: naming ``search.space.<key>`` for unknown keys, bad distributions, empty
            ranges, or values the experiment schema rejects.
    """
    dists = []
    for key, spec in space.items():
        if not isinstance(key, str) or key.startswith(FORBIDDEN_PREFIXES):
            raise ConfigError(f"search.space.{key}: this key cannot be searched")
        if key in TRIAL_SHAPE_KEYS:
            raise ConfigError(
                f"search.space.{key}: cannot be searched, every trial gets the same resources; "
                f"set it in the `train` section"
            )
        try:
            current = get_dotted(base, key)
        except KeyError:
            raise ConfigError(f"search.space.{key}: unknown key (no such setting)") from None
        if isinstance(current, dict):
            raise ConfigError(f"search.space.{key}: is a section; search one of its keys")
        dist = _parse_entry(key, spec)
        for value in dist.extremes():
            try:
                with_params({key: value})
            except ConfigError as exc:
                message = str(exc).removeprefix("<dict>: ")
                raise ConfigError(
                    f"search.space.{key}: value {value!r} is invalid: {message}"
                ) from None
        dists.append(dist)
    return dists


def _same_number(a: Any, b: Any) -> bool:
    """Equal numbers (2 and 2.0), never a bool for a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    numbers = all(isinstance(x, (int, float)) for x in (a, b))
    return numbers and a == b


def check_baseline(dists: list[Distribution], base: dict[str, Any]) -> None:
    """Refuse a baseline (the experiment's own values, the first trial) outside the space.

    Optuna rejects such a trial only when the study is read back (the report, after the test
    split was read); this stops it before anything starts.

    Raises:
        ConfigError: Naming ``search.space.<key>``, the value and the distribution.
    """
    for dist in dists:
        value = get_dotted(base, dist.key)
        if not dist.contains(value):
            raise ConfigError(
                f"search.space.{dist.key}: the baseline value {value!r} (the experiment's own "
                f"{dist.key}, the search's first trial) is outside {dist.kind} {list(dist.args)}; "
                f"widen the range, change {dist.key}, or set search.searcher.start_with_config: "
                "false"
            )


def config_point(dists: list[Distribution], base: dict[str, Any]) -> dict[str, Any]:
    """The experiment's own values of the searched keys (the first trial of a search)."""
    return {d.key: get_dotted(base, d.key) for d in dists}
