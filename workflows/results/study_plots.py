"""Optuna's plots of a search (``optuna.visualization.matplotlib``), drawn from the trials table.

The study is rebuilt in memory from ``trials.csv`` (every Tune run of the search, each trial's
best validation value: the number ASHA and the report rank by), so the plots exist whatever the
searcher and show the trials ASHA stopped too. Its trials are in the search's order (the
persisted study's numbers when there is one), so the optimization history and the slice plots'
colours read as optuna-dashboard's.
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
from optuna.trial import TrialState  # noqa: E402
from optuna.visualization import matplotlib as optuna_plots  # noqa: E402

from workflows.experiment.space import Distribution  # noqa: E402

__all__ = [
    "PLOTS",
    "integer_keys",
    "draw_study",
    "plot_study",
    "readable_axes",
    "study_from_table",
    "to_optuna",
    "trial_order",
]

FEW_TRIALS = 20  # fewer: the importances are flagged as a rough guide

PLOTS = {  # file -> (Optuna function, what the report calls it)
    "importances.png": ("plot_param_importances", "parameter importances"),
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


def trial_order(history: pd.DataFrame, study: tuple[str, str] | None = None) -> list[str]:
    """The search's trial ids in the order the trials started.

    The persisted study's order (its trials' ``ray_trial_id`` user attributes, set by
    :class:`~workflows.runtime.searcher.StudySearch`) when ``study`` (storage URL, name) has
    them; else by each trial's first report in ``history`` less the time it had run by then.
    """
    if study is not None:
        ids = _study_ids(*study)
        if ids:
            return ids
    if history.empty or not {"trial_id", "timestamp"} <= set(history.columns):
        return []
    elapsed = history["time_total_s"] if "time_total_s" in history else 0.0
    start = (history["timestamp"] - elapsed).groupby(history["trial_id"]).min()
    return start.sort_values(kind="stable").index.astype(str).tolist()


def _study_ids(url: str, name: str) -> list[str]:
    """The ``ray_trial_id`` of each trial of the study, in its order (empty when none has one)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        trials = optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)
    except KeyError:  # no such study
        return []
    finally:
        optuna.logging.set_verbosity(verbosity)
    return [str(t.user_attrs["ray_trial_id"]) for t in trials if "ray_trial_id" in t.user_attrs]


def study_from_table(
    table: pd.DataFrame,
    metric: str,
    mode: str,
    space: list[Distribution],
    order: list[str] | None = None,
) -> optuna.Study:
    """An in-memory study of the search's trials (value: their best epoch's ``metric``).

    Trials are added in ``order`` (trial ids, :func:`trial_order`; the others after them, in
    the table's order), so trial numbers follow the search; a trial that never reported is a
    failed one, keeping the numbers those of the persisted study.
    """
    dists = {d.key: to_optuna(d) for d in space}
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "A new study created" line
    try:
        study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    finally:
        optuna.logging.set_verbosity(verbosity)
    col = f"best_{metric}"
    position = {str(trial_id): i for i, trial_id in enumerate(order or [])}
    ranks = [position.get(str(t), len(position)) for t in table["trial_id"]]
    for row in table.iloc[np.argsort(ranks, kind="stable")].itertuples(index=False):
        value = getattr(row, col, None)
        reported = value is not None and not pd.isna(value)
        study.add_trial(
            optuna.trial.create_trial(
                params=json.loads(row.params),
                distributions=dists,
                value=float(value) if reported else None,
                state=TrialState.COMPLETE if reported else TrialState.FAIL,
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


def draw_study(study: optuna.Study, space: list[Distribution]) -> dict[str, plt.Figure | str]:
    """:data:`PLOTS` as figures; file -> figure, or the reason it was not drawn."""
    int_keys = integer_keys(space)
    drawn: dict[str, plt.Figure | str] = {}
    for name, (function, _) in PLOTS.items():
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
        drawn[name] = fig
    return drawn


def plot_study(study: optuna.Study, space: list[Distribution], out: Path) -> dict[str, str]:
    """Draw :data:`PLOTS` into ``out``; file -> caption, or the reason a plot was not drawn.

    The importances' caption names the method and the trials it saw, flagged as a rough
    guide below :data:`FEW_TRIALS` (another seed or method may rank the parameters otherwise).
    """
    finished = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    captions = {name: caption for name, (_, caption) in PLOTS.items()}
    captions["importances.png"] += f" (fANOVA from {finished} trials' best values" + (
        f"; fewer than {FEW_TRIALS} trials: a rough guide)" if finished < FEW_TRIALS else ")"
    )
    drawn = {}
    for name, fig in draw_study(study, space).items():
        if isinstance(fig, str):
            drawn[name] = fig
            continue
        fig.savefig(out / name, dpi=100, bbox_inches="tight")
        plt.close(fig)
        drawn[name] = captions[name]
    return drawn
