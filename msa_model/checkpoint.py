"""Checkpoints as plain files: tensors through ``torch.load(weights_only=True)``, the rest JSON.

Nothing is unpickled on load, so a checkpoint from an untrusted source cannot run code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from msa_model.tokenizer import load_tokenizer

__all__ = ["save_checkpoint", "load_checkpoint_state", "read_checkpoint_meta"]

MODEL_FILE = "model.pt"
OPTIM_FILE = "optimizer.pt"
META_FILE = "meta.json"
TOKENIZER_DIR = "tokenizer"


def save_checkpoint(
    directory: str | Path,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    meta: dict[str, Any],
    optimizer: torch.optim.Optimizer | None = None,
    extra_state: dict[str, Any] | None = None,
) -> Path:
    """Write model weights, optional optimizer/scheduler state, the tokenizer and ``meta``.

    Args:
        directory: Target folder (created).
        model: The (unwrapped) model.
        tokenizer: Its tokenizer, saved with ``save_pretrained``.
        meta: JSON-serialisable facts (epoch, config, metrics).
        optimizer: Saved with ``extra_state`` (e.g. scheduler and scaler state) when given.
        extra_state: Tensor/number-only state dicts stored beside the optimizer's.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / MODEL_FILE)
    if optimizer is not None:
        torch.save(
            {"optimizer": optimizer.state_dict(), **(extra_state or {})}, directory / OPTIM_FILE
        )
    tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
    (directory / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return directory


def read_checkpoint_meta(directory: str | Path) -> dict[str, Any]:
    """The JSON facts of a checkpoint; a clear error when the folder is not one."""
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not an msa-tune checkpoint (no {META_FILE})")
    return json.loads(path.read_text())


def load_checkpoint_state(
    directory: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, PreTrainedTokenizerBase]:
    """``(model_state, optimizer_and_extra_state or None, tokenizer)`` loaded without pickles."""
    directory = Path(directory)
    model_state = torch.load(directory / MODEL_FILE, map_location=map_location, weights_only=True)
    optim_path = directory / OPTIM_FILE
    optim_state = (
        torch.load(optim_path, map_location=map_location, weights_only=True)
        if optim_path.is_file()
        else None
    )
    return model_state, optim_state, load_tokenizer(str(directory / TOKENIZER_DIR))
