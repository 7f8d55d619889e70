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
    and, when ``with_scores``, the MSCMAT matching scores ``scores`` (S, B, B). MSCMAT reads the
    tower's projected ``image_scales`` or, with ``mscmat.own_projections``, the pooled stage
    vectors through its own projections. The loss is not computed here (see
    :mod:`msa_model.losses`).
    """

    def __init__(self, cfg: ModelConfig, tokenizer: PreTrainedTokenizerBase) -> None:
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.image = ImageTower(cfg.image, cfg.embed_dim, cfg.frozen_cache_dir)
        self.text = TextTower(
            cfg.text, cfg.embed_dim, vocab_size=len(tokenizer), cache_dir=cfg.frozen_cache_dir
        )
        mscmat = cfg.mscmat
        widths = [p.in_features for p in self.image.proj]  # of the pooled stage vectors
        self.mscmat = MSCMAT(
            cfg.embed_dim,
            self.image.num_scales,
            mscmat.num_heads,
            dropout=mscmat.dropout,
            mask_padding=mscmat.mask_padding,
            text_global=mscmat.text_global,
            in_features=widths if mscmat.own_projections else None,
            shared_norms=mscmat.shared_norms,
            init=mscmat.init,
        )

    def frozen_state_keys(self) -> set[str]:
        """State-dict keys of the towers' frozen parts (never trained, rebuilt from config)."""
        keys: set[str] = set()
        for prefix, tower in (("image.", self.image), ("text.", self.text)):
            for module_name, module in tower.frozen_modules():
                stem = f"{prefix}{module_name}."
                keys.update(stem + key for key in module.state_dict())
        return keys

    def tokenize(self, captions: list[str]) -> dict[str, torch.Tensor]:
        """Batched fast tokenization to ``input_ids`` and ``attention_mask``.

        Captions are truncated to ``max_length`` and padded to the longest one or, with
        ``padding: max_length``, always to ``max_length``.
        """
        enc = self.tokenizer(
            list(captions),
            padding="max_length" if self.cfg.text.padding == "max_length" else "longest",
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
        pooled = self.image.pooled(images)
        return self.heads(pooled, self.text(input_ids, attention_mask), with_scores)

    def heads(
        self,
        pooled: list[torch.Tensor],
        text: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        with_scores: bool = True,
    ) -> dict[str, torch.Tensor]:
        """:meth:`forward`'s outputs from the image tower's pooled stage vectors and the text
        tower's ``(text_embed, text_tokens, text_mask)``."""
        image_embed, image_scales = self.image.embed(pooled)
        text_embed, text_tokens, text_mask = text
        out = {
            "image_embed": image_embed,
            "image_scales": image_scales,
            "text_embed": text_embed,
            "text_tokens": text_tokens,
            "text_mask": text_mask,
        }
        if with_scores:
            out["scores"] = self.scores(pooled, out)
        return out

    def scores(self, pooled: list[torch.Tensor], out: dict[str, torch.Tensor]) -> torch.Tensor:
        """MSCMAT's (S, B, B) matching scores for :meth:`heads`' outputs ``out``: it reads the
        projected ``image_scales`` or, with ``mscmat.own_projections``, the pooled vectors."""
        mscmat_in = pooled if self.mscmat.proj is not None else out["image_scales"]
        return self.mscmat(mscmat_in, out["text_tokens"], out["text_embed"], out["text_mask"])
