"""The search's searcher and scheduler: Optuna (persisted study, chosen sampler) and ASHA.

Optuna, ASHA and the report use one number per trial: the best validation value so far
(``<metric>_best``, added to every epoch's report by :mod:`workflows.runtime.session`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from msa_model.config import ConfigError
from workflows.experiment import Experiment, SearcherConfig, config_point

__all__ = [
    "BaselineASHA",
    "baseline_point",
    "make_sampler",
    "make_scheduler",
    "make_searcher",
    "study_storage",
]


class BaselineASHA(ASHAScheduler):
    """ASHA that never stops the baseline trial (found by its config): it trains every epoch.

    The baseline's values still enter ASHA's rungs, so the other trials are compared with it.
    """

    def __init__(self, baseline: dict[str, Any] | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.baseline = baseline

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        if (
            action == TrialScheduler.STOP
            and self.baseline is not None
            and trial.config == self.baseline
            and result.get(self._time_attr, 0) < self._max_t
        ):
            self._num_stopped -= 1
            return TrialScheduler.CONTINUE
        return action


def baseline_point(exp: Experiment) -> dict[str, Any] | None:
    """The experiment's own values of the searched keys (the first trial), None without a space."""
    return config_point(exp.space, exp.to_dict()) if exp.space else None


def study_storage(exp: Experiment, out: Path) -> str:
    """The Optuna storage URL: ``search.storage``, else ``sqlite:///<out>/optuna.db``."""
    assert exp.search is not None
    return exp.search.storage or f"sqlite:///{(out / 'optuna.db').resolve()}"


def make_sampler(cfg: SearcherConfig, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``search.searcher``, seeded with ``seed``."""
    if cfg.sampler == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=cfg.n_startup_trials, multivariate=cfg.multivariate
        )
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if cfg.sampler == "cmaes":  # categorical keys are sampled by the independent sampler
        return optuna.samplers.CmaEsSampler(
            seed=seed,
            n_startup_trials=cfg.n_startup_trials,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed),
            warn_independent_sampling=False,
        )
    if cfg.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=cfg.n_startup_trials)
    raise ConfigError(f"search.searcher.sampler: unknown sampler {cfg.sampler!r}")


def make_searcher(exp: Experiment, storage: str | None, more: int = 0) -> Any:
    """Optuna on the study ``exp.name`` in ``storage`` (or Tune's random search).

    The first trial is the experiment's own values (``start_with_config``), except when
    ``more`` > 0: the ``more``-th extension of a finished study, whose sampler is seeded anew.
    """
    assert exp.search is not None
    cfg = exp.search.searcher
    point = baseline_point(exp)
    start = [point] if cfg.start_with_config and point is not None and not more else None
    if cfg.type == "optuna" and exp.space:
        return _StudySearch(
            points_to_evaluate=start,
            sampler=make_sampler(cfg, cfg.seed + more),
            study_name=exp.name,
            storage=None if storage is None else optuna.storages.RDBStorage(storage),
        )
    return BasicVariantGenerator(points_to_evaluate=start, random_state=cfg.seed + more)


class _StudySearch(OptunaSearch):
    """OptunaSearch enqueueing its first points only into a new study.

    Tune sets a restored searcher up again on ``--resume`` before loading its saved state; on a
    persisted study that would enqueue the baseline a second time (a duplicate trial).
    """

    def _setup_study(self, mode: str | list) -> None:
        storage = self._storage
        if storage is None or self._study_name not in optuna.get_all_study_names(storage):
            super()._setup_study(mode)
            return
        points, self._points_to_evaluate = self._points_to_evaluate, []
        try:
            super()._setup_study(mode)
        finally:
            self._points_to_evaluate = points


def make_scheduler(exp: Experiment) -> TrialScheduler:
    """ASHA on the epoch, never stopping the baseline (or FIFO)."""
    assert exp.search is not None
    cfg = exp.search.scheduler
    if cfg.type != "asha":
        return FIFOScheduler()
    return BaselineASHA(
        baseline_point(exp),
        time_attr="epoch",
        # one past the last epoch: a trial that trains to the end finishes by itself (and
        # its Train run releases its workers) instead of being stopped by the scheduler
        max_t=exp.train.epochs + 1,
        grace_period=min(cfg.grace_period, exp.train.epochs),
        reduction_factor=cfg.reduction_factor,
    )
