"""What one training run needs, as the library sees it (the workflows build it from a YAML)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from msa_model.config import DataConfig, LossConfig, ModelConfig, OptimConfig, to_dict

__all__ = ["LoopConfig", "RunSpec"]


@dataclass
class LoopConfig:
    """The training loop's settings and their one set of defaults (the YAML ``train`` section
    extends it with Ray's)."""

    epochs: int = 10  # training epochs of one run
    batch_size: int = 32  # per-worker batch size
    eval_batch_size: int = 256  # batch size when encoding images/captions for retrieval
    seed: int = 0  # seeds model init, data order, caption sampling, augmentation and dropout


@dataclass(frozen=True)
class RunSpec:
    """One training run: its sections and loop settings (defaults: :class:`LoopConfig`'s).

    ``record`` (the experiment mapping, as run) is stored in every checkpoint's meta as
    ``experiment``; without one, :meth:`recorded` writes the sections and loop settings.
    """

    name: str  # progress lines start with [name] (a Tune trial's: '<experiment> <trial id>')
    data: DataConfig
    model: ModelConfig
    loss: LossConfig
    optim: OptimConfig
    epochs: int = LoopConfig.epochs
    batch_size: int = LoopConfig.batch_size
    eval_batch_size: int = LoopConfig.eval_batch_size
    seed: int = LoopConfig.seed
    train_on_val: bool = False  # train on train+val without validation (final retraining)
    record: dict[str, Any] = field(default_factory=dict)  # the experiment mapping, as run

    def recorded(self) -> dict[str, Any]:
        """The experiment mapping stored in checkpoints (:mod:`msa_model.checkpoint`)."""
        if self.record:
            return self.record
        return {
            "name": self.name,
            **{key: to_dict(getattr(self, key)) for key in ("data", "model", "loss", "optim")},
            "train": {
                "epochs": self.epochs,
                "batch_size": self.batch_size,
                "eval_batch_size": self.eval_batch_size,
                "seed": self.seed,
            },
        }
