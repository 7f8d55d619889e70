"""The checkpoint format: plain files, written and read only here.

A checkpoint is a folder::

    meta.json       JSON facts (below)
    model.pt        the model's state dict
    optimizer.pt    the training state to resume from (absent in a weights-only checkpoint):
                    {"optimizer", "scheduler", "scaler", "loss", "epoch"}
    tokenizer/      the tokenizer (``save_pretrained``)

``meta.json`` holds ``format_version`` (:data:`FORMAT_VERSION`), ``epoch`` (epochs trained),
``metrics`` (this epoch's report), ``history`` (every epoch's report so far), ``experiment``
(the run's experiment mapping without ``search``: ``model`` rebuilds the model, ``data`` and
``train.eval_batch_size`` evaluate it) and ``text_encoder_config`` (the text encoder's Hugging
Face config, so nothing is downloaded). A meta without ``format_version`` is version 1 (the
field came later; the layout is the same).

A weights-only model (:func:`save_model_package`, what ``msa export --model`` ships) is the same
folder with ``model.safetensors`` instead of ``model.pt``, no ``optimizer.pt``, ``kind: model``
and no ``history`` in its meta, and ``experiment.yaml`` (its experiment, runnable by
``msa train``); every reader here takes both.

Tensors are loaded with ``torch.load(weights_only=True)``: nothing is unpickled, so a checkpoint
from an untrusted source cannot run code.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from msa_model.tokenizer import load_tokenizer

if TYPE_CHECKING:
    from msa_model.model import MSAModel

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "checkpoint_meta",
    "save_checkpoint",
    "read_checkpoint_meta",
    "load_model_state",
    "load_training_state",
    "restore_model",
    "save_model_package",
    "STATE_FILE",
]

FORMAT_VERSION = 1
READABLE_VERSIONS = (1,)
MODEL_FILE = "model.pt"
STATE_FILE = "optimizer.pt"
WEIGHTS_FILE = "model.safetensors"  # a weights-only model's tensors
EXPERIMENT_FILE = "experiment.yaml"
META_FILE = "meta.json"
TOKENIZER_DIR = "tokenizer"


class CheckpointError(ValueError):
    """A folder that is not a checkpoint this version of msa-tune can read."""


def checkpoint_meta(
    experiment: dict[str, Any], model: MSAModel, epoch: int, history: list[dict[str, Any]]
) -> dict[str, Any]:
    """The meta of the checkpoint after ``epoch``; ``history[-1]`` is that epoch's report."""
    return {
        "format_version": FORMAT_VERSION,
        "epoch": epoch,
        "metrics": history[-1] if history else {},
        "history": history,
        "experiment": experiment,
        "text_encoder_config": model.text.encoder.config.to_dict(),
    }


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    meta: dict[str, Any],
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint folder (created); returns it.

    Args:
        directory: Target folder.
        model: The (unwrapped) model.
        tokenizer: Its tokenizer.
        meta: From :func:`checkpoint_meta` (``format_version`` is stamped when missing).
        training_state: State dicts to resume from (optimizer, scheduler, scaler, loss, epoch).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / MODEL_FILE)
    if training_state is not None:
        torch.save(training_state, directory / STATE_FILE)
    tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
    meta = {"format_version": FORMAT_VERSION, **meta}
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return directory


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    """The meta of a checkpoint folder.

    Raises:
        FileNotFoundError: the folder has no ``meta.json``.
        CheckpointError: its ``format_version`` is not one this version reads.
    """
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not an msa-tune checkpoint (no {META_FILE})")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint meta ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: corrupt checkpoint meta (not a JSON object)")
    version = meta.get("format_version", 1)
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path}: checkpoint format_version {version!r} is unknown to this msa-tune (it reads "
            f"{', '.join(map(str, READABLE_VERSIONS))}); was it written by a newer version?"
        )
    return meta


def load_model_state(
    directory: str | Path, map_location: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """The model's saved state dict (``model.safetensors`` of a weights-only model)."""
    weights = Path(directory) / WEIGHTS_FILE
    if weights.is_file():
        return _load_safetensors(weights, map_location)
    return _load_tensors(Path(directory) / MODEL_FILE, map_location)


def load_training_state(
    directory: str | Path, map_location: str | torch.device = "cpu"
) -> dict[str, Any] | None:
    """The saved training state (optimizer, scheduler, scaler, loss, epoch), None if absent."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        return None
    return _load_tensors(path, map_location)


def _load_tensors(path: Path, map_location: str | torch.device) -> Any:
    """``torch.load`` without unpickling; a truncated or foreign file is a CheckpointError."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{path}: unreadable checkpoint file ({first})") from exc


def restore_model(
    directory: str | Path, device: str | torch.device = "cpu"
) -> tuple[MSAModel, dict[str, Any]]:
    """Rebuild a model from a checkpoint folder alone (no downloads, no unpickling).

    Returns the model in eval mode on ``device`` and the checkpoint's meta.
    """
    from msa_model.config import ModelConfig, from_dict
    from msa_model.model import MSAModel

    meta = read_checkpoint_meta(directory)
    model_cfg = from_dict(ModelConfig, meta["experiment"]["model"], "model")
    model_cfg.image.pretrained, model_cfg.image.weights_file = False, None
    model_cfg.text.name, model_cfg.text.config = None, dict(meta["text_encoder_config"])
    tokenizer = load_tokenizer(str(Path(directory) / TOKENIZER_DIR))
    model = MSAModel(model_cfg, tokenizer)
    model.load_state_dict(load_model_state(directory, device))
    return model.to(device).eval(), meta


def _load_safetensors(path: Path, map_location: str | torch.device) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors; a truncated or foreign file is a CheckpointError."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device=str(map_location))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{path}: unreadable weights file ({exc})") from exc


def save_model_package(
    directory: str | Path,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    meta: dict[str, Any],
) -> Path:
    """Write a weights-only model folder (created); returns it.

    Args:
        directory: Target folder.
        model: The (unwrapped) model.
        tokenizer: Its tokenizer.
        meta: A checkpoint's meta; ``history`` is dropped, ``kind: model`` added, and its
            ``experiment`` is also written as ``experiment.yaml``.
    """
    import yaml
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # cloned: safetensors refuses tensors that share memory
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
    meta = {**{k: v for k, v in meta.items() if k != "history"}, "kind": "model"}
    meta["format_version"] = FORMAT_VERSION
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    (directory / EXPERIMENT_FILE).write_text(
        yaml.safe_dump(meta["experiment"], sort_keys=False, allow_unicode=True)
    )
    return directory
