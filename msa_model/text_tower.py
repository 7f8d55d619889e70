"""Text tower: a Hugging Face encoder giving the global [CLS] embedding and local token states."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, BertConfig

from msa_model.config import TextTowerConfig
from msa_model.frozen import FeatureMemo, keep_frozen
from msa_model.weights import resolve_resource

__all__ = ["TextTower", "ModelNotFoundError"]


class ModelNotFoundError(FileNotFoundError):
    """A pretrained text encoder is not available offline; the message says how to provide it."""


def _load_encoder(cfg: TextTowerConfig, vocab_size: int) -> nn.Module:
    if cfg.name is None:
        kwargs = {"max_position_embeddings": max(64, cfg.max_length), **cfg.config}
        kwargs["vocab_size"] = vocab_size
        model_type = kwargs.pop("model_type", None)  # a saved encoder config carries its type
        config = AutoConfig.for_model(model_type, **kwargs) if model_type else BertConfig(**kwargs)
        encoder = AutoModel.from_config(config)
    else:
        name = resolve_resource(cfg.name, "model.text.name")
        local = Path(name).expanduser()
        try:
            encoder = AutoModel.from_pretrained(str(local) if local.is_dir() else name)
        except OSError as exc:
            raise ModelNotFoundError(
                f"model.text.name: {cfg.name!r} is neither a local directory nor in the Hugging "
                f'Face cache, and nothing can be downloaded here. Either run `python -c "from '
                f"transformers import AutoModel, AutoTokenizer; AutoModel.from_pretrained("
                f"'{cfg.name}'); AutoTokenizer.from_pretrained('{cfg.name}')\"` on a connected "
                f"machine and copy ~/.cache/huggingface/hub here, or give the path of a folder "
                f"with config.json, the weights and the tokenizer files."
            ) from exc
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None  # unused: [CLS] is read from the last hidden state
    return encoder


class TextTower(nn.Module):
    """Encoder -> (global embedding (B, d), token states (B, L-1, d), token mask (B, L-1)).

    The [CLS] state is the global embedding; the remaining positions are the local features.
    Both are projected to ``embed_dim`` when the encoder's hidden size differs.
    """

    def __init__(
        self, cfg: TextTowerConfig, embed_dim: int, vocab_size: int, cache_dir: str | None = None
    ) -> None:
        super().__init__()
        self.encoder = _load_encoder(cfg, vocab_size)
        hidden = self.encoder.config.hidden_size
        self.global_proj = nn.Linear(hidden, embed_dim) if hidden != embed_dim else nn.Identity()
        self.token_proj = nn.Linear(hidden, embed_dim) if hidden != embed_dim else nn.Identity()
        self.freeze = cfg.freeze
        keep_frozen(self.encoder if self.freeze else None)
        self._memo = None
        if cfg.cache_frozen:
            self._memo = FeatureMemo(self._states, self.encoder, cache_dir, ["text"])

    def train(self, mode: bool = True) -> TextTower:
        super().train(mode)
        keep_frozen(self.encoder if self.freeze else None)
        if not mode and self._memo is not None:
            self._memo.save()
        return self

    def _states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return [out.last_hidden_state]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        memo = self._states if self._memo is None else self._memo
        (states,) = memo(input_ids, attention_mask)
        return (
            self.global_proj(states[:, 0]),
            self.token_proj(states[:, 1:]),
            attention_mask[:, 1:],
        )
