"""Optuna's plots of a search (``optuna.visualization.matplotlib``), drawn from the trials table.

The study is rebuilt in memory from ``trials.csv`` (every Tune run of the search, each trial's
best validation value: the number Optuna was told), so the plots exist whatever the searcher.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402
from optuna.distributions import (  # noqa: E402
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.visualization import matplotlib as optuna_plots  # noqa: E402

from workflows.experiment.space import Distribution  # noqa: E402

__all__ = [
    "PLOTS",
    "integer_keys",
    "plot_study",
    "readable_axes",
    "study_from_table",
    "to_optuna",
]

PLOTS = {  # file -> (Optuna function, what the report calls it)
    "importances.png": ("plot_param_importances", "parameter importances (fANOVA)"),
    "parallel_coordinates.png": ("plot_parallel_coordinate", "parallel coordinates"),
    "history.png": ("plot_optimization_history", "optimization history"),
    "slices.png": ("plot_slice", "slice plots"),
}


def to_optuna(dist: Distribution) -> BaseDistribution:
    """The Optuna distribution of a searched key (quantised ones as their continuous range)."""
    if dist.kind == "choice":
        return CategoricalDistribution(list(dist.args))
    low, high = dist.args[0], dist.args[1]
    if dist.kind.endswith("randint"):
        return IntDistribution(low, high - 1 if dist.kind == "randint" else high)
    return FloatDistribution(low, high, log="log" in dist.kind)


def integer_keys(space: list[Distribution]) -> set[str]:
    """Searched keys whose values are integers."""
    return {
        d.key
        for d in space
        if d.kind.endswith("randint")
        or (
            d.kind == "choice"
            and all(isinstance(a, int) and not isinstance(a, bool) for a in d.args)
        )
    }


def study_from_table(
    table: pd.DataFrame, metric: str, mode: str, space: list[Distribution]
) -> optuna.Study:
    """An in-memory study of the trials that reported ``metric`` (value: their best epoch's)."""
    dists = {d.key: to_optuna(d) for d in space}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    col = f"best_{metric}"
    for row in table[table[col].notna()].itertuples(index=False):
        study.add_trial(
            optuna.trial.create_trial(
                params=json.loads(row.params), distributions=dists, value=float(getattr(row, col))
            )
        )
    return study


def readable_axes(fig: plt.Figure, int_keys: set[str]) -> None:
    """Log axes ticked 1-2-5 in plain numbers; integer parameters' axes on integers."""
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if axis.get_scale() == "log":
                axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                axis.set_major_formatter(plain)
                axis.set_minor_formatter(NullFormatter())
        if ax.get_xlabel() in int_keys:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_study(study: optuna.Study, space: list[Distribution], out: Path) -> dict[str, str]:
    """Draw :data:`PLOTS` into ``out``; file -> caption, or the reason a plot was not drawn."""
    int_keys = integer_keys(space)
    drawn = {}
    for name, (function, caption) in PLOTS.items():
        kwargs = {}
        if function == "plot_param_importances":
            kwargs["evaluator"] = optuna.importance.FanovaImportanceEvaluator(seed=0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna's matplotlib plots are "experimental"
                axes = getattr(optuna_plots, function)(study, **kwargs)
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            drawn[name] = f"not drawn: {exc}"
            continue
        fig = np.atleast_1d(axes).ravel()[0].figure
        readable_axes(fig, int_keys)
        fig.savefig(out / name, dpi=100, bbox_inches="tight")
        plt.close(fig)
        drawn[name] = caption
    return drawn
