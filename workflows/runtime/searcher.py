"""The search's searcher and scheduler: Optuna (persisted study, chosen sampler) and ASHA.

Optuna, ASHA and the report use one number per trial: the best validation value so far
(``<metric>_best``, added to every epoch's report by :mod:`workflows.runtime.session`). The
persisted study tells what happened as optuna-dashboard shows it: each epoch's ``<metric>`` as
an intermediate value, a trial stopped early ``PRUNED`` (:mod:`workflows.results.status`), the
Ray trial id and the baseline flag as user attributes, the objective named ``<metric>``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import BasicVariantGenerator
from ray.tune.search.optuna import OptunaSearch

from msa_model.config import ConfigError
from workflows.experiment import Experiment, SearcherConfig, config_point
from workflows.results.status import PRUNED, trial_status

__all__ = [
    "BASELINE_ATTR",
    "RAY_ID_ATTR",
    "BaselineASHA",
    "baseline_point",
    "make_sampler",
    "make_scheduler",
    "make_searcher",
    "StudySearch",
    "study_storage",
]


RAY_ID_ATTR = "ray_trial_id"  # the study's user attributes of a trial
BASELINE_ATTR = "baseline"


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
        return StudySearch(
            exp.search.metric,
            exp.train.epochs,
            point,
            points_to_evaluate=start,
            sampler=make_sampler(cfg, cfg.seed + more),
            study_name=exp.name,
            storage=None if storage is None else optuna.storages.RDBStorage(storage),
        )
    return BasicVariantGenerator(points_to_evaluate=start, random_state=cfg.seed + more)


class StudySearch(OptunaSearch):
    """OptunaSearch whose study tells each trial's epochs, status, Ray id and baseline flag.

    Ray's OptunaSearch reports the Tuner's metric (the running best) at each training
    iteration and tells a trial COMPLETE whenever it reported, so an ASHA stop looked like a
    finished trial whose curve never falls. Here:

    - each epoch's ``metric`` (not its running best) is the intermediate value at step
      ``epoch``, written through the storage, so a restarted trial's repeated epoch
      overwrites it;
    - a trial that trained fewer than ``epochs`` epochs and did not fail is told ``PRUNED``
      (Optuna then records its last epoch's value), others as Ray tells them: ``COMPLETE``
      with the running best, or ``FAIL``;
    - each trial carries the user attributes ``ray_trial_id`` and ``baseline`` (its values are
      ``baseline``, the experiment's own), and the study names its objective ``metric``.

    The first points are enqueued only into a new study: Tune sets a restored searcher up
    again on ``--resume`` before loading its saved state; on a persisted study that would
    enqueue the baseline a second time (a duplicate trial). A restored searcher keeps this
    run's ``metric``, ``epochs`` and ``baseline`` (the experiment is checked unchanged).
    """

    def __init__(
        self, metric: str, epochs: int, baseline: dict[str, Any] | None, **kwargs: Any
    ) -> None:
        self._epoch_metric, self._epochs, self._baseline = metric, epochs, baseline
        super().__init__(**kwargs)

    def _setup_study(self, mode: str | list) -> None:
        storage = self._storage
        if storage is None or self._study_name not in optuna.get_all_study_names(storage):
            super()._setup_study(mode)
        else:
            points, self._points_to_evaluate = self._points_to_evaluate, []
            try:
                super()._setup_study(mode)
            finally:
                self._points_to_evaluate = points
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self._ot_study.set_metric_names([self._epoch_metric])

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        trial = self._ot_trials[trial_id]
        trial.set_user_attr(RAY_ID_ATTR, trial_id)
        trial.set_user_attr(BASELINE_ATTR, trial.params == self._baseline)
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id not in self._completed_trials:
            self._record_epoch(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        trial = self._ot_trials.get(trial_id)
        if trial is None or trial_id in self._completed_trials:
            return
        self._record_epoch(trial_id, result or {})  # a stopping result reaches only this hook
        last = self._ot_study._storage.get_trial(trial._trial_id).last_step
        if trial_status(error, last or 0, self._epochs) == PRUNED:
            pruned = optuna.trial.TrialState.PRUNED
            self._ot_study.tell(trial, state=pruned, skip_if_finished=True)
            self._completed_trials.add(trial_id)
            return
        super().on_trial_complete(trial_id, result, error)

    def _record_epoch(self, trial_id: str, result: dict) -> None:
        """The epoch's ``metric`` as the trial's intermediate value (a repeat overwrites it)."""
        value, epoch = result.get(self._epoch_metric), result.get("epoch")
        if value is not None and epoch is not None:
            self._ot_study._storage.set_trial_intermediate_value(
                self._ot_trials[trial_id]._trial_id, int(epoch), float(value)
            )

    def restore(self, checkpoint_path: str) -> None:
        mine = (self._epoch_metric, self._epochs, self._baseline)
        super().restore(checkpoint_path)
        self._epoch_metric, self._epochs, self._baseline = mine


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
