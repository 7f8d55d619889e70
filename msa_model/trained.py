"""A trained model in use from Python: load it, embed image files and captions, save one.

``load_model`` reads what ``msa export --model`` writes (or any checkpoint folder of a run);
the result keeps the image settings the model was trained with, so embedding a file is one call.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from msa_model.checkpoint import checkpoint_meta, restore_model, save_model_package
from msa_model.config import DataConfig, from_dict
from msa_model.model import MSAModel
from msa_model.retrieval import embed_images, embed_texts
from msa_model.spec import RunSpec

__all__ = ["TrainedModel", "load_model", "save_model"]


@dataclass(frozen=True)
class TrainedModel:
    """A restored model with the image settings it was trained with."""

    model: MSAModel  # in eval mode on ``device``
    data: DataConfig  # the run's data section: image size, normalisation, resize filter
    meta: dict[str, Any]  # the folder's meta.json: experiment (as run), epoch, metrics
    device: torch.device

    @property
    def experiment(self) -> dict[str, Any]:
        """The experiment mapping the model was trained with (the YAML schema)."""
        return self.meta["experiment"]

    def embed_images(self, paths: Sequence[str | Path], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised global embeddings (N, d) of the image files ``paths``, in order.

        Raises:
            FileNotFoundError: A path is not a file (the first such is named).
            ValueError: ``paths`` is empty.
        """
        if not paths:
            raise ValueError("no images to embed")
        files = [Path(p).expanduser().resolve() for p in paths]
        for given, file in zip(paths, files, strict=True):
            if not file.is_file():
                raise FileNotFoundError(f"{given}: no such image file")
        root = Path(os.path.commonpath([f.parent for f in files]))
        names = [f.relative_to(root).as_posix() for f in files]
        return embed_images(self.model, self.data, root, names, self.device, batch_size)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised global embeddings (M, d) of ``texts``, in order."""
        if not texts:
            raise ValueError("no texts to embed")
        return embed_texts(self.model, list(texts), self.device, batch_size)


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> TrainedModel:
    """The model of an exported model folder (``msa export --model``) or a checkpoint folder.

    Nothing downloads and nothing is unpickled; frozen towers a checkpoint references load from
    their source offline (see :func:`msa_model.checkpoint.restore_model`).
    """
    device = torch.device(device)
    model, meta = restore_model(directory, device)
    data = from_dict(DataConfig, meta["experiment"]["data"], "data")
    return TrainedModel(model, data, meta, device)


def save_model(
    directory: str | Path, model: MSAModel, spec: RunSpec, history: list[dict[str, Any]]
) -> Path:
    """Write what :func:`msa_model.training.fit` returned as an exported model folder (the
    format of ``msa export --model``: safetensors, tokenizer, meta.json, experiment.yaml)."""
    meta = checkpoint_meta(spec.recorded(), model, len(history), history)
    return save_model_package(directory, model, model.tokenizer, meta)
