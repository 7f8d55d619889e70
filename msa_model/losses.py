"""Losses of MSA: global triplet, MSCMA (per-scale alignment), CSMMC (cross-scale consistency).

Each loss is an :class:`torch.nn.Module`; :class:`MSALoss` computes the weighted sum from the
model's output dict and returns the named parts. ``image_ids`` (B,) marks which batch entries
show the same image: such off-diagonal pairs are positives, never negatives.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msa_model.config import LossConfig

__all__ = ["TripletLoss", "MSCMALoss", "CSMMCLoss", "MSALoss", "same_image_mask"]


def same_image_mask(image_ids: Tensor | None, batch: int, device: torch.device) -> Tensor:
    """(B, B) bool, True where i != j show the same image (other positives); all False if None."""
    if image_ids is None:
        return torch.zeros(batch, batch, dtype=torch.bool, device=device)
    same = image_ids.view(-1, 1) == image_ids.view(1, -1)
    return same & ~torch.eye(batch, dtype=torch.bool, device=device)


class TripletLoss(nn.Module):
    """Bidirectional hinge loss with the hardest in-batch negative (VSE++ max violation).

    Similarity is cosine. For image i, the hardest negative caption j maximises
    ``margin + s(i, j) - s(i, i)``; symmetrically for caption i and images.

    Args:
        margin: Hinge margin.
        reduction: "sum" adds the per-query violations of both directions over the batch (the
            reference); "mean" averages each direction over the batch and adds the two.
    """

    def __init__(self, margin: float = 0.5, reduction: Literal["sum", "mean"] = "sum") -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.margin = margin
        self.reduction = reduction

    def forward(self, image_embed: Tensor, text_embed: Tensor,
                image_ids: Tensor | None = None) -> Tensor:
        """Loss of B matched pairs (image i with caption i).

        Args:
            image_embed: (B, d) image embeddings (normalised here).
            text_embed: (B, d) text embeddings (normalised here).
            image_ids: Optional (B,) image identities; same-image pairs are not negatives.
        """
        sims = F.normalize(image_embed, dim=-1) @ F.normalize(text_embed, dim=-1).T
        batch = sims.shape[0]
        positive = sims.diagonal()
        not_negative = same_image_mask(image_ids, batch, sims.device)
        not_negative |= torch.eye(batch, dtype=torch.bool, device=sims.device)
        # row i: image i vs captions j; column j: caption j vs images i
        cost_caption = (self.margin + sims - positive[:, None]).clamp(min=0)
        cost_image = (self.margin + sims - positive[None, :]).clamp(min=0)
        hardest_caption = cost_caption.masked_fill(not_negative, 0).amax(dim=1)
        hardest_image = cost_image.masked_fill(not_negative, 0).amax(dim=0)
        if self.reduction == "sum":
            return hardest_caption.sum() + hardest_image.sum()
        return hardest_caption.mean() + hardest_image.mean()


class MSCMALoss(nn.Module):
    """Multi-scale cross-modal alignment: cross-entropy of each score matrix vs its diagonal.

    Summed over scales; each scale's term is the mean over the B queries. Off-diagonal
    same-image entries are removed from the softmax (logit -inf).

    Args:
        temperature: Scores are divided by it before the softmax.
        bidirectional: Average the image->caption (row) and caption->image (column) terms;
            False uses rows only, as the reference.
    """

    def __init__(self, temperature: float = 1.0, bidirectional: bool = False) -> None:
        super().__init__()
        self.temperature = temperature
        self.bidirectional = bidirectional

    def forward(self, scores: Tensor, image_ids: Tensor | None = None) -> Tensor:
        """Loss of (S, B, B) scores, row i = image i, column j = caption j."""
        n_scales, batch, _ = scores.shape
        logits = scores / self.temperature
        other = same_image_mask(image_ids, batch, scores.device)
        logits = logits.masked_fill(other, float("-inf"))
        target = torch.arange(batch, device=scores.device).repeat(n_scales)
        rows = F.cross_entropy(logits.reshape(-1, batch), target, reduction="sum") / batch
        if not self.bidirectional:
            return rows
        columns = logits.transpose(1, 2).reshape(-1, batch)
        return (rows + F.cross_entropy(columns, target, reduction="sum") / batch) / 2


class CSMMCLoss(nn.Module):
    """Cross-scale consistency: KL(teacher || scale s) for every scale below the deepest.

    The teacher is the deepest scale's score matrix, detached. Each matrix becomes B
    distributions by a softmax at temperature T; the KL is averaged over the B distributions
    and summed over the S - 1 smaller scales. With S = 1 the loss is a zero that still
    backpropagates (zero gradients).

    Args:
        temperature: Softmax temperature T.
        axis: "image" normalises over images for each caption (dim 0 of a (B, B) matrix, the
            reference); "caption" over captions for each image (dim 1).
    """

    def __init__(self, temperature: float = 2.0,
                 axis: Literal["image", "caption"] = "image") -> None:
        super().__init__()
        if axis not in ("image", "caption"):
            raise ValueError(f"axis must be 'image' or 'caption', got {axis!r}")
        self.temperature = temperature
        self.axis = axis

    def forward(self, scores: Tensor) -> Tensor:
        """Loss of (S, B, B) scores, row i = image i, column j = caption j."""
        n_scales, batch, _ = scores.shape
        if n_scales == 1:
            return scores.sum() * 0.0
        dim = 1 if self.axis == "image" else 2  # the images are dim 1 of (S, B, B)
        log_p = F.log_softmax(scores / self.temperature, dim=dim)
        log_teacher = log_p[-1:].detach()
        kl = F.kl_div(log_p[:-1], log_teacher.expand_as(log_p[:-1]), reduction="sum",
                      log_target=True)
        return kl / batch


class MSALoss(nn.Module):
    """Total MSA loss: triplet + lambda_mscma * MSCMA + lambda_csmmc * CSMMC.

    Args:
        cfg: Weights, temperatures, margin and options of the three terms.
    """

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.triplet = TripletLoss(cfg.margin, cfg.triplet_reduction)
        self.mscma = MSCMALoss(cfg.mscma_temperature, cfg.mscma_bidirectional)
        self.csmmc = CSMMCLoss(cfg.csmmc_temperature, cfg.csmmc_axis)

    @property
    def needs_scores(self) -> bool:
        """Whether any term reads the MSCMAT scores (the model can skip them otherwise)."""
        return self.cfg.lambda_mscma > 0 or self.cfg.lambda_csmmc > 0

    def forward(self, outputs: dict[str, Tensor],
                image_ids: Tensor | None = None) -> dict[str, Tensor]:
        """Named loss terms from the model outputs.

        Args:
            outputs: Holds "image_embed" (B, d), "text_embed" (B, d) and "scores" (S, B, B).
            image_ids: Optional (B,) image identities (duplicates are not negatives).

        Returns:
            "loss" (the weighted total), "triplet", "mscma" and "csmmc" (unweighted); a term
            whose weight is 0 is not computed and reported as 0.
        """
        triplet = self.triplet(outputs["image_embed"], outputs["text_embed"], image_ids)
        zero = triplet.new_zeros(())
        mscma = (self.mscma(outputs["scores"], image_ids) if self.cfg.lambda_mscma
                 else zero)
        csmmc = self.csmmc(outputs["scores"]) if self.cfg.lambda_csmmc else zero
        loss = triplet + self.cfg.lambda_mscma * mscma + self.cfg.lambda_csmmc * csmmc
        return {"loss": loss, "triplet": triplet, "mscma": mscma, "csmmc": csmmc}
