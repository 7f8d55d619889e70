"""Collapse of the global embeddings: per-batch diagnostics and a verdict on a run's history.

A collapsed model maps every image and every caption to (nearly) one point: the mean pairwise
cosine of a batch's embeddings nears 1, their spread nears 0, the global loss settles at the
value it takes when all embeddings coincide (for the summed hardest-negative triplet
2 x B x margin), and its ranking is no better than chance. The first two signs alone also
show on runs that rank well: on RSICD a hardest-negative triplet run at 5x chance (val mR 25)
had its triplet at 2 x B x margin, and another's image cosines reached 0.9998 at 4.8x chance
(the ranking needs only the embeddings' order). So the verdict also needs the ranking near
chance whenever the run is validated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor

from msa_model.config import LossConfig

__all__ = ["embedding_diagnostics", "collapsed_loss", "collapse_reason"]

# Thresholds measured against a run that learns: the synthetic demo (val mR 5 -> 60) shows a mean
# image cosine of 0.996, a caption cosine of 0.95 and a triplet within 2.3% of 2 x B x margin in
# its first epochs; RSICD's collapsed triplet-only run settled within 0.8% of it.
COSINE_MAX = 0.99  # mean pairwise cosine of both modalities above this: collapsed
LOSS_TOLERANCE = 0.01  # relative distance of the global term to its collapsed value
EPOCHS = 2  # consecutive epochs a criterion must hold
CHANCE_TIMES = 2.0  # a validated epoch whose val mR is above this many times chance: not collapsed


def _spread(embed: Tensor) -> tuple[Tensor, Tensor]:
    """Mean off-diagonal cosine and mean per-dimension std of the normalised (B, d) rows."""
    unit = F.normalize(embed.detach().float(), dim=-1)
    batch = unit.shape[0]
    total = unit.sum(dim=0)
    off_diagonal = total @ total - unit.pow(2).sum()  # sum of G[i, j], i != j, G = unit unit^T
    cos = off_diagonal / max(1, batch * (batch - 1))
    return cos, unit.std(dim=0, unbiased=False).mean()


def embedding_diagnostics(image_embed: Tensor, text_embed: Tensor) -> dict[str, Tensor]:
    """Detached collapse diagnostics of a batch's global embeddings.

    Returns:
        "diag_image_cos" / "diag_text_cos": mean cosine over pairs i != j (0 for a batch of
        one); "diag_image_std" / "diag_text_std": mean over dimensions of the (population) std
        across the batch of the L2-normalised embeddings (about d^-1/2 for random directions,
        0 when collapsed).
    """
    image_cos, image_std = _spread(image_embed)
    text_cos, text_std = _spread(text_embed)
    return {
        "diag_image_cos": image_cos,
        "diag_text_cos": text_cos,
        "diag_image_std": image_std,
        "diag_text_std": text_std,
    }


def collapsed_loss(cfg: LossConfig, batch_size: int, epoch: int) -> tuple[float, str] | None:
    """The global term's value when every embedding coincides, and its formula.

    Args:
        cfg: The loss configuration.
        batch_size: B.
        epoch: 1-based epoch (the warm-up's form depends on it).

    Returns:
        ``(value, formula)``, or None when the triplet margin is 0 (collapsed and perfect are
        then both 0).
    """
    if cfg.global_loss == "infonce":
        return math.log(batch_size), "log B"
    form = cfg.global_loss
    if form == "triplet_warmup":
        form = "triplet_sum" if epoch <= cfg.hardest_after_epochs else "triplet_hardest"
    if cfg.margin == 0:
        return None
    negatives, formula = (1, "") if form == "triplet_hardest" else (batch_size - 1, "(B-1) x ")
    per_query = negatives * cfg.margin  # every violation is margin + s - s
    if cfg.triplet_reduction == "sum":
        return 2 * batch_size * per_query, f"2 x B x {formula}margin"
    return 2 * per_query, f"2 x {formula}margin"


def _finite(row: Mapping[str, float], key: str) -> float | None:
    value = row.get(key)
    return float(value) if value is not None and math.isfinite(float(value)) else None


def _global_term(row: Mapping[str, float], cfg: LossConfig) -> float | None:
    """The epoch's global term: "train_global", or "train_loss" when it is the whole loss."""
    value = _finite(row, "train_global")
    if value is None and not (cfg.lambda_mscma or cfg.lambda_csmmc):
        value = _finite(row, "train_loss")
    return value


def collapse_reason(
    history: Sequence[Mapping[str, float]],
    cfg: LossConfig,
    batch_size: int,
    chance_mr: float | None = None,
) -> str | None:
    """One line saying why a run collapsed, at the first epoch that shows it; None otherwise.

    A run collapsed when, for two consecutive epochs, the mean pairwise cosine of both the image
    and the caption embeddings ("train_diag_image_cos", "train_diag_text_cos") exceeded 0.99, or
    the global term ("train_global"; "train_loss" when the MSA terms are off) stayed within 1%
    of :func:`collapsed_loss`, and it does not rank far above chance: an epoch whose "val_mr"
    exceeds :data:`CHANCE_TIMES` x ``chance_mr`` breaks the run of epochs and clears an earlier
    verdict (the run learned). Without validation only the first two signs are read.

    Args:
        history: Epoch rows in order; "epoch" (1-based) is read when present, else the position.
        cfg: The run's loss configuration.
        batch_size: The training batch size B.
        chance_mr: The validation split's mR under a random ranking (percent,
            :func:`msa_model.chance.chance_metrics`); None: the ranking is not read.
    """
    near_cos = near_loss = 0
    reason = None
    for index, row in enumerate(history):
        epoch = int(row.get("epoch", index + 1))
        ranked = _finite(row, "val_mr")
        if chance_mr is not None and ranked is not None and ranked > CHANCE_TIMES * chance_mr:
            near_cos = near_loss = 0
            reason = None
            continue
        image_cos = _finite(row, "train_diag_image_cos")
        text_cos = _finite(row, "train_diag_text_cos")
        both = image_cos is not None and text_cos is not None
        near_cos = near_cos + 1 if both and min(image_cos, text_cos) > COSINE_MAX else 0
        collapsed = collapsed_loss(cfg, batch_size, epoch)
        term = _global_term(row, cfg)
        near = collapsed is not None and term is not None
        near_loss = near_loss + 1 if near and _within(term, collapsed[0]) else 0
        line = None
        if near_cos >= EPOCHS:
            line = (
                f"collapsed at epoch {epoch}: mean pairwise cosine {image_cos:.3f} (images) and "
                f"{text_cos:.3f} (captions) > {COSINE_MAX} for {EPOCHS} epochs"
            )
        elif near_loss >= EPOCHS:
            value, formula = collapsed
            line = (
                f"collapsed at epoch {epoch}: global loss {term:.4g} within "
                f"{LOSS_TOLERANCE:.0%} of {value:.4g} = {formula} (its value when all "
                f"embeddings coincide, B={batch_size}) for {EPOCHS} epochs"
            )
        if line is not None and reason is None:
            if chance_mr is not None and ranked is not None:
                line += f"; val mR {ranked:.2f} <= {CHANCE_TIMES:g} x chance {chance_mr:.2f}"
            reason = line
    return reason


def _within(term: float, value: float) -> bool:
    """The global term within :data:`LOSS_TOLERANCE` of its collapsed ``value``."""
    return abs(term - value) <= LOSS_TOLERANCE * value
