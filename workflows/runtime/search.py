"""The search of ``msa tune``: Ray Tune + Optuna over training runs, then the final stage."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from msa_model.config import ConfigError
from workflows.experiment import Experiment, dump_experiment, parse_experiment
from workflows.experiment.dotted import with_values
from workflows.experiment.space import config_point, to_tune
from workflows.results.export import export_best
from workflows.results.trials import history_table, trials_table
from workflows.runtime.cluster import connect, driver_resources
from workflows.runtime.final import run_final
from workflows.runtime.launch import make_trainer, run_in_trial, storage_root
from workflows.runtime.records import collect_records
from workflows.runtime.tensorboard import TuneTensorBoard

__all__ = [
    "run_tune",
    "make_driver",
    "trains_in_trial",
    "concurrent_trials",
    "trial_retries",
]

TUNE_DIR = "tune"


def trains_in_trial(exp: Experiment) -> bool:
    """Whether each trial trains in its own process instead of through a TorchTrainer."""
    return exp.train.trial_launcher == "auto" and exp.train.num_workers == 1


def make_driver(name: str, base: dict[str, Any], storage_path: str, metric: str, mode: str):
    """The Tune trainable: one trial's training run from its params.

    One worker (``trains_in_trial``): the loop runs right here, reporting to Tune. Otherwise it
    builds a TorchTrainer. Either way the run's folder ``<storage_path>/<name>-<trial id>``
    holds its checkpoints and their record, so a restarted trial resumes from its latest
    checkpoint. The function carries the experiment's name, so trials show under it in the
    dashboard.
    """

    def driver(params: dict[str, Any]) -> None:
        exp = parse_experiment(with_values(base, params), source="trial config")
        run_name = f"{exp.name}-{tune.get_context().get_trial_id()}"
        if trains_in_trial(exp):
            run_in_trial(exp, f"{storage_path}/{run_name}", metric, mode)
            return
        trainer = make_trainer(
            exp,
            run_name=run_name,
            storage_path=storage_path,
            metric=metric,
            mode=mode,
            callbacks=[TuneReportCallback()],
        )
        trainer.fit()

    driver.__name__ = driver.__qualname__ = name
    return driver


def concurrent_trials(
    exp: Experiment, resources: dict[str, float], driver: dict[str, float] | None = None
) -> int:
    """How many trials the cluster runs at once: its CPUs (and GPUs) over one trial's needs.

    A trial needs its Train workers' resources plus its driver's CPU share (``driver``).
    """
    assert exp.search is not None
    per_trial = exp.train.num_workers * exp.train.cpus_per_worker + (driver or {}).get("CPU", 0)
    fit = math.floor(resources.get("CPU", 1) / per_trial)
    if exp.train.use_gpu:
        fit = min(
            fit,
            math.floor(
                resources.get("GPU", 0) / (exp.train.num_workers * exp.train.gpus_per_worker)
            ),
        )
    limit = exp.search.max_concurrent_trials or exp.search.num_samples
    return max(1, min(fit, limit, exp.search.num_samples))


def trial_retries(exp: Experiment, in_trial: bool) -> int:
    """Tune's restarts of a failed trial (-1: unlimited).

    ``search.max_trial_failures``; a trial that trains in its own process also gets the
    ``train.max_failures`` restarts from its last checkpoint that a TorchTrainer would make.
    """
    assert exp.search is not None
    counts = [exp.search.max_trial_failures] + ([exp.train.max_failures] if in_trial else [])
    return -1 if -1 in counts else sum(counts)


def _prepare_dir(out: Path, exp: Experiment, resume: bool, tune_path: str) -> None:
    stored = out / "experiment.yaml"
    if resume:
        if not tune.Tuner.can_restore(tune_path):
            raise ConfigError(f"--resume: no search to resume at {tune_path}")
        from msa_model.config import load_yaml

        if stored.is_file() and load_yaml(stored) != exp.to_dict():
            raise ConfigError(
                f"--resume: {stored} differs from the given config; resume with the same file"
            )
    elif (out / "ray" / TUNE_DIR).exists() or tune.Tuner.can_restore(tune_path):
        raise ConfigError(
            f"{out} already holds a search named {exp.name!r}: pass --resume to continue it, or "
            f"remove the folder, or change `name`"
        )
    out.mkdir(parents=True, exist_ok=True)
    dump_experiment(exp, stored)


def _trial_resources(exp: Experiment, in_trial: bool) -> dict[str, float]:
    """What Tune reserves for one trial."""
    if not in_trial:  # a Train driver: the TorchTrainer's workers hold the resources
        return driver_resources()
    resources = {"CPU": exp.train.cpus_per_worker}  # the trial process trains itself
    if exp.train.use_gpu:
        resources["GPU"] = exp.train.gpus_per_worker
    return resources


def _searcher(exp: Experiment, base: dict[str, Any]) -> Any:
    """Optuna TPE (or Tune's random search), first trying the experiment's own values."""
    assert exp.search is not None
    searcher, dists = exp.search.searcher, exp.space
    start = [config_point(dists, base)] if searcher.start_with_config and dists else None
    if searcher.type == "optuna" and dists:
        return OptunaSearch(points_to_evaluate=start, seed=searcher.seed)
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(points_to_evaluate=start, random_state=searcher.seed)


def _scheduler(exp: Experiment) -> Any:
    """ASHA on the epoch (or FIFO)."""
    assert exp.search is not None
    cfg = exp.search.scheduler
    if cfg.type != "asha":
        return FIFOScheduler()
    return ASHAScheduler(
        time_attr="epoch",
        # one past the last epoch: a trial that trains to the end finishes by itself (and
        # its Train run releases its workers) instead of being stopped by the scheduler
        max_t=exp.train.epochs + 1,
        grace_period=min(cfg.grace_period, exp.train.epochs),
        reduction_factor=cfg.reduction_factor,
    )


def _tuner(exp: Experiment, out: Path, root: str, resume: bool) -> tune.Tuner:
    """A new Tuner over ``exp.space``, or the interrupted one restored."""
    assert exp.search is not None
    search, in_trial = exp.search, trains_in_trial(exp)
    base = exp.with_absolute_paths().to_dict(with_search=False)  # Tune's boundary: a mapping
    resources = _trial_resources(exp, in_trial)
    driver = tune.with_resources(
        make_driver(exp.name, base, f"{root}/trials", search.metric, search.mode), resources
    )
    if resume:
        return tune.Tuner.restore(
            f"{root}/{TUNE_DIR}",
            trainable=driver,
            param_space=to_tune(exp.space),
            resume_unfinished=True,
            resume_errored=False,
            restart_errored=False,
        )
    return tune.Tuner(
        driver,
        param_space=to_tune(exp.space),
        tune_config=tune.TuneConfig(
            metric=search.metric,
            mode=search.mode,
            search_alg=_searcher(exp, base),
            scheduler=_scheduler(exp),
            num_samples=search.num_samples,
            trial_name_creator=lambda trial: f"{exp.name}_{trial.trial_id}",
            trial_dirname_creator=lambda trial: f"{exp.name}_{trial.trial_id}",
            max_concurrent_trials=concurrent_trials(
                exp, ray.cluster_resources(), None if in_trial else resources
            ),
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=root,
            callbacks=[TuneTensorBoard((out / "tensorboard").resolve())],
            failure_config=tune.FailureConfig(max_failures=trial_retries(exp, in_trial)),
            verbose=1,
        ),
    )


def run_tune(
    exp: Experiment,
    results_root: Path = Path("results"),
    address: str | None = None,
    storage: str | None = None,
    resume: bool = False,
    final: bool = True,
    num_cpus: int | None = None,
) -> Path:
    """Search ``exp.search.space``; write trials.csv, best_config.yaml, final/ and TensorBoard.

    Returns the results folder ``results_root/<name>``.
    """
    if exp.search is None:
        raise ConfigError(f"{exp.name}: no `search` section; use `msa train` for a single run")
    out = results_root / exp.name
    root = storage_root(out, storage, exp.name)
    _prepare_dir(out, exp, resume, f"{root}/{TUNE_DIR}")
    connect(address, num_cpus=num_cpus)
    results = _tuner(exp, out, root, resume).fit()

    records = collect_records(results)
    table = trials_table(records, exp.search.metric, exp.search.mode, exp.train.epochs)
    table.to_csv(out / "trials.csv", index=False)
    history_table(records).to_csv(out / "history.csv", index=False)
    failed = int((table["status"] == "ERROR").sum())
    print(f"[msa] {len(table)} trials ({failed} failed); table in {out / 'trials.csv'}")
    export_best(out)
    if final and exp.final.enabled:
        run_final(out, exp, storage=root)
    return out
