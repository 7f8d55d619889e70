"""Losses of MSA: the global alignment term, MSCMA (per-scale alignment), CSMMC (consistency).

Each loss is an :class:`torch.nn.Module`; :class:`MSALoss` computes the weighted sum from the
model's output dict and returns the named parts. Batch entry i pairs image i with caption i; an
off-diagonal pair (i, j) is a negative unless it is a false negative: the same image
(``image_ids``) or the same caption after normalising case and whitespace (``caption_ids``).
The terms take those false negatives as a (B, B) bool mask ``positives``.

The global term (``loss.global_loss``):

- ``triplet_hardest``: bidirectional hinge with the hardest in-batch negative (the paper; VSE++
  max violation).
- ``triplet_sum``: the same hinge summed over every in-batch negative.
- ``triplet_warmup``: ``triplet_sum`` for the first ``loss.hardest_after_epochs`` epochs, then
  ``triplet_hardest`` (the VSE++ recipe; the loop calls :meth:`MSALoss.set_epoch`).
- ``infonce``: symmetric cross-entropy over cosine similarities / temperature (CLIP), the
  temperature fixed or learnable.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from msa_model.collapse import embedding_diagnostics
from msa_model.config import LossConfig

__all__ = [
    "TripletLoss",
    "InfoNCELoss",
    "MSCMALoss",
    "CSMMCLoss",
    "MSALoss",
    "caption_ids",
    "positive_mask",
]


def caption_ids(captions: list[str]) -> Tensor:
    """(B,) long group ids of captions, equal where they match after normalising case and spaces.

    Ids count from 0 in order of first appearance.
    """
    groups: dict[str, int] = {}
    ids = [groups.setdefault(" ".join(c.lower().split()), len(groups)) for c in captions]
    return torch.tensor(ids, dtype=torch.long)


def positive_mask(
    batch: int,
    device: torch.device,
    image_ids: Tensor | None = None,
    caption_ids: Tensor | None = None,
) -> Tensor:
    """(B, B) bool, True where i != j share an image id or a caption id (not negatives)."""
    mask = torch.zeros(batch, batch, dtype=torch.bool, device=device)
    for ids in (image_ids, caption_ids):
        if ids is not None:
            ids = ids.to(device)
            mask |= ids.view(-1, 1) == ids.view(1, -1)
    return mask & ~torch.eye(batch, dtype=torch.bool, device=device)


def _cosine(image_embed: Tensor, text_embed: Tensor) -> Tensor:
    """(B, B) cosine similarities, row i image i, column j caption j."""
    return F.normalize(image_embed, dim=-1) @ F.normalize(text_embed, dim=-1).T


class TripletLoss(nn.Module):
    """Bidirectional hinge loss over cosine similarities s(i, j) of image i and caption j.

    The violation of a negative caption j for image i is ``max(0, margin + s(i, j) - s(i, i))``,
    symmetrically for a negative image of caption j. ``negatives="hardest"`` keeps each query's
    largest violation (VSE++ max violation, the paper); ``"sum"`` adds all of them.

    Args:
        margin: Hinge margin.
        reduction: "sum" adds the per-query losses of both directions over the batch (the
            reference); "mean" averages each direction over the batch and adds the two.
        negatives: "hardest" or "sum"; an attribute, so a warm-up can switch it.
    """

    def __init__(
        self,
        margin: float = 0.5,
        reduction: Literal["sum", "mean"] = "sum",
        negatives: Literal["hardest", "sum"] = "hardest",
    ) -> None:
        super().__init__()
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        if negatives not in ("hardest", "sum"):
            raise ValueError(f"negatives must be 'hardest' or 'sum', got {negatives!r}")
        self.margin = margin
        self.reduction = reduction
        self.negatives = negatives

    def forward(
        self, image_embed: Tensor, text_embed: Tensor, positives: Tensor | None = None
    ) -> Tensor:
        """Loss of B matched pairs (image i with caption i).

        Args:
            image_embed: (B, d) image embeddings (normalised here).
            text_embed: (B, d) text embeddings (normalised here).
            positives: Optional (B, B) bool, off-diagonal pairs that are not negatives.
        """
        sims = _cosine(image_embed, text_embed)
        batch = sims.shape[0]
        positive = sims.diagonal()
        not_negative = torch.eye(batch, dtype=torch.bool, device=sims.device)
        if positives is not None:
            not_negative = not_negative | positives
        # row i: image i vs captions j; column j: caption j vs images i
        cost_caption = (self.margin + sims - positive[:, None]).clamp(min=0)
        cost_image = (self.margin + sims - positive[None, :]).clamp(min=0)
        cost_caption = cost_caption.masked_fill(not_negative, 0)
        cost_image = cost_image.masked_fill(not_negative, 0)
        if self.negatives == "hardest":
            per_image, per_caption = cost_caption.amax(dim=1), cost_image.amax(dim=0)
        else:
            per_image, per_caption = cost_caption.sum(dim=1), cost_image.sum(dim=0)
        if self.reduction == "sum":
            return per_image.sum() + per_caption.sum()
        return per_image.mean() + per_caption.mean()


class InfoNCELoss(nn.Module):
    """Symmetric InfoNCE: cross-entropy of cosine similarities x scale against the diagonal.

    The loss is the mean of the image->caption (rows) and caption->image (columns) terms, each
    averaged over the B queries; non-negative off-diagonal pairs leave the softmax. When every
    embedding coincides it equals log B.

    Args:
        temperature: The similarities are divided by it (scale = 1 / temperature).
        learnable: Learn the scale as a parameter ``log_scale`` (CLIP's log logit scale, starting
            at log(1 / temperature)); at use the scale is clamped to [1, max_scale], so it
            receives no gradient while outside.
        max_scale: Upper clamp of a learnable scale (CLIP: 100).
    """

    def __init__(
        self, temperature: float = 0.05, learnable: bool = False, max_scale: float = 100.0
    ) -> None:
        super().__init__()
        if temperature <= 0 or max_scale < 1:
            raise ValueError(
                f"need temperature > 0 and max_scale >= 1, got {temperature}, {max_scale}"
            )
        self.max_scale = max_scale
        log_scale = torch.tensor(math.log(1 / temperature))
        if learnable:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale, persistent=False)
        self.learnable = learnable

    def scale(self) -> Tensor:
        """The scale in use: exp(log_scale), clamped to [1, max_scale] when learnable."""
        if not self.learnable:
            return self.log_scale.exp()
        return self.log_scale.clamp(0.0, math.log(self.max_scale)).exp()

    def forward(
        self, image_embed: Tensor, text_embed: Tensor, positives: Tensor | None = None
    ) -> Tensor:
        """Loss of B matched pairs; arguments as :meth:`TripletLoss.forward`."""
        logits = _cosine(image_embed, text_embed) * self.scale()
        if positives is not None:
            logits = logits.masked_fill(positives, float("-inf"))
        target = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


class MSCMALoss(nn.Module):
    """Multi-scale cross-modal alignment: cross-entropy of each score matrix vs its diagonal.

    Summed over scales; each scale's term is the mean over the B queries. Off-diagonal pairs
    that are not negatives are removed from the softmax (logit -inf).

    Args:
        temperature: Scores are divided by it before the softmax.
        bidirectional: Average the image->caption (row) and caption->image (column) terms;
            False uses rows only, as the reference.
    """

    def __init__(self, temperature: float = 1.0, bidirectional: bool = False) -> None:
        super().__init__()
        self.temperature = temperature
        self.bidirectional = bidirectional

    def forward(self, scores: Tensor, positives: Tensor | None = None) -> Tensor:
        """Loss of (S, B, B) scores, row i = image i, column j = caption j.

        Args:
            scores: (S, B, B) MSCMAT scores.
            positives: Optional (B, B) bool, off-diagonal pairs that are not negatives.
        """
        n_scales, batch, _ = scores.shape
        logits = scores / self.temperature
        if positives is not None:
            logits = logits.masked_fill(positives, float("-inf"))
        target = torch.arange(batch, device=scores.device).repeat(n_scales)
        rows = F.cross_entropy(logits.reshape(-1, batch), target, reduction="sum") / batch
        if not self.bidirectional:
            return rows
        columns = logits.transpose(1, 2).reshape(-1, batch)
        return (rows + F.cross_entropy(columns, target, reduction="sum") / batch) / 2


class CSMMCLoss(nn.Module):
    """Cross-scale consistency: a KL divergence between every scale below the deepest and it.

    The teacher is the deepest scale's score matrix, detached. Each matrix becomes B
    distributions by a softmax at temperature T. For each smaller scale the KL of the B
    distributions is summed, then divided by B (``per_distribution_mean``) or B^2
    (``elementwise_mean``, the authors), and the S - 1 scales are summed. With S = 1 the loss
    is a zero that still backpropagates (zero gradients).

    Args:
        temperature: Softmax temperature T.
        axis: "image" normalises over images for each caption (dim 0 of a (B, B) matrix, the
            reference); "caption" over captions for each image (dim 1).
        direction: "teacher_student" is KL(teacher || scale s); "student_teacher" is
            KL(scale s || teacher) (the authors). The gradient flows through scale s either way.
        reduction: "per_distribution_mean" or "elementwise_mean", as above.
    """

    def __init__(
        self,
        temperature: float = 2.0,
        axis: Literal["image", "caption"] = "image",
        direction: Literal["teacher_student", "student_teacher"] = "teacher_student",
        reduction: Literal["per_distribution_mean", "elementwise_mean"] = "per_distribution_mean",
    ) -> None:
        super().__init__()
        for name, value, allowed in (
            ("axis", axis, ("image", "caption")),
            ("direction", direction, ("teacher_student", "student_teacher")),
            ("reduction", reduction, ("per_distribution_mean", "elementwise_mean")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
        self.temperature = temperature
        self.axis = axis
        self.direction = direction
        self.reduction = reduction

    def forward(self, scores: Tensor) -> Tensor:
        """Loss of (S, B, B) scores, row i = image i, column j = caption j."""
        n_scales, batch, _ = scores.shape
        if n_scales == 1:
            return scores.sum() * 0.0
        dim = 1 if self.axis == "image" else 2  # the images are dim 1 of (S, B, B)
        log_p = F.log_softmax(scores / self.temperature, dim=dim)
        student = log_p[:-1]
        teacher = log_p[-1:].detach().expand_as(student)
        if self.direction == "teacher_student":  # kl_div(input, target) = KL(target || input)
            kl = F.kl_div(student, teacher, reduction="sum", log_target=True)
        else:
            kl = F.kl_div(teacher, student, reduction="sum", log_target=True)
        return kl / (batch if self.reduction == "per_distribution_mean" else batch * batch)


class MSALoss(nn.Module):
    """Total MSA loss: global term + lambda_mscma * MSCMA + lambda_csmmc * CSMMC.

    A learnable InfoNCE temperature is this module's only parameter: the training loop adds
    :meth:`parameters` to the optimizer (CLIP applies no weight decay to it) and checkpoints
    :meth:`state_dict`.

    Args:
        cfg: Weights, temperatures, margin and options of the three terms.
    """

    def __init__(self, cfg: LossConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.global_loss == "infonce":
            self.global_term: TripletLoss | InfoNCELoss = InfoNCELoss(
                cfg.infonce_temperature, cfg.infonce_learnable, cfg.infonce_max_scale
            )
        elif cfg.global_loss in ("triplet_hardest", "triplet_sum", "triplet_warmup"):
            negatives = "hardest" if cfg.global_loss == "triplet_hardest" else "sum"
            self.global_term = TripletLoss(cfg.margin, cfg.triplet_reduction, negatives)
        else:
            raise ValueError(
                "loss.global_loss must be one of triplet_hardest, triplet_sum, triplet_warmup, "
                f"infonce; got {cfg.global_loss!r}"
            )
        self.mscma = MSCMALoss(cfg.mscma_temperature, cfg.mscma_bidirectional)
        self.csmmc = CSMMCLoss(
            cfg.csmmc_temperature, cfg.csmmc_axis, cfg.csmmc_direction, cfg.csmmc_reduction
        )
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Tell the loss the 0-based epoch: ``triplet_warmup`` turns to the hardest negative."""
        if self.cfg.global_loss == "triplet_warmup":
            hardest = epoch >= self.cfg.hardest_after_epochs
            self.global_term.negatives = "hardest" if hardest else "sum"

    @property
    def needs_scores(self) -> bool:
        """Whether any term reads the MSCMAT scores (the model can skip them otherwise)."""
        return self.cfg.lambda_mscma > 0 or self.cfg.lambda_csmmc > 0

    def forward(
        self,
        outputs: dict[str, Tensor],
        image_ids: Tensor | None = None,
        caption_ids: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Named loss terms and diagnostics from the model outputs.

        Args:
            outputs: Holds "image_embed" (B, d), "text_embed" (B, d) and "scores" (S, B, B).
            image_ids: Optional (B,) image identities; with ``loss.exclude_same_image`` pairs
                of one image are not negatives.
            caption_ids: Optional (B,) caption group ids (:func:`caption_ids`); with
                ``loss.exclude_same_caption`` pairs of one caption are not negatives.

        Returns:
            "loss" (the weighted total), "global", "mscma" and "csmmc" (unweighted; a term whose
            weight is 0 is not computed and reported as 0), and detached diagnostics
            "diag_image_cos", "diag_text_cos", "diag_image_std", "diag_text_std" (see
            :func:`msa_model.collapse.embedding_diagnostics`), plus
            "diag_infonce_temperature" with ``infonce``.
        """
        image_embed, text_embed = outputs["image_embed"], outputs["text_embed"]
        positives = positive_mask(
            image_embed.shape[0],
            image_embed.device,
            image_ids if self.cfg.exclude_same_image else None,
            caption_ids if self.cfg.exclude_same_caption else None,
        )
        global_term = self.global_term(image_embed, text_embed, positives)
        zero = global_term.new_zeros(())
        mscma = self.mscma(outputs["scores"], positives) if self.cfg.lambda_mscma else zero
        csmmc = self.csmmc(outputs["scores"]) if self.cfg.lambda_csmmc else zero
        loss = global_term + self.cfg.lambda_mscma * mscma + self.cfg.lambda_csmmc * csmmc
        parts = {"loss": loss, "global": global_term, "mscma": mscma, "csmmc": csmmc}
        parts.update(embedding_diagnostics(image_embed, text_embed))
        if isinstance(self.global_term, InfoNCELoss):
            parts["diag_infonce_temperature"] = 1 / self.global_term.scale().detach()
        return parts
