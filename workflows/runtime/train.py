"""One Ray Train run of an experiment (``msa train``), with its results on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from msa_model.constants import DEFAULT_METRIC, DEFAULT_MODE, better
from workflows.experiment import Experiment, dump_experiment
from workflows.experiment.datasets import check_run_data
from workflows.results.folders import prepare_results_dir, release_lock, remove_stored
from workflows.results.paths import relative_to_results
from workflows.runtime.cluster import check_feasible, connect
from workflows.runtime.fatal import deterministic, forget_failure
from workflows.runtime.launch import make_trainer, storage_root
from workflows.runtime.records import checkpoint_history
from workflows.runtime.tensorboard import TrainTensorBoard

__all__ = ["run_train"]


def run_train(
    exp: Experiment,
    results_root: Path = Path("results"),
    address: str | None = None,
    storage: str | None = None,
    num_cpus: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> dict:
    """Train ``exp`` once; write ``experiment.yaml``, ``history.csv`` and ``metrics.json``.

    An existing results folder is continued only with ``resume`` (same config) and replaced
    only with ``overwrite`` (see :func:`~workflows.results.folders.prepare_results_dir`); the
    dataset is checked before Ray starts.

    Returns the summary written to ``metrics.json`` (best epoch by the validation mR, its
    metrics and checkpoint path).
    """
    out = results_root / exp.name
    check_run_data(exp.with_absolute_paths().data)
    prepare_results_dir(out, "msa train", resume, overwrite, exp)
    try:
        return _train(exp, out, address, storage, num_cpus, overwrite)
    finally:
        release_lock(out)


def _train(
    exp: Experiment,
    out: Path,
    address: str | None,
    storage: str | None,
    num_cpus: int | None,
    overwrite: bool,
) -> dict:
    """:func:`run_train` in its prepared, locked results folder."""
    if overwrite and storage is not None:  # the old run's Train state would be resumed
        remove_stored(f"{storage_root(out, storage, exp.name)}/train")
    dump_experiment(exp, out / "experiment.yaml", with_search=False)
    forget_failure(f"{storage_root(out, storage, exp.name)}/train")
    connect(address, num_cpus=num_cpus, name=exp.name)
    check_feasible(exp)
    metric = exp.search.metric if exp.search else DEFAULT_METRIC
    mode = exp.search.mode if exp.search else DEFAULT_MODE
    trainer = make_trainer(
        exp,
        run_name="train",
        storage_path=storage_root(out, storage, exp.name),
        metric=metric,
        mode=mode,
        callbacks=[TrainTensorBoard((out / "tensorboard" / "train").resolve())],
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # a Train error wraps the worker's: report the cause in one line
        cause = deterministic(exc)
        if cause is None:
            raise
        raise cause from None
    # every epoch, oldest first, from the run's own record (Ray's frame has the kept ones only)
    recorded = checkpoint_history(result.checkpoint.path) if result.checkpoint else []
    history = pd.DataFrame(recorded) if recorded else result.metrics_dataframe
    history.to_csv(out / "history.csv", index=False)
    best_metrics, best_path = result.metrics, result.checkpoint.path if result.checkpoint else None
    if result.best_checkpoints and metric in history:
        ckpt, best_metrics = result.best_checkpoints[0]
        for other, scores in result.best_checkpoints[1:]:
            if better(scores.get(metric), best_metrics.get(metric), mode):
                ckpt, best_metrics = other, scores
        best_path = ckpt.path
    summary = {
        "name": exp.name,
        "metric": metric,
        "best_epoch": best_metrics.get("epoch"),
        "best": {k: v for k, v in best_metrics.items() if k.startswith(("val_", "train_"))},
        "checkpoint": relative_to_results(best_path, out),
        "epochs": int(history["epoch"].max()) if "epoch" in history else 0,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary
