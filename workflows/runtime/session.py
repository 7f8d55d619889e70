"""The loop's Ray sessions: a Ray Train worker, or a Tune trial's own process.

Both implement :class:`msa_model.session.LoopSession`, through which
:func:`msa_model.training.train` resumes, reports and checkpoints.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import ray
import ray.train
import ray.train.torch
import ray.tune
from torch import nn

from msa_model.engine import default_device
from msa_model.session import LoopSession
from workflows.runtime.checkpoints import RunCheckpoints

__all__ = ["TrainWorkerSession", "TuneTrialSession"]


def _node() -> dict[str, Any]:
    return {"node_id": ray.get_runtime_context().get_node_id()}


class TrainWorkerSession(LoopSession):
    """Inside a Ray Train worker: DDP over the worker group, Train's checkpoints and reports."""

    def __init__(self) -> None:
        ctx = ray.train.get_context()
        self._checkpoint = ray.train.get_checkpoint()
        super().__init__(
            device=ray.train.torch.get_device(),
            resume_from=None if self._checkpoint is None else self._checkpoint.path,
            keeps_checkpoints=True,
        )
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()

    @contextlib.contextmanager
    def checkpoint_dir(self) -> Iterator[str]:
        with self._checkpoint.as_directory() as local:
            yield local

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        checkpoint = None
        if checkpoint_dir is not None:
            checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)
        ray.train.report(metrics, checkpoint=checkpoint)

    def extra_metrics(self) -> dict[str, Any]:
        return _node()  # rank 0's node is the one reported

    def prepare_model(self, model: nn.Module, find_unused_parameters: bool) -> nn.Module:
        return ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": find_unused_parameters}
        )


class TuneTrialSession(LoopSession):
    """Inside a Tune function trainable: one process, reporting to Tune.

    Checkpoints go to ``checkpoints`` (the run's own record, so a restarted trial resumes from
    its latest one) and reach Tune as ``checkpoint_path``, as a TorchTrainer's do. Tune gives
    the trial its GPU (``CUDA_VISIBLE_DEVICES``), so the device is ``cuda`` or the CPU.
    """

    def __init__(self, use_gpu: bool, checkpoints: RunCheckpoints) -> None:
        super().__init__(
            device=default_device(use_gpu),
            resume_from=checkpoints.latest(),
            keeps_checkpoints=True,
        )
        self.checkpoints = checkpoints

    @contextlib.contextmanager
    def checkpoint_dir(self) -> Iterator[str]:
        with ray.train.Checkpoint(self.checkpoint).as_directory() as local:
            yield local

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        if checkpoint_dir is not None:
            path = self.checkpoints.save(checkpoint_dir, int(metrics["epoch"]), metrics)
            metrics = {**metrics, "checkpoint_path": path}
        ray.tune.report(metrics)

    def extra_metrics(self) -> dict[str, Any]:
        return _node()
