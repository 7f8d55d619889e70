"""Losses: hand-computed values on tiny batches, masking, teacher detachment, edge cases."""

from __future__ import annotations

import math

import pytest
import torch

from msa_model.config import LossConfig
from msa_model.losses import CSMMCLoss, MSALoss, MSCMALoss, TripletLoss, positive_mask


def _close(value: torch.Tensor, expected: float, tol: float = 1e-6) -> None:
    assert abs(value.item() - expected) <= tol, (value.item(), expected)


def _same(ids: list[int]) -> torch.Tensor:
    """The (B, B) not-negative mask of these image ids."""
    return positive_mask(len(ids), torch.device("cpu"), torch.tensor(ids))


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
        (0.5 + 0.8 - 1)
        + (0.5 + 0.8 - 0.6)
        + (0.5 + 0.8 - 0.6)  # rows: .3 .7 .7
        + 0.0
        + (0.5 + 0.8 - 0.6)
        + (0.5 + 0.8 - 0.6)  # columns: 0 .7 .7
    )
    unmasked = (
        (0.5 + 0.8 - 1)
        + (0.5 + 1 - 0.6)
        + (0.5 + 0.8 - 0.6)  # rows: .3 .9 .7
        + (0.5 + 1 - 1)
        + (0.5 + 0.8 - 0.6)
        + (0.5 + 0.8 - 0.6)  # columns: .5 .7 .7
    )
    loss = TripletLoss(0.5)
    _close(loss(image, text, _same([7, 7, 3])), masked)  # 3.1
    _close(loss(image, text), unmasked)  # 3.8
    _close(loss(image, text, _same([0, 1, 2])), unmasked)
    _close(loss(image[:2], text[:2], _same([4, 4])), 0.0)  # no negatives at all
    # the total masks them only with loss.exclude_same_image (the authors do not)
    only_triplet = {"lambda_mscma": 0.0, "lambda_csmmc": 0.0}
    out = {"image_embed": image, "text_embed": text}
    ids = torch.tensor([7, 7, 3])
    _close(MSALoss(LossConfig(**only_triplet))(out, ids)["global"], masked)
    _close(
        MSALoss(LossConfig(**only_triplet, exclude_same_image=False))(out, ids)["global"], unmasked
    )


# ---- MSCMA ------------------------------------------------------------------------------


def test_mscma_rows_columns_and_temperature_by_hand():
    scores = torch.tensor([[[0.9, 0.2], [0.4, 0.7]]])
    row0 = math.log(1 + math.exp(0.2 - 0.9))  # -log softmax([.9, .2])[0]
    row1 = math.log(1 + math.exp(0.4 - 0.7))
    col0 = math.log(1 + math.exp(0.4 - 0.9))
    col1 = math.log(1 + math.exp(0.2 - 0.7))
    _close(MSCMALoss()(scores), (row0 + row1) / 2)
    _close(MSCMALoss(bidirectional=True)(scores), ((row0 + row1) / 2 + (col0 + col1) / 2) / 2)
    hot = math.log(1 + math.exp((0.2 - 0.9) / 0.5)) + math.log(1 + math.exp((0.4 - 0.7) / 0.5))
    _close(MSCMALoss(temperature=0.5)(scores), hot / 2)
    two_scales = torch.cat([scores, torch.tensor([[[0.5, 0.5], [0.5, 0.5]]])])
    _close(MSCMALoss()(two_scales), (row0 + row1) / 2 + math.log(2))


def test_mscma_same_image_removed_from_softmax():
    scores = torch.tensor([[[0.9, 0.8, 0.1], [0.3, 0.6, 0.2], [0.5, 0.4, 0.7]]])
    ids = _same([5, 5, 6])  # entries 0 and 1 show the same image
    row0 = math.log(math.exp(0.9) + math.exp(0.1)) - 0.9  # 0.8 removed
    row1 = math.log(math.exp(0.6) + math.exp(0.2)) - 0.6  # 0.3 removed
    row2 = math.log(math.exp(0.5) + math.exp(0.4) + math.exp(0.7)) - 0.7
    _close(MSCMALoss()(scores, ids), (row0 + row1 + row2) / 3)
    col0 = math.log(math.exp(0.9) + math.exp(0.5)) - 0.9  # column 0 without image 1
    col1 = math.log(math.exp(0.6) + math.exp(0.4)) - 0.6
    col2 = math.log(math.exp(0.1) + math.exp(0.2) + math.exp(0.7)) - 0.7
    _close(
        MSCMALoss(bidirectional=True)(scores, ids),
        ((row0 + row1 + row2) / 3 + (col0 + col1 + col2) / 3) / 2,
    )


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


# ---- issue 11's switches: the authors' forms against formulas written here -------------


def _csmmc_formula(
    scores: torch.Tensor, temperature: float, direction: str, divisor: int, axis: str = "image"
) -> torch.Tensor:
    """sum over s < S of sum_ij KL terms / divisor, with P_s = softmax(M_s / T), loop by loop."""
    n_scales, batch, _ = scores.shape
    exp = torch.exp(scores / temperature)
    if axis == "image":  # P_s[i, j] = exp(M_s[i, j] / T) / sum_k exp(M_s[k, j] / T)
        p = exp / exp.sum(dim=1, keepdim=True)
    else:
        p = exp / exp.sum(dim=2, keepdim=True)
    teacher = p[-1].detach()
    total = scores.new_zeros(())
    for s in range(n_scales - 1):
        for i in range(batch):
            for j in range(batch):
                t, q = teacher[i, j], p[s, i, j]
                if direction == "teacher_student":
                    total = total + t * (torch.log(t) - torch.log(q))
                else:
                    total = total + q * (torch.log(q) - torch.log(t))
    return total / divisor


@pytest.mark.parametrize("axis", ["image", "caption"])
@pytest.mark.parametrize("direction", ["teacher_student", "student_teacher"])
@pytest.mark.parametrize("reduction", ["per_distribution_mean", "elementwise_mean"])
def test_csmmc_switches_match_the_formula_with_gradients(axis, direction, reduction):
    gen = torch.Generator().manual_seed(3)
    scores = torch.rand(3, 4, 4, generator=gen, requires_grad=True)
    divisor = 4 if reduction == "per_distribution_mean" else 16  # B or B^2
    loss = CSMMCLoss(2.0, axis, direction, reduction)(scores)
    expected = _csmmc_formula(scores, 2.0, direction, divisor, axis)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=0)
    (grad,) = torch.autograd.grad(loss, scores)
    (expected_grad,) = torch.autograd.grad(expected, scores)
    torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=0)
    assert not grad[-1].any()  # the teacher is detached in every form


def test_csmmc_authors_form_is_torch_kl_div_mean_and_by_hand():
    gen = torch.Generator().manual_seed(4)
    scores = torch.rand(3, 5, 5, generator=gen, requires_grad=True)
    # the issue's torch expression of the authors' term, kl_div(log P_S, P_s, reduction="mean")
    # per scale, written with "sum" / B^2 ("mean" is to change meaning in a later torch)
    p = torch.softmax(scores / 2.0, dim=1)
    expected = sum(
        torch.nn.functional.kl_div(p[-1].detach().log(), p[s], reduction="sum") / 25
        for s in range(2)
    )
    authors = CSMMCLoss(2.0, "image", "student_teacher", "elementwise_mean")
    loss = authors(scores)
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        torch.autograd.grad(loss, scores)[0],
        torch.autograd.grad(expected, scores)[0],
        atol=1e-6,
        rtol=0,
    )
    # 2 x 2 by hand: uniform student vs teacher columns sigmoid(+-.2), KL(student || teacher) / B^2
    two = torch.tensor([[[0.5, 0.5], [0.5, 0.5]], [[0.8, 0.2], [0.4, 0.6]]])
    by_hand = (_kl_two(0.5, _sigmoid(0.2)) + _kl_two(0.5, _sigmoid(-0.2))) / 4
    _close(authors(two), by_hand)
    # today's form is B times larger per distribution and the KL the other way round
    _close(CSMMCLoss(2.0)(two), (_kl_two(_sigmoid(0.2), 0.5) + _kl_two(_sigmoid(-0.2), 0.5)) / 2)


def _triplet_formula(
    image: torch.Tensor, text: torch.Tensor, ids: list[int] | None, margin: float = 0.5
) -> torch.Tensor:
    """Summed hardest-negative triplet, loop by loop; pairs of one id in ``ids`` skipped."""
    batch = len(image)
    sims = [
        [torch.dot(image[i] / image[i].norm(), text[j] / text[j].norm()) for j in range(batch)]
        for i in range(batch)
    ]
    total = image.new_zeros(())
    for q in range(batch):
        negatives = [k for k in range(batch) if k != q and (ids is None or ids[k] != ids[q])]
        for cost in (
            [margin + sims[q][k] - sims[q][q] for k in negatives],  # image q
            [margin + sims[k][q] - sims[q][q] for k in negatives],
        ):  # caption q
            if cost:
                total = total + torch.stack(cost).max().clamp(min=0)
    return total


def _mscma_formula(scores: torch.Tensor, ids: list[int] | None) -> torch.Tensor:
    """Row-wise cross-entropy at T = 1 summed over scales, mean over rows; same ids skipped."""
    n_scales, batch, _ = scores.shape
    total = scores.new_zeros(())
    for s in range(n_scales):
        for i in range(batch):
            kept = [j for j in range(batch) if j == i or ids is None or ids[j] != ids[i]]
            total = total + torch.logsumexp(scores[s, i, kept], dim=0) - scores[s, i, i]
    return total / batch


@pytest.mark.parametrize("exclude", [True, False])
def test_exclude_same_image_switch_with_gradients(exclude):
    out = _outputs(5, scales=2)
    ids = [0, 1, 1, 2, 0]
    cfg = LossConfig(lambda_mscma=1.0, lambda_csmmc=0.0, exclude_same_image=exclude)
    parts = MSALoss(cfg)(out, torch.tensor(ids))
    masked = ids if exclude else None
    triplet = _triplet_formula(out["image_embed"], out["text_embed"], masked)
    mscma = _mscma_formula(out["scores"], masked)
    torch.testing.assert_close(parts["global"], triplet, atol=1e-5, rtol=0)
    torch.testing.assert_close(parts["mscma"], mscma, atol=1e-5, rtol=0)
    inputs = [out["image_embed"], out["text_embed"], out["scores"]]
    grads = torch.autograd.grad(parts["loss"], inputs)
    expected = torch.autograd.grad(triplet + mscma, inputs)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


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
    _close(parts["global"], 0.0)  # no negatives
    _close(parts["mscma"], 0.0)  # a softmax over one caption
    parts["loss"].backward()


def test_duplicate_captions_are_finite():
    out = _outputs(4)
    text = out["text_embed"].detach().clone()
    text[1] = text[0]
    scores = out["scores"].detach().clone()
    scores[:, :, 1] = scores[:, :, 0]
    out = {
        "image_embed": out["image_embed"],
        "text_embed": text.requires_grad_(True),
        "scores": scores.requires_grad_(True),
    }
    parts = MSALoss(LossConfig(mscma_bidirectional=True))(out, torch.tensor([0, 1, 2, 3]))
    assert all(torch.isfinite(v) for v in parts.values())
    parts["loss"].backward()
    assert torch.isfinite(out["text_embed"].grad).all() and torch.isfinite(out["scores"].grad).all()


def test_total_is_the_weighted_sum():
    cfg = LossConfig(lambda_mscma=15.0, lambda_csmmc=10.0, mscma_temperature=0.5)
    out = _outputs(5)
    ids = torch.tensor([0, 1, 1, 2, 3])
    parts = MSALoss(cfg)(out, ids)
    triplet = TripletLoss(0.5)(out["image_embed"], out["text_embed"], _same(ids.tolist()))
    mscma = MSCMALoss(0.5)(out["scores"], _same(ids.tolist()))
    csmmc = CSMMCLoss(2.0)(out["scores"])
    torch.testing.assert_close(parts["global"], triplet)
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
    torch.testing.assert_close(parts["loss"], parts["global"])


def test_needs_scores():
    assert MSALoss(LossConfig()).needs_scores
    assert MSALoss(LossConfig(lambda_mscma=0.0)).needs_scores
    assert not MSALoss(LossConfig(lambda_mscma=0.0, lambda_csmmc=0.0)).needs_scores
