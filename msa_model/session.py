"""Where the training loop runs: :class:`LoopSession`, one local process by default.

:func:`msa_model.training.train` talks to its surroundings only through a session: its rank
and device, the checkpoint to resume from, where each epoch's report (and checkpoint) goes, how
the model is wrapped for data parallelism and how objects are gathered from every worker. The
Ray side (``workflows.runtime.session``) subclasses it for Ray Train workers and Tune trials.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from msa_model.engine import default_device

__all__ = ["LoopSession"]


class LoopSession:
    """One local process: no data parallelism; reports go to ``on_epoch``.

    Args:
        device: Where to train (default: CUDA when available).
        on_epoch: Called with each epoch's report.
        resume_from: A checkpoint folder to resume from.
        keeps_checkpoints: Write a checkpoint every epoch (handed to :meth:`report`).
    """

    rank: int = 0
    world_size: int = 1

    def __init__(
        self,
        device: str | torch.device | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        resume_from: str | None = None,
        keeps_checkpoints: bool = False,
    ) -> None:
        self.device = torch.device(device) if device is not None else default_device()
        self.on_epoch = on_epoch
        self.checkpoint = resume_from  # what to resume from (a path or URI), or None
        self.keeps_checkpoints = keeps_checkpoints

    @contextlib.contextmanager
    def checkpoint_dir(self) -> Iterator[str]:
        """A local folder holding :attr:`checkpoint` while the context lasts."""
        assert self.checkpoint is not None
        yield self.checkpoint

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        """One epoch's metrics and, on rank 0 when checkpoints are kept, its checkpoint folder.

        The folder is deleted after the call: keep it by copying.
        """
        if self.on_epoch is not None:
            self.on_epoch(metrics)

    def extra_metrics(self) -> dict[str, Any]:
        """Facts added to every epoch's report (e.g. the node it ran on)."""
        return {}

    def prepare_model(self, model: nn.Module, find_unused_parameters: bool) -> nn.Module:
        """The model on :attr:`device`, wrapped for data parallelism where there is any."""
        return model.to(self.device)

    def gather(self, obj: Any) -> list[Any]:
        """Every worker's ``obj`` in rank order (``torch.distributed`` when there are several)."""
        if self.world_size == 1:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def log(self, line: str) -> None:
        """One progress line (written directly: Ray Train's patched print would repeat it)."""
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
