"""The global loss options, identical-caption masking, collapse diagnostics and detection."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from msa_model.collapse import collapse_reason, collapsed_loss, embedding_diagnostics
from msa_model.config import ConfigError, LossConfig, from_dict
from msa_model.losses import InfoNCELoss, MSALoss, TripletLoss, caption_ids, positive_mask

ONLY_GLOBAL = {"lambda_mscma": 0.0, "lambda_csmmc": 0.0}
R = 1 / math.sqrt(2)


def _close(value: torch.Tensor | float, expected: float, tol: float = 1e-6) -> None:
    value = float(value.detach()) if isinstance(value, torch.Tensor) else value
    assert abs(value - expected) <= tol, (value, expected)


def _three_pairs() -> dict[str, torch.Tensor]:
    """Unit vectors whose cosine matrix is [[1, .8, 0], [0, .6, 1], [.6, .96, .8]]."""
    return {
        "image_embed": torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]),
        "text_embed": torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]]),
    }


# Violations max(0, .5 + s(i, j) - s(i, i)) of the three pairs, margin .5:
# image 0: caption 1 .3, caption 2 0     | caption 0: image 1 0,   image 2 .1
# image 1: caption 0 0,  caption 2 .9    | caption 1: image 0 .7,  image 2 .86
# image 2: caption 0 .3, caption 1 .66   | caption 2: image 0 0,   image 1 .7
SUM_ALL = (0.3 + 0.9 + (0.3 + 0.66)) + (0.1 + (0.7 + 0.86) + 0.7)  # 4.52
HARDEST_ALL = (0.3 + 0.9 + 0.66) + (0.1 + 0.86 + 0.7)  # 3.52
SUM_CAPTIONS_01_SAME = (0.0 + 0.9 + 0.96) + (0.1 + 0.86 + 0.7)  # pairs (0, 1), (1, 0) dropped


def test_triplet_sum_and_hardest_by_hand():
    out = _three_pairs()
    image, text = out["image_embed"], out["text_embed"]
    _close(TripletLoss(0.5, "sum", "sum")(image, text), SUM_ALL)
    _close(TripletLoss(0.5, "sum", "hardest")(image, text), HARDEST_ALL)
    rows, columns = 0.3 + 0.9 + 0.96, 0.1 + 1.56 + 0.7
    _close(TripletLoss(0.5, "mean", "sum")(image, text), rows / 3 + columns / 3)
    _close(MSALoss(LossConfig(**ONLY_GLOBAL, global_loss="triplet_sum"))(out)["loss"], SUM_ALL)


def test_caption_ids_normalise_case_and_whitespace():
    ids = caption_ids(["A road.", "a  road.", " A ROAD.\n", "a road", "trees", "Trees"])
    assert ids.tolist() == [0, 0, 0, 1, 2, 2]
    assert ids.dtype == torch.long


def test_positive_mask_joins_image_and_caption_ids():
    mask = positive_mask(
        4, torch.device("cpu"), torch.tensor([0, 0, 1, 2]), torch.tensor([5, 6, 7, 7])
    )
    expected = torch.tensor([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]).bool()
    assert torch.equal(mask, expected)


def test_identical_captions_are_not_negatives_in_global_and_mscma():
    out = _three_pairs()
    out["scores"] = torch.tensor([[[0.9, 0.8, 0.1], [0.3, 0.6, 0.2], [0.5, 0.4, 0.7]]])
    captions = caption_ids(["Two white cars.", "two white  cars.", "a lake"])
    distinct_images = torch.tensor([0, 1, 2])
    cfg = {"global_loss": "triplet_sum", "lambda_mscma": 1.0, "lambda_csmmc": 0.0}
    parts = MSALoss(LossConfig(**cfg))(out, distinct_images, caption_ids=captions)
    _close(parts["global"], SUM_CAPTIONS_01_SAME)
    rows = (
        math.log(math.exp(0.9) + math.exp(0.1))
        - 0.9  # 0.8 removed
        + math.log(math.exp(0.6) + math.exp(0.2))
        - 0.6  # 0.3 removed
        + math.log(math.exp(0.5) + math.exp(0.4) + math.exp(0.7))
        - 0.7
    )
    _close(parts["mscma"], rows / 3)
    off = MSALoss(LossConfig(**cfg, exclude_same_caption=False))(out, distinct_images, captions)
    _close(off["global"], SUM_ALL)
    all_rows = sum(
        torch.logsumexp(out["scores"][0, i], 0) - out["scores"][0, i, i] for i in range(3)
    )
    _close(off["mscma"], float(all_rows) / 3)


def test_warmup_switches_to_the_hardest_negative_after_its_epochs():
    loss = MSALoss(LossConfig(**ONLY_GLOBAL, global_loss="triplet_warmup", hardest_after_epochs=2))
    out = _three_pairs()
    _close(loss(out)["global"], SUM_ALL)  # before any set_epoch: epoch 0
    expected = {0: SUM_ALL, 1: SUM_ALL, 2: HARDEST_ALL, 5: HARDEST_ALL}
    for epoch, value in expected.items():
        loss.set_epoch(epoch)
        _close(loss(out)["global"], value)
    loss.set_epoch(0)  # a resumed run may go back
    _close(loss(out)["global"], SUM_ALL)
    hardest = MSALoss(LossConfig(**ONLY_GLOBAL))
    hardest.set_epoch(0)
    _close(hardest(out)["global"], HARDEST_ALL)


def test_infonce_by_hand():
    image = torch.tensor([[3.0, 0.0], [0.0, 2.0]])  # unit: [1, 0], [0, 1]
    text = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # unit: [1, 0], [r, r]
    # cosines [[1, r], [0, r]]; temperature .5: logits x 2; targets on the diagonal
    row0 = math.log(1 + math.exp(2 * R - 2))
    row1 = math.log(1 + math.exp(-2 * R))
    col0 = math.log(1 + math.exp(-2))
    col1 = math.log(2)  # logits [2r, 2r]
    expected = ((row0 + row1) / 2 + (col0 + col1) / 2) / 2
    _close(InfoNCELoss(0.5)(image, text), expected)
    cfg = LossConfig(**ONLY_GLOBAL, global_loss="infonce", infonce_temperature=0.5)
    parts = MSALoss(cfg)({"image_embed": image, "text_embed": text})
    _close(parts["loss"], expected)
    _close(parts["diag_infonce_temperature"], 0.5)
    # caption 1 masked as a second match of caption 0 leaves one logit in rows/columns 0 and 1
    same = caption_ids(["x", "X"])
    _close(MSALoss(cfg)({"image_embed": image, "text_embed": text}, None, same)["loss"], 0.0)


def test_infonce_of_coinciding_embeddings_is_log_b():
    same = torch.ones(5, 4)
    _close(InfoNCELoss(0.05)(same, same * 2), math.log(5), tol=1e-5)


def test_infonce_learnable_temperature_is_a_clamped_parameter():
    cfg = LossConfig(
        **ONLY_GLOBAL,
        global_loss="infonce",
        infonce_learnable=True,
        infonce_temperature=0.1,
        infonce_max_scale=100.0,
    )
    loss = MSALoss(cfg)
    (param,) = list(loss.parameters())
    _close(param, math.log(10))
    assert list(loss.state_dict()) == ["global_term.log_scale"]
    assert list(MSALoss(LossConfig(global_loss="infonce")).parameters()) == []
    gen = torch.Generator().manual_seed(0)
    out = {
        "image_embed": torch.randn(6, 8, generator=gen),
        "text_embed": torch.randn(6, 8, generator=gen),
    }
    (grad,) = torch.autograd.grad(loss(out)["loss"], param)
    assert grad.abs() > 0  # inside the clamp the scale learns
    fixed = {t: InfoNCELoss(t)(out["image_embed"], out["text_embed"]) for t in (0.01, 1.0)}
    with torch.no_grad():
        param.fill_(math.log(1000.0))  # above max_scale: used as 100
    parts = loss(out)
    _close(parts["loss"], float(fixed[0.01]), tol=1e-5)
    _close(parts["diag_infonce_temperature"], 0.01)
    (grad,) = torch.autograd.grad(parts["loss"], param)
    assert grad.item() == 0.0
    with torch.no_grad():
        param.fill_(-1.0)  # scale e^-1 < 1: used as 1
    _close(loss(out)["loss"], float(fixed[1.0]), tol=1e-5)


def test_config_choices_and_ranges_name_the_key():
    assert from_dict(LossConfig, {"global_loss": "infonce"}, "loss").global_loss == "infonce"
    bad = [
        ({"global_loss": "triplet"}, "loss.global_loss: 'triplet' is not one of"),
        ({"hardest_after_epochs": -1}, "loss.hardest_after_epochs: must be >= 0"),
        ({"infonce_temperature": 0.0}, "loss.infonce_temperature: must be > 0"),
        (
            {"infonce_learnable": True, "infonce_temperature": 0.005},
            "loss.infonce_temperature: a learnable temperature starts in [1 / infonce_max_scale",
        ),
        ({"csmmc_direction": "forward"}, "loss.csmmc_direction: 'forward' is not one of"),
    ]
    for data, message in bad:
        with pytest.raises(ConfigError) as err:
            from_dict(LossConfig, data, "loss")
        assert message in str(err.value)
    with pytest.raises(ValueError, match="loss.global_loss must be one of"):
        MSALoss(LossConfig(global_loss="hinge"))  # type: ignore[arg-type]


# ---- collapse ---------------------------------------------------------------------------


def test_embedding_diagnostics_by_hand():
    image = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # unit: [1, 0], [0, 1], [r, r]
    diag = embedding_diagnostics(image, image[[0, 0, 0]])
    _close(diag["diag_image_cos"], (0 + R + R) / 3)  # pairs (0, 1), (0, 2), (1, 2)
    # both dimensions hold the values {1, 0, r}
    _close(diag["diag_image_std"], statistics.pstdev([1.0, 0.0, R]), tol=1e-6)
    _close(diag["diag_text_cos"], 1.0)
    _close(diag["diag_text_std"], 0.0)


def _collapsed_parts(batch: int = 32) -> dict[str, torch.Tensor]:
    """The parts of a summed hardest-negative triplet when every embedding is one point."""
    point = torch.randn(1, 16, generator=torch.Generator().manual_seed(1))
    out = {"image_embed": point.expand(batch, 16), "text_embed": 3 * point.expand(batch, 16)}
    return MSALoss(LossConfig(**ONLY_GLOBAL))(out, torch.arange(batch))


def test_collapsed_triplet_is_2_b_margin_and_detected():
    parts = _collapsed_parts()
    _close(parts["loss"], 2 * 32 * 0.5, tol=1e-4)  # every violation is the margin
    _close(parts["diag_image_cos"], 1.0, tol=1e-5)
    _close(parts["diag_text_std"], 0.0, tol=1e-5)
    cfg = LossConfig(**ONLY_GLOBAL)
    rows = [
        {
            "epoch": e,
            "train_loss": float(parts["loss"]),
            "train_diag_image_cos": 0.5,
            "train_diag_text_cos": 0.5,
        }
        for e in (1, 2)
    ]
    assert collapse_reason(rows[:1], cfg, 32) is None  # one epoch is not enough
    reason = collapse_reason(rows, cfg, 32)
    assert reason is not None and reason.startswith("collapsed at epoch 2: global loss 32")
    assert "2 x B x margin" in reason and "B=32" in reason


def test_loss_criterion_needs_two_epochs_within_one_percent():
    cfg = LossConfig(**ONLY_GLOBAL)

    def rows(*losses: float) -> list[dict[str, float]]:
        return [{"train_loss": v} for v in losses]

    assert collapse_reason(rows(33.9, 32.25, 32.1), cfg, 32).startswith("collapsed at epoch 3")
    assert collapse_reason(rows(32.3, 33.0, 32.3), cfg, 32) is None  # not consecutive
    assert collapse_reason(rows(32.33, 31.67), cfg, 32) is None  # 1.03% off each way
    assert collapse_reason(rows(32.31, 31.69), cfg, 32) is not None
    msa_on = LossConfig()  # the total is no guide with the MSA terms on: the global part is
    assert collapse_reason(rows(32.0, 32.0), msa_on, 32) is None
    parts = [{"train_loss": 230.0, "train_global": v} for v in (32.25, 32.1)]
    assert collapse_reason(parts, msa_on, 32).startswith("collapsed at epoch 2: global loss 32.1")
    demo = [
        {"train_loss": 232.4, "train_global": 32.88},
        {"train_loss": 219.2, "train_global": 32.72},
    ]
    assert collapse_reason(demo, msa_on, 32) is None  # the demo's first epochs: it learns later


def test_cosine_criterion_needs_both_modalities():
    def row(image: float, text: float) -> dict[str, float]:
        return {"train_loss": 200.0, "train_diag_image_cos": image, "train_diag_text_cos": text}

    cfg = LossConfig()  # MSA terms on, no global part in the rows: only the cosines apply
    demo = [row(0.995, 0.949), row(0.996, 0.951)]  # the synthetic demo's epochs 2-3 (it learns)
    assert collapse_reason(demo, cfg, 32) is None
    assert collapse_reason([row(0.995, 0.992), row(0.2, 0.2), row(0.995, 0.992)], cfg, 32) is None
    reason = collapse_reason([row(0.5, 0.4), row(0.995, 0.992), row(0.999, 0.998)], cfg, 32)
    assert reason == (
        "collapsed at epoch 3: mean pairwise cosine 0.999 (images) and 0.998 "
        "(captions) > 0.99 for 2 epochs"
    )
    assert collapse_reason([{"train_loss": float("nan")}], cfg, 32) is None


def test_collapsed_values_of_each_form():
    b, m = 32, 0.5

    def value(epoch: int = 1, **kw) -> float:
        return collapsed_loss(LossConfig(**ONLY_GLOBAL, **kw), b, epoch)[0]

    assert value() == 2 * b * m
    assert value(triplet_reduction="mean") == 2 * m
    assert value(global_loss="triplet_sum") == 2 * b * (b - 1) * m  # 992
    assert value(global_loss="triplet_sum", triplet_reduction="mean") == 2 * (b - 1) * m
    assert value(global_loss="infonce") == math.log(b)
    warm = {"global_loss": "triplet_warmup", "hardest_after_epochs": 2}
    assert [value(e, **warm) for e in (1, 2, 3)] == [992.0, 992.0, 32.0]
    assert collapsed_loss(LossConfig(**ONLY_GLOBAL, margin=0.0), b, 1) is None
    assert collapsed_loss(LossConfig(lambda_csmmc=0.0), b, 1) == (2 * b * m, "2 x B x margin")


def test_collapsed_infonce_detected_from_its_parts():
    same = torch.ones(8, 4)
    cfg = LossConfig(**ONLY_GLOBAL, global_loss="infonce")
    parts = MSALoss(cfg)({"image_embed": same, "text_embed": same})
    rows = [{f"train_{k}": float(v) for k, v in parts.items()} for _ in range(2)]
    rows[0]["train_diag_text_cos"] = 0.0  # the cosine criterion alone would wait
    rows[1]["train_diag_text_cos"] = 0.0
    reason = collapse_reason(rows, cfg, 8)
    assert reason is not None and "log B" in reason and "2.079" in reason
