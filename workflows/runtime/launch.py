"""Building the ``TorchTrainer`` of one run, shared by ``msa train`` and each Tune trial."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from workflows.experiment import Experiment

__all__ = [
    "make_trainer",
    "loop_config",
    "run_worker",
    "run_in_trial",
    "scaling_config",
    "storage_root",
    "absolute_data_paths",
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


def absolute_data_paths(raw: dict[str, Any], base: Path | None = None) -> dict[str, Any]:
    """Resolve ``data.json``/``data.images`` against ``base`` (default: the current directory).

    Workers run in other directories (and on other nodes), so paths are fixed on the driver.
    """
    base = base or Path.cwd()
    data = dict(raw.get("data") or {})
    for key in ("json", "images"):
        if key in data and not os.path.isabs(os.path.expanduser(data[key])):
            data[key] = str((base / data[key]).resolve())
    return {**raw, "data": data}


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


def run_worker(loop_config: dict[str, Any]) -> None:
    """The Train workers' entry point: :func:`workflows.runtime.loop.train_loop`, imported here.

    Tune trial drivers build a TorchTrainer but never train; importing the worker (timm,
    transformers, the model) only inside the workers saves each trial driver ~3 CPU-seconds.
    """
    from workflows.runtime.loop import train_loop

    train_loop(loop_config)


def run_in_trial(exp: Experiment, run_dir: str, metric: str, mode: str) -> None:
    """A one-worker run inside a Tune trial's own process (``train.trial_launcher: auto``).

    The same loop as a Train worker's, reporting to Tune; its checkpoints are kept in
    ``run_dir`` like a TorchTrainer run's (best ``checkpoint_num_to_keep`` by ``metric`` plus
    the latest). No Train controller, placement group or worker actor is started for it.
    """
    from workflows.runtime.checkpoints import RunCheckpoints
    from workflows.runtime.loop import train_loop
    from workflows.runtime.session import tune_session

    store = RunCheckpoints(run_dir, exp.train.checkpoint_num_to_keep, metric, mode)
    train_loop(loop_config(exp), tune_session(exp.train.use_gpu, store))


def loop_config(exp: Experiment, train_on_val: bool = False) -> dict[str, Any]:
    """The training loop's argument: the experiment (data paths made absolute) and the mode."""
    return {
        "experiment": absolute_data_paths(exp.to_dict(with_search=False)),
        "train_on_val": train_on_val,
    }


def make_trainer(
    exp: Experiment,
    *,
    run_name: str,
    storage_path: str,
    train_on_val: bool = False,
    metric: str = "val_mr",
    mode: str = "max",
    callbacks: list[Any] | None = None,
) -> TorchTrainer:
    """A TorchTrainer running :func:`workflows.runtime.loop.train_loop` on ``exp``.

    ``run_name`` must be stable (no timestamps) so a restarted run resumes from its checkpoint.
    The best ``checkpoint_num_to_keep`` checkpoints by ``metric`` are kept (plus the latest).
    """
    score = None if train_on_val else metric
    return TorchTrainer(
        run_worker,
        train_loop_config=loop_config(exp, train_on_val),
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
        ),
    )
