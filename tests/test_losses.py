"""Losses: hand-computed values on tiny batches, masking, teacher detachment, edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from msa_model.config import LossConfig
from msa_model.losses import CSMMCLoss, MSALoss, MSCMALoss, TripletLoss


def _close(value: torch.Tensor, expected: float, tol: float = 1e-6) -> None:
    assert abs(value.item() - expected) <= tol, (value.item(), expected)


# ---- triplet ----------------------------------------------------------------------------


def test_triplet_two_pairs_by_hand():
    image = torch.tensor([[3.0, 0.0], [0.0, 2.0]])  # normalised: [1, 0], [0, 1]
    text = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # normalised: [1, 0], [r, r], r = 1/sqrt(2)
    r = 1 / math.sqrt(2)
    # sims = [[1, r], [0, r]], positives 1 and r, margin 0.5
    image_query = (0.5 + r - 1) + max(0.0, 0.5 + 0 - r)  # rows: 0.2071 + 0
    caption_query = max(0.0, 0.5 + 0 - 1) + (0.5 + r - r)  # columns: 0 + 0.5
    _close(TripletLoss(0.5, "sum")(image, text), image_query + caption_query)
    _close(TripletLoss(0.5, "mean")(image, text), image_query / 2 + caption_query / 2)


def test_triplet_same_image_pairs_are_not_negatives():
    image = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # entries 0 and 1: one image
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]])
    # sims rows: [1, .6, .8], [1, .6, .8], [0, .8, .6]; positives 1, .6, .6; margin .5
    masked = (
        (0.5 + 0.8 - 1) + (0.5 + 0.8 - 0.6) + (0.5 + 0.8 - 0.6)  # rows: .3 .7 .7
        + 0.0 + (0.5 + 0.8 - 0.6) + (0.5 + 0.8 - 0.6)  # columns: 0 .7 .7
    )
    unmasked = (
        (0.5 + 0.8 - 1) + (0.5 + 1 - 0.6) + (0.5 + 0.8 - 0.6)  # rows: .3 .9 .7
        + (0.5 + 1 - 1) + (0.5 + 0.8 - 0.6) + (0.5 + 0.8 - 0.6)  # columns: .5 .7 .7
    )
    loss = TripletLoss(0.5)
    _close(loss(image, text, torch.tensor([7, 7, 3])), masked)  # 3.1
    _close(loss(image, text), unmasked)  # 3.8
    _close(loss(image, text, torch.tensor([0, 1, 2])), unmasked)
    _close(loss(image[:2], text[:2], torch.tensor([4, 4])), 0.0)  # no negatives at all


# ---- MSCMA ------------------------------------------------------------------------------


def test_mscma_rows_columns_and_temperature_by_hand():
    scores = torch.tensor([[[0.9, 0.2], [0.4, 0.7]]])
    row0 = math.log(1 + math.exp(0.2 - 0.9))  # -log softmax([.9, .2])[0]
    row1 = math.log(1 + math.exp(0.4 - 0.7))
    col0 = math.log(1 + math.exp(0.4 - 0.9))
    col1 = math.log(1 + math.exp(0.2 - 0.7))
    _close(MSCMALoss()(scores), (row0 + row1) / 2)
    _close(MSCMALoss(bidirectional=True)(scores), ((row0 + row1) / 2 + (col0 + col1) / 2) / 2)
    hot = (math.log(1 + math.exp((0.2 - 0.9) / 0.5)) + math.log(1 + math.exp((0.4 - 0.7) / 0.5)))
    _close(MSCMALoss(temperature=0.5)(scores), hot / 2)
    two_scales = torch.cat([scores, torch.tensor([[[0.5, 0.5], [0.5, 0.5]]])])
    _close(MSCMALoss()(two_scales), (row0 + row1) / 2 + math.log(2))


def test_mscma_same_image_removed_from_softmax():
    scores = torch.tensor([[[0.9, 0.8, 0.1], [0.3, 0.6, 0.2], [0.5, 0.4, 0.7]]])
    ids = torch.tensor([5, 5, 6])  # entries 0 and 1 show the same image
    row0 = math.log(math.exp(0.9) + math.exp(0.1)) - 0.9  # 0.8 removed
    row1 = math.log(math.exp(0.6) + math.exp(0.2)) - 0.6  # 0.3 removed
    row2 = math.log(math.exp(0.5) + math.exp(0.4) + math.exp(0.7)) - 0.7
    _close(MSCMALoss()(scores, ids), (row0 + row1 + row2) / 3)
    col0 = math.log(math.exp(0.9) + math.exp(0.5)) - 0.9  # column 0 without image 1
    col1 = math.log(math.exp(0.6) + math.exp(0.4)) - 0.6
    col2 = math.log(math.exp(0.1) + math.exp(0.2) + math.exp(0.7)) - 0.7
    _close(MSCMALoss(bidirectional=True)(scores, ids),
           ((row0 + row1 + row2) / 3 + (col0 + col1 + col2) / 3) / 2)


# ---- CSMMC ------------------------------------------------------------------------------


def _kl_two(p: float, q: float) -> float:
    """KL([p, 1-p] || [q, 1-q])."""
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_csmmc_by_hand_both_axes():
    teacher = [[0.8, 0.2], [0.4, 0.6]]
    student = [[0.5, 0.5], [0.5, 0.5]]  # uniform along both axes
    scores = torch.tensor([student, teacher])
    # axis image, T = 2: caption 0 column [.8, .4] / 2 -> p = sigmoid(.2) on image 0;
    # caption 1 column [.2, .6] / 2 -> p = sigmoid(-.2) on image 0
    by_image = (_kl_two(_sigmoid(0.2), 0.5) + _kl_two(_sigmoid(-0.2), 0.5)) / 2
    _close(CSMMCLoss(2.0, "image")(scores), by_image)
    # axis caption: row 0 [.8, .2] / 2 -> sigmoid(.3); row 1 [.4, .6] / 2 -> sigmoid(-.1)
    by_caption = (_kl_two(_sigmoid(0.3), 0.5) + _kl_two(_sigmoid(-0.1), 0.5)) / 2
    _close(CSMMCLoss(2.0, "caption")(scores), by_caption)
    # a second student equal to the first doubles the loss; one equal to the teacher adds 0
    _close(CSMMCLoss()(torch.tensor([student, student, teacher])), 2 * by_image)
    _close(CSMMCLoss()(torch.tensor([teacher, student, teacher])), by_image)
    # student [[.8, .2], [.2, .8]] at T = 1 against the teacher, axis image
    student2 = [[0.8, 0.2], [0.2, 0.8]]
    expected = (_kl_two(_sigmoid(0.4), _sigmoid(0.6)) + _kl_two(_sigmoid(-0.4), _sigmoid(-0.6))) / 2
    _close(CSMMCLoss(1.0)(torch.tensor([student2, teacher])), expected)


def test_csmmc_teacher_gets_no_gradient():
    torch.manual_seed(0)
    small = torch.rand(2, 4, 4, requires_grad=True)
    teacher = torch.rand(1, 4, 4, requires_grad=True)
    CSMMCLoss()(torch.cat([small, teacher])).backward()
    assert teacher.grad is None or not teacher.grad.any()
    assert small.grad[0].abs().sum() > 0 and small.grad[1].abs().sum() > 0


def test_csmmc_single_scale_is_zero_and_backpropagates():
    scores = torch.rand(1, 3, 3, requires_grad=True)
    loss = CSMMCLoss()(scores)
    assert loss.item() == 0.0
    loss.backward()
    assert not scores.grad.any()


# ---- edge cases and the total -----------------------------------------------------------


def _outputs(batch: int, scales: int = 3, dim: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        "image_embed": torch.randn(batch, dim, generator=gen, requires_grad=True),
        "text_embed": torch.randn(batch, dim, generator=gen, requires_grad=True),
        "scores": torch.rand(scales, batch, batch, generator=gen, requires_grad=True),
    }


def test_batch_of_one_is_finite():
    parts = MSALoss(LossConfig())(_outputs(1))
    for value in parts.values():
        assert torch.isfinite(value)
    _close(parts["triplet"], 0.0)  # no negatives
    _close(parts["mscma"], 0.0)  # a softmax over one caption
    parts["loss"].backward()


def test_duplicate_captions_are_finite():
    out = _outputs(4)
    text = out["text_embed"].detach().clone()
    text[1] = text[0]
    scores = out["scores"].detach().clone()
    scores[:, :, 1] = scores[:, :, 0]
    out = {"image_embed": out["image_embed"], "text_embed": text.requires_grad_(True),
           "scores": scores.requires_grad_(True)}
    parts = MSALoss(LossConfig(mscma_bidirectional=True))(out, torch.tensor([0, 1, 2, 3]))
    assert all(torch.isfinite(v) for v in parts.values())
    parts["loss"].backward()
    assert torch.isfinite(out["text_embed"].grad).all() and torch.isfinite(out["scores"].grad).all()


def test_total_is_the_weighted_sum():
    cfg = LossConfig(lambda_mscma=15.0, lambda_csmmc=10.0, mscma_temperature=0.5)
    out = _outputs(5)
    ids = torch.tensor([0, 1, 1, 2, 3])
    parts = MSALoss(cfg)(out, ids)
    triplet = TripletLoss(0.5)(out["image_embed"], out["text_embed"], ids)
    mscma = MSCMALoss(0.5)(out["scores"], ids)
    csmmc = CSMMCLoss(2.0)(out["scores"])
    torch.testing.assert_close(parts["triplet"], triplet)
    torch.testing.assert_close(parts["mscma"], mscma)
    torch.testing.assert_close(parts["csmmc"], csmmc)
    torch.testing.assert_close(parts["loss"], triplet + 15 * mscma + 10 * csmmc)


@pytest.mark.parametrize("zeroed", ["lambda_mscma", "lambda_csmmc"])
def test_zero_weight_skips_the_term(zeroed):
    out = _outputs(3)
    kept = "csmmc" if zeroed == "lambda_mscma" else "mscma"
    skipped = "mscma" if zeroed == "lambda_mscma" else "csmmc"
    parts = MSALoss(LossConfig(**{zeroed: 0.0}))(out)
    assert parts[skipped].item() == 0.0 and parts[kept].item() > 0
    both_off = MSALoss(LossConfig(lambda_mscma=0.0, lambda_csmmc=0.0))
    nan_scores = dict(out, scores=torch.full((3, 3, 3), float("nan")))
    parts = both_off(nan_scores)  # scores are never read
    assert torch.isfinite(parts["loss"])
    torch.testing.assert_close(parts["loss"], parts["triplet"])


def test_needs_scores():
    assert MSALoss(LossConfig()).needs_scores
    assert MSALoss(LossConfig(lambda_mscma=0.0)).needs_scores
    assert not MSALoss(LossConfig(lambda_mscma=0.0, lambda_csmmc=0.0)).needs_scores
