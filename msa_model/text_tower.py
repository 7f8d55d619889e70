"""Text tower: a Hugging Face encoder giving the global [CLS] embedding and local token states."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, BertConfig
from transformers.masking_utils import create_bidirectional_mask

from msa_model.config import ConfigError, TextTowerConfig
from msa_model.frozen import FeatureMemo, keep_frozen
from msa_model.weights import RemoteCodeRefusedError, resolve_resource

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
            encoder = AutoModel.from_pretrained(
                str(local) if local.is_dir() else name, trust_remote_code=False
            )
        except ValueError as exc:  # auto_map to a .py in the folder: never run, refused
            raise RemoteCodeRefusedError(
                f"model.text.name: {cfg.name!r} asks to run its own Python code (auto_map in "
                f"its config); msa never runs code from a model folder: "
                f"{str(exc).splitlines()[0]}"
            ) from exc
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


def _layers(encoder: nn.Module) -> nn.ModuleList | None:
    """The transformer layers of a BERT-style encoder (``embeddings`` + ``encoder.layer``)."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if isinstance(layers, nn.ModuleList) and hasattr(encoder, "embeddings"):
        return layers
    return None


class TextTower(nn.Module):
    """Encoder -> (global embedding (B, d), token states (B, L-1, d), token mask (B, L-1)).

    The [CLS] state is the global embedding; the remaining positions are the local features.
    Both are projected to ``embed_dim`` when the encoder's hidden size differs. With
    ``trainable_layers`` K (0 < K < layers), the embeddings and the layers below the last K run
    in eval mode without gradients (memoised per caption with ``cache_frozen``: the hidden
    states where the trained layers begin), the last K train.
    """

    def __init__(
        self, cfg: TextTowerConfig, embed_dim: int, vocab_size: int, cache_dir: str | None = None
    ) -> None:
        super().__init__()
        self.encoder = _load_encoder(cfg, vocab_size)
        hidden = self.encoder.config.hidden_size
        self.global_proj = nn.Linear(hidden, embed_dim) if hidden != embed_dim else nn.Identity()
        self.token_proj = nn.Linear(hidden, embed_dim) if hidden != embed_dim else nn.Identity()
        layers = _layers(self.encoder)  # a plain list: a ModuleList attribute would put every
        self.layers = list(layers) if layers is not None else None  # layer twice in state_dict
        count = len(self.layers) if self.layers is not None else None
        self.split = None  # index of the first trained layer, when the encoder is cut
        if cfg.trainable not in ("all", 0) and (count is None or cfg.trainable < count):
            if count is None:
                raise ConfigError(
                    f"model.text.trainable_layers: {cfg.trainable} needs a BERT-style encoder "
                    f"(embeddings + encoder.layer); {type(self.encoder).__name__} is not one: "
                    f"use 0 or 'all'"
                )
            self.split = count - cfg.trainable
            self._check_split()
        self.frozen_all = cfg.trainable == 0
        self._keep_frozen()
        self._memo = None
        if cfg.cache_frozen:
            extra = ["text"] if self.split is None else ["text", f"layers below {self.split}"]
            frozen = [module for _, module in self.frozen_modules()]
            self._memo = FeatureMemo(self._bottom, frozen, cache_dir, extra)

    def frozen_modules(self) -> list[tuple[str, nn.Module]]:
        """``(name, module)`` of the frozen parts, names relative to this tower."""
        if self.frozen_all:
            return [("encoder", self.encoder)]
        if self.split is None:
            return []
        return [("encoder.embeddings", self.encoder.embeddings)] + [
            (f"encoder.encoder.layer.{i}", self.layers[i]) for i in range(self.split)
        ]

    def _keep_frozen(self) -> None:
        for _, module in self.frozen_modules():
            keep_frozen(module)

    def train(self, mode: bool = True) -> TextTower:
        super().train(mode)
        self._keep_frozen()
        if not mode and self._memo is not None:
            self._memo.save()
        return self

    def _mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        return create_bidirectional_mask(
            config=self.encoder.config, inputs_embeds=hidden, attention_mask=attention_mask
        )

    def _run(
        self, hidden: torch.Tensor, attention_mask: torch.Tensor, start: int, stop: int
    ) -> torch.Tensor:
        mask = self._mask(hidden, attention_mask)
        for layer in self.layers[start:stop]:
            hidden = layer(hidden, mask)
        return hidden

    @torch.no_grad()
    def _bottom(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        """The frozen bottom's output: the hidden states (B, L, H) entering the trained layers."""
        if self.split is None:
            return self._states(input_ids, attention_mask)
        hidden = self.encoder.embeddings(input_ids=input_ids)
        return [self._run(hidden, attention_mask, 0, self.split)]

    @torch.no_grad()
    def _check_split(self) -> None:
        was_training = self.encoder.training
        self.encoder.eval()
        ids = torch.randint(0, self.encoder.config.vocab_size, (2, 7))
        mask = torch.ones_like(ids)
        mask[1, 4:] = 0
        whole = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        (bottom,) = self._bottom(ids, mask)
        cut = self._run(bottom, mask, self.split, len(self.layers))
        self.encoder.train(was_training)
        if not torch.allclose(whole, cut, atol=1e-5):
            raise ConfigError(
                f"model.text.trainable_layers: {type(self.encoder).__name__} does not run as "
                f"embeddings + layers, so it cannot be split: use 0 or 'all'"
            )

    def _states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return [out.last_hidden_state]

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.split is None and not self.frozen_all:
            (states,) = self._states(input_ids, attention_mask)
        else:
            memo = self._bottom if self._memo is None else self._memo
            (states,) = memo(input_ids, attention_mask)
            if self.split is not None:
                states = self._run(states, attention_mask, self.split, len(self.layers))
        return (
            self.global_proj(states[:, 0]),
            self.token_proj(states[:, 1:]),
            attention_mask[:, 1:],
        )
