"""The loop's Ray sessions: a Ray Train worker, or a Tune trial's own process.

Both implement :class:`msa_model.session.LoopSession`, through which
:func:`msa_model.training.train` resumes, reports and checkpoints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import ray
import ray.train
import ray.train.torch
import ray.tune
from torch import nn

from msa_model.checkpoint import read_checkpoint_meta
from msa_model.constants import DEFAULT_METRIC, DEFAULT_MODE, better
from msa_model.engine import default_device
from msa_model.session import LoopSession
from workflows.runtime.checkpoints import RunCheckpoints

__all__ = ["RunningBest", "running_best_key", "TrainWorkerSession", "TuneTrialSession"]


def running_best_key(metric: str) -> str:
    """The reported key of ``metric``'s best value so far (what Optuna and ASHA see)."""
    return f"{metric}_best"


class RunningBest:
    """Adds ``<metric>_best``, the best value so far, to each report (resumed runs included)."""

    def __init__(self, metric: str, mode: str, earlier: Iterable[float | None] = ()) -> None:
        self.metric, self.mode, self.value = metric, mode, None
        for score in earlier:
            self._see(score)

    def _see(self, score: float | None) -> None:
        if score is not None and better(float(score), self.value, self.mode):
            self.value = float(score)

    def add(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """``metrics`` with the running best (unchanged while the metric was never reported)."""
        self._see(metrics.get(self.metric))
        if self.value is None:
            return metrics
        return {**metrics, running_best_key(self.metric): self.value}


def _node() -> dict[str, Any]:
    return {"node_id": ray.get_runtime_context().get_node_id()}


class TrainWorkerSession(LoopSession):
    """Inside a Ray Train worker: DDP over the worker group, Train's checkpoints and reports."""

    def __init__(self, metric: str = DEFAULT_METRIC, mode: str = DEFAULT_MODE) -> None:
        ctx = ray.train.get_context()
        self._checkpoint = ray.train.get_checkpoint()
        super().__init__(
            device=ray.train.torch.get_device(),
            resume_from=None if self._checkpoint is None else self._checkpoint.path,
            keeps_checkpoints=True,
        )
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        earlier = []
        if self._checkpoint is not None:  # the epochs before the restart
            with self.checkpoint_dir() as local:
                history = read_checkpoint_meta(local).get("history", [])
            earlier = [epoch.get(metric) for epoch in history]
        self.best = RunningBest(metric, mode, earlier)

    @contextlib.contextmanager
    def checkpoint_dir(self) -> Iterator[str]:
        with self._checkpoint.as_directory() as local:
            yield local

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        checkpoint = None
        if checkpoint_dir is not None:
            checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)
        ray.train.report(self.best.add(metrics), checkpoint=checkpoint)

    def extra_metrics(self) -> dict[str, Any]:
        return _node()  # rank 0's node is the one reported

    def prepare_model(self, model: nn.Module, find_unused_parameters: bool) -> nn.Module:
        return ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": find_unused_parameters}
        )


class TuneTrialSession(LoopSession):
    """Inside a Tune function trainable: one process, reporting to Tune.

    Checkpoints go to ``checkpoints`` (the run's own record, so a restarted trial resumes from
    its latest one) and reach Tune as ``checkpoint_path`` only, as a TorchTrainer's do through
    ``TuneReportCallback``: Tune stores no second copy (its ``Result.checkpoint`` is None; the
    trial's best is in ``trials.csv`` and ``best_config.yaml``). Tune gives the trial its GPU
    (``CUDA_VISIBLE_DEVICES``), so the device is ``cuda`` or the CPU.
    """

    def __init__(self, use_gpu: bool, checkpoints: RunCheckpoints) -> None:
        super().__init__(
            device=default_device(use_gpu),
            resume_from=checkpoints.latest(),
            keeps_checkpoints=True,
        )
        self.checkpoints = checkpoints
        # the best checkpoint is always kept: its score is the best before a restart
        earlier = [entry["score"] for entry in checkpoints.entries]
        self.best = RunningBest(checkpoints.metric, checkpoints.mode, earlier)

    @contextlib.contextmanager
    def checkpoint_dir(self) -> Iterator[str]:
        with ray.train.Checkpoint(self.checkpoint).as_directory() as local:
            yield local

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        if checkpoint_dir is not None:
            path = self.checkpoints.save(checkpoint_dir, int(metrics["epoch"]), metrics)
            metrics = {**metrics, "checkpoint_path": path}
        ray.tune.report(self.best.add(metrics))

    def extra_metrics(self) -> dict[str, Any]:
        return _node()
