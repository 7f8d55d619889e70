"""One training run inside a Tune trial: a search trial or a final-stage run."""

from __future__ import annotations

import math

from ray.tune.integration.ray_train import TuneReportCallback

from msa_model.constants import score_key
from workflows.experiment import Experiment, SearchExperiment
from workflows.runtime.checkpoints import RunCheckpoints
from workflows.runtime.cluster import driver_resources
from workflows.runtime.launch import make_trainer, run_in_trial

__all__ = [
    "trains_in_trial",
    "train_run",
    "concurrent_trials",
    "trial_retries",
    "trial_resources",
    "trial_run_name",
]


def trial_run_name(name: str, trial_id: str) -> str:
    """A search trial's one folder name: its Tune trial dir, its run (checkpoints), TensorBoard."""
    return f"{name}_{trial_id}"


def trains_in_trial(exp: Experiment) -> bool:
    """Whether each trial trains in its own process instead of through a TorchTrainer."""
    return exp.train.trial_launcher == "auto" and exp.train.num_workers == 1


def train_run(
    exp: Experiment,
    run_name: str,
    storage_path: str,
    metric: str,
    mode: str,
    train_on_val: bool = False,
    label: str | None = None,
) -> str | None:
    """Train ``exp`` inside this Tune trial, reporting each epoch; its best checkpoint's path.

    One worker (``trains_in_trial``): the loop runs right here. Otherwise a TorchTrainer runs
    it. Either way ``<storage_path>/<run_name>`` holds the run's checkpoints and their record,
    so a restarted trial resumes from its latest one. The best checkpoint is the best by
    ``metric``, or the last one when training on train+val (no validation); None without any.
    Progress lines start with ``[label]`` (default: the experiment's name).
    """
    run_dir = f"{storage_path}/{run_name}"
    if trains_in_trial(exp):
        run_in_trial(exp, run_dir, metric, mode, train_on_val, label)
        store = RunCheckpoints(run_dir, exp.train.checkpoint_num_to_keep, metric, mode)
        if train_on_val or not store.entries:
            return store.latest()
        best = max(store.entries, key=lambda e: (score_key(e["score"], mode), -e["epoch"]))
        return f"{store.run_dir}/{best['name']}"
    result = make_trainer(
        exp,
        run_name=run_name,
        storage_path=storage_path,
        train_on_val=train_on_val,
        metric=metric,
        mode=mode,
        callbacks=[TuneReportCallback()],
        label=label,
    ).fit()
    checkpoint = result.checkpoint if train_on_val else result.get_best_checkpoint(metric, mode)
    return None if checkpoint is None else checkpoint.path


def concurrent_trials(
    exp: SearchExperiment,
    resources: dict[str, float],
    driver: dict[str, float] | None = None,
    runs: int | None = None,
) -> int:
    """How many trials the cluster runs at once: its CPUs (and GPUs) over one trial's needs.

    A trial needs its Train workers' resources plus its driver's CPU share (``driver``). At
    most ``search.max_concurrent_trials`` and ``runs`` (default: ``search.num_samples``).
    """
    per_trial = exp.train.num_workers * exp.train.cpus_per_worker + (driver or {}).get("CPU", 0)
    fit = math.floor(resources.get("CPU", 1) / per_trial)
    if exp.train.use_gpu:
        fit = min(
            fit,
            math.floor(
                resources.get("GPU", 0) / (exp.train.num_workers * exp.train.gpus_per_worker)
            ),
        )
    runs = runs or exp.search.num_samples
    limit = exp.search.max_concurrent_trials or runs
    return max(1, min(fit, limit, runs))


def trial_retries(exp: SearchExperiment, in_trial: bool) -> int:
    """Tune's restarts of a failed trial (-1: unlimited).

    ``search.max_trial_failures``; a trial that trains in its own process also gets the
    ``train.max_failures`` restarts from its last checkpoint that a TorchTrainer would make.
    """
    counts = [exp.search.max_trial_failures] + ([exp.train.max_failures] if in_trial else [])
    return -1 if -1 in counts else sum(counts)


def trial_resources(exp: Experiment, in_trial: bool) -> dict[str, float]:
    """What Tune reserves for one trial."""
    if not in_trial:  # a Train driver: the TorchTrainer's workers hold the resources
        return driver_resources()
    resources = {"CPU": exp.train.cpus_per_worker}  # the trial process trains itself
    if exp.train.use_gpu:
        resources["GPU"] = exp.train.gpus_per_worker
    return resources
