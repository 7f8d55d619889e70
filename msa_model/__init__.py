"""msa_model: the Multi-Scale Alignment (MSA) library for remote-sensing image-text retrieval.

The library's API (documented with examples in ``docs/python.md``); it imports without Ray,
:mod:`workflows` holds everything Ray and the CLI::

    import msa_model

    trained = msa_model.load_model("results/demo/model")   # msa export --model
    images = trained.embed_images(["a.png", "b.png"])      # (2, d), L2-normalised
    texts = trained.embed_texts(["a river", "a road"])     # (2, d)
    scores, order = msa_model.rank(images, texts, k=1)     # best caption of each image

- build: :class:`ModelConfig` and its parts, :class:`MSAModel`, :func:`build_tokenizer`,
  :func:`build_model`, :class:`MSALoss`
- fit: :class:`RunSpec` (defaults: :class:`LoopConfig`), :func:`fit`, :class:`LoopSession`,
  :func:`save_model`, :func:`write_synthetic_dataset`, :func:`load_splits`
- load: :func:`load_model` (a :class:`TrainedModel`), :func:`restore_model`
- embed and rank: :meth:`TrainedModel.embed_images`, :meth:`TrainedModel.embed_texts`,
  :func:`rank`, :func:`retrieval_metrics`, :func:`chance_metrics`, :func:`evaluate_checkpoint`

Configs import at once; the rest (torch, timm, transformers) on first use, so
``import msa_model`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from msa_model.chance import chance_metrics
from msa_model.config import (
    ConfigError,
    DataConfig,
    ImageTowerConfig,
    LossConfig,
    ModelConfig,
    MSCMATConfig,
    OptimConfig,
    TextTowerConfig,
    from_dict,
    load_yaml,
    to_dict,
)
from msa_model.spec import LoopConfig, RunSpec

if TYPE_CHECKING:
    from msa_model.checkpoint import CheckpointError, restore_model
    from msa_model.data import write_synthetic_dataset
    from msa_model.evaluation import evaluate_checkpoint
    from msa_model.losses import MSALoss
    from msa_model.metrics import retrieval_metrics
    from msa_model.model import MSAModel
    from msa_model.pipeline import build_model, load_splits
    from msa_model.retrieval import rank
    from msa_model.session import LoopSession
    from msa_model.tokenizer import build_tokenizer
    from msa_model.trained import TrainedModel, load_model, save_model
    from msa_model.training import fit

_LAZY = {
    "CheckpointError": "msa_model.checkpoint",
    "restore_model": "msa_model.checkpoint",
    "write_synthetic_dataset": "msa_model.data",
    "evaluate_checkpoint": "msa_model.evaluation",
    "MSALoss": "msa_model.losses",
    "retrieval_metrics": "msa_model.metrics",
    "MSAModel": "msa_model.model",
    "build_model": "msa_model.pipeline",
    "load_splits": "msa_model.pipeline",
    "rank": "msa_model.retrieval",
    "LoopSession": "msa_model.session",
    "build_tokenizer": "msa_model.tokenizer",
    "TrainedModel": "msa_model.trained",
    "load_model": "msa_model.trained",
    "save_model": "msa_model.trained",
    "fit": "msa_model.training",
}

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DataConfig",
    "ImageTowerConfig",
    "LoopConfig",
    "LoopSession",
    "LossConfig",
    "MSALoss",
    "MSAModel",
    "MSCMATConfig",
    "ModelConfig",
    "OptimConfig",
    "RunSpec",
    "TextTowerConfig",
    "TrainedModel",
    "build_model",
    "build_tokenizer",
    "chance_metrics",
    "evaluate_checkpoint",
    "fit",
    "from_dict",
    "load_model",
    "load_splits",
    "load_yaml",
    "rank",
    "restore_model",
    "retrieval_metrics",
    "save_model",
    "to_dict",
    "write_synthetic_dataset",
]


def __getattr__(name: str) -> Any:
    """Import the heavy parts of the API on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'msa_model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
