"""Launching one run: a ``TorchTrainer`` (``msa train``, DDP trials, the final retraining) or
the loop in a Tune trial's own process."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from msa_model.constants import DEFAULT_METRIC, DEFAULT_MODE
from msa_model.spec import RunSpec
from workflows.experiment import Experiment
from workflows.runtime.reporter import logging_level

__all__ = [
    "make_trainer",
    "run_worker",
    "run_in_trial",
    "run_spec",
    "scaling_config",
    "storage_root",
]


def storage_root(results_dir: Path, storage: str | None, name: str) -> str:
    """Where Ray keeps an experiment's state and checkpoints.

    Default: ``<results_dir>/ray`` on the driver's disk; ``--storage`` (a shared directory or an
    ``s3://``/``gs://`` URI) puts it at ``<storage>/<name>`` for multi-node clusters.
    """
    if storage is None:
        return str((results_dir / "ray").resolve())
    if "://" in storage:
        return f"{storage.rstrip('/')}/{name}"
    return str((Path(storage).expanduser() / name).resolve())


def scaling_config(exp: Experiment) -> ScalingConfig:
    """Workers and per-worker resources of the ``train`` section."""
    resources: dict[str, float] = {"CPU": exp.train.cpus_per_worker}
    if exp.train.use_gpu:
        resources["GPU"] = exp.train.gpus_per_worker
    return ScalingConfig(
        num_workers=exp.train.num_workers,
        use_gpu=exp.train.use_gpu,
        resources_per_worker=resources,
    )


def run_worker(config: dict[str, Any]) -> None:
    """The Train workers' entry point: :func:`msa_model.training.train` of ``config["spec"]``.

    Imported here: Tune trial drivers build a TorchTrainer but never train, and importing the
    loop (timm, transformers, the model) only inside the workers saves each ~3 CPU-seconds.
    """
    import torch

    from msa_model.training import train
    from workflows.runtime.fatal import run_once
    from workflows.runtime.session import TrainWorkerSession

    # INFO lines in this worker follow --verbose, as Train's controller's do (its RunConfig's
    # logging_config): Ray Train's, and its "Reporting training result", logged through a logger
    # named after its file, which only the root logger's level reaches
    for name in ("ray.train", None):
        logging.getLogger(name).setLevel(config["log_level"])
    torch.set_num_threads(config["torch_threads"])
    # an error that would repeat (bad weights, bad data) is not trained again on Train's retry
    run_once(
        config["run_dir"],
        lambda: train(config["spec"], TrainWorkerSession(config["metric"], config["mode"])),
    )


def run_spec(exp: Experiment, train_on_val: bool = False, label: str | None = None) -> RunSpec:
    """The run of ``exp``, its progress lines headed ``[label]`` (default: the experiment name)."""
    spec = exp.spec(train_on_val)
    return spec if label is None else dataclasses.replace(spec, name=label)


def run_in_trial(
    exp: Experiment,
    run_dir: str,
    metric: str,
    mode: str,
    train_on_val: bool = False,
    label: str | None = None,
) -> None:
    """A one-worker run inside a Tune trial's own process (``train.trial_launcher: auto``).

    The same loop as a Train worker's, reporting to Tune; its checkpoints are kept in
    ``run_dir`` like a TorchTrainer run's (best ``checkpoint_num_to_keep`` by ``metric`` plus
    the latest). No Train controller, placement group or worker actor is started for it.
    """
    import torch

    from msa_model.training import train
    from workflows.runtime.checkpoints import RunCheckpoints
    from workflows.runtime.session import TuneTrialSession

    store = RunCheckpoints(run_dir, exp.train.checkpoint_num_to_keep, metric, mode)
    torch.set_num_threads(exp.train.threads())
    train(run_spec(exp, train_on_val, label), TuneTrialSession(exp.train.use_gpu, store))


def make_trainer(
    exp: Experiment,
    *,
    run_name: str,
    storage_path: str,
    train_on_val: bool = False,
    metric: str = DEFAULT_METRIC,
    mode: str = DEFAULT_MODE,
    callbacks: list[Any] | None = None,
    label: str | None = None,
) -> TorchTrainer:
    """A TorchTrainer whose workers run the training loop on ``exp`` (its typed run spec).

    ``run_name`` must be stable (no timestamps) so a restarted run resumes from its checkpoint.
    The best ``checkpoint_num_to_keep`` checkpoints by ``metric`` are kept (plus the latest).
    """
    score = None if train_on_val else metric
    return TorchTrainer(
        run_worker,
        train_loop_config={
            "spec": run_spec(exp, train_on_val, label),
            "torch_threads": exp.train.threads(),
            "metric": metric,
            "mode": mode,
            "run_dir": f"{storage_path.rstrip('/')}/{run_name}",
            "log_level": logging_level(),
        },
        scaling_config=scaling_config(exp),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(
                num_to_keep=exp.train.checkpoint_num_to_keep,
                checkpoint_score_attribute=score,
                checkpoint_score_order=mode,
            ),
            failure_config=FailureConfig(max_failures=exp.train.max_failures),
            callbacks=callbacks or [],
            # Train's INFO lines (resources, worker group, each report) only with --verbose
            logging_config=LoggingConfig(log_level=logging.getLevelName(logging_level())),
        ),
    )
