"""Where the training loop runs: a Ray Train worker, or a Tune trial's own process.

:func:`workflows.runtime.loop.train_loop` talks to Ray only through a :class:`LoopSession`: its
rank, device, the checkpoint to resume from, how to report an epoch, and how to wrap the model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray.train
import ray.train.torch
import ray.tune
import torch

from workflows.runtime.checkpoints import RunCheckpoints

__all__ = ["LoopSession", "train_session", "tune_session"]


@dataclass(frozen=True)
class LoopSession:
    """What one training process needs from Ray."""

    rank: int
    world_size: int
    device: torch.device
    checkpoint: Any  # the ray.train.Checkpoint to resume from, or None
    report: Callable[[dict[str, Any], str | None], None]  # (metrics, checkpoint dir or None)
    prepare_model: Callable[..., torch.nn.Module]  # (model, parallel_strategy_kwargs=...)


def train_session() -> LoopSession:
    """Inside a Ray Train worker: DDP over the worker group, Train's checkpoints and reports."""
    ctx = ray.train.get_context()

    def report(metrics: dict[str, Any], directory: str | None) -> None:
        checkpoint = None if directory is None else ray.train.Checkpoint.from_directory(directory)
        ray.train.report(metrics, checkpoint=checkpoint)

    return LoopSession(
        rank=ctx.get_world_rank(),
        world_size=ctx.get_world_size(),
        device=ray.train.torch.get_device(),
        checkpoint=ray.train.get_checkpoint(),
        report=report,
        prepare_model=ray.train.torch.prepare_model,
    )


def tune_session(use_gpu: bool, checkpoints: RunCheckpoints) -> LoopSession:
    """Inside a Tune function trainable: one process, reporting to Tune.

    Checkpoints go to ``checkpoints`` (the run's own record, so a restarted trial resumes from
    its latest one) and reach Tune as ``checkpoint_path``, as a TorchTrainer's do. Tune gives
    the trial its GPU (``CUDA_VISIBLE_DEVICES``), so the device is ``cuda`` or CPU.
    """
    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")

    def report(metrics: dict[str, Any], directory: str | None) -> None:
        if directory is not None:
            path = checkpoints.save(directory, int(metrics["epoch"]), metrics)
            metrics = {**metrics, "checkpoint_path": path}
        ray.tune.report(metrics)

    def prepare_model(model: torch.nn.Module, **_: Any) -> torch.nn.Module:
        return model.to(device)

    latest = checkpoints.latest()

    return LoopSession(
        rank=0,
        world_size=1,
        device=device,
        checkpoint=None if latest is None else ray.train.Checkpoint(latest),
        report=report,
        prepare_model=prepare_model,
    )
