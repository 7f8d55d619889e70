"""The MSA model: image tower + text tower + MSCMAT, returning a dict of named outputs."""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from msa_model.config import ModelConfig
from msa_model.image_tower import ImageTower
from msa_model.mscmat import MSCMAT
from msa_model.text_tower import TextTower

__all__ = ["MSAModel"]


class MSAModel(nn.Module):
    """Two-tower retriever trained with multi-scale alignment.

    ``forward`` returns ``image_embed`` (B, d) and ``text_embed`` (B, d) (the global embeddings
    used for retrieval), ``image_scales`` (S, B, d), ``text_tokens`` (B, L-1, d), ``text_mask``
    and, when ``with_scores``, the MSCMAT matching scores ``scores`` (S, B, B). The loss is not
    computed here (see :mod:`msa_model.losses`).
    """

    def __init__(self, cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.image = ImageTower(cfg.image, cfg.embed_dim)
        self.text = TextTower(cfg.text, cfg.embed_dim, vocab_size=len(tokenizer))
        self.mscmat = MSCMAT(
            cfg.embed_dim,
            self.image.num_scales,
            cfg.mscmat.num_heads,
            dropout=cfg.mscmat.dropout,
            mask_padding=cfg.mscmat.mask_padding,
        )

    @property
    def num_scales(self) -> int:
        return self.image.num_scales

    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """Batched fast tokenization to ``input_ids`` and ``attention_mask`` (padded, truncated)."""
        enc = self.tokenizer(
            list(captions),
            padding=True,
            truncation=True,
            max_length=self.cfg.text.max_length,
            return_tensors="pt",
        )
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Global image embeddings (B, d), not normalised."""
        return self.image(images)[0]

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Global text embeddings (B, d), not normalised."""
        return self.text(input_ids, attention_mask)[0]

    def forward(
        self,
        images: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        with_scores: bool = True,
    ) -> dict[str, torch.Tensor]:
        image_embed, image_scales = self.image(images)
        text_embed, text_tokens, text_mask = self.text(input_ids, attention_mask)
        out = {
            "image_embed": image_embed,
            "image_scales": image_scales,
            "text_embed": text_embed,
            "text_tokens": text_tokens,
            "text_mask": text_mask,
        }
        if with_scores:
            out["scores"] = self.mscmat(image_scales, text_tokens, text_embed, text_mask)
        return out
