"""Towers whose top trains: the cut forward equals the whole one, gradients stop at the cut."""

from __future__ import annotations

import pytest
import torch

from msa_model.config import ConfigError, ModelConfig, from_dict
from msa_model.model import MSAModel
from msa_model.tokenizer import tokenizer_from_json, train_wordpiece
from tests.conftest import TINY_MODEL

CAPTIONS = ["a red plane on the runway", "a river with a bridge", "farmland and a yellow car"]
TOKENIZER = tokenizer_from_json(train_wordpiece(CAPTIONS * 4, 200).to_str())
TEXT = {
    "hidden_size": 32,
    "num_hidden_layers": 3,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def model(image: dict | None = None, text: dict | None = None, seed: int = 0) -> MSAModel:
    raw = {
        **TINY_MODEL,
        "image": {**TINY_MODEL["image"], "num_scales": 3, **(image or {})},
        "text": {"config": TEXT, "padding": "max_length", "max_length": 12, **(text or {})},
    }
    torch.manual_seed(seed)
    return MSAModel(from_dict(ModelConfig, raw, "model"), TOKENIZER)


@pytest.mark.parametrize("cache", [False, True])
@pytest.mark.parametrize("k_image,k_text", [(1, 1), (2, 2), (0, 0)])
def test_cut_towers_compute_the_whole_forward(k_image: int, k_text: int, cache: bool) -> None:
    whole = model()
    cut = model(
        {"trainable_stages": k_image, "cache_frozen": cache},
        {"trainable_layers": k_text, "cache_frozen": cache},
        seed=1,
    )
    cut.load_state_dict(whole.state_dict())
    whole.eval(), cut.eval()
    images, tokens = torch.randn(3, 3, 32, 32), whole.tokenize(CAPTIONS)
    for _ in range(2):  # with the memo, the second pass reads the bottom from it
        want, got = whole(images, **tokens), cut(images, **tokens)
        for key in ("image_embed", "image_scales", "text_embed", "text_tokens", "scores"):
            torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=1e-6)
    if cache:
        assert len(cut.image._memo) == 3 and len(cut.text._memo) == 3


def test_only_the_top_gets_gradients_and_the_bottom_keeps_its_statistics() -> None:
    cut = model(
        {"trainable_stages": 2, "cache_frozen": True}, {"trainable_layers": 1, "cache_frozen": True}
    )
    cut.train()
    bottom = dict(cut.image.frozen_modules())
    assert list(bottom) == [
        "backbone.conv1.0",
        "backbone.conv1.1",
        "backbone.conv1.2",
        "backbone.conv1.3",
        "backbone.conv1.4",
        "backbone.conv1.5",
        "backbone.conv1.6",
        "backbone.bn1",
        "backbone.act1",
        "backbone.maxpool",
        "backbone.layer1.0",
        "backbone.layer2.0",
    ]
    assert not cut.image.backbone.bn1.training and cut.image.backbone.layer3[0].bn1.training
    stats = {k: v.clone() for k, v in cut.image.backbone.bn1.state_dict().items()}
    out = cut(torch.randn(3, 3, 32, 32), **cut.tokenize(CAPTIONS))
    (out["scores"].sum() + out["image_embed"].sum() + out["text_embed"].sum()).backward()
    moved: dict[str, float] = {}
    for name, param in cut.named_parameters():
        text_bottom = (
            "text.encoder.embeddings.",
            "text.encoder.encoder.layer.0.",
            "text.encoder.encoder.layer.1.",
        )
        trained = not any(name.startswith(f"image.{n}.") for n in bottom) and not any(
            name.startswith(p) for p in text_bottom
        )
        assert param.requires_grad == trained, name
        assert (param.grad is not None) == trained, name
        part = ".".join(name.split(".")[:4])
        if trained:
            moved[part] = moved.get(part, 0.0) + float(param.grad.abs().sum())
    for part in (
        "image.backbone.layer3.0",
        "image.backbone.layer4.0",
        "text.encoder.encoder.layer",
    ):
        assert moved[part] > 0, part
    for key, value in cut.image.backbone.bn1.state_dict().items():
        assert torch.equal(value, stats[key]), key
    frozen = cut.frozen_state_keys()
    assert "image.backbone.layer2.0.conv1.weight" in frozen
    assert "image.backbone.layer3.0.conv1.weight" not in frozen
    assert "text.encoder.encoder.layer.1.output.dense.weight" in frozen
    assert "text.encoder.encoder.layer.2.output.dense.weight" not in frozen


def test_frozen_bn_stats_keep_the_running_statistics_of_trained_stages() -> None:
    cut = model({"trainable_stages": 1, "bn_stats": "frozen"}).train()
    bn = cut.image.backbone.layer4[0].bn1
    before = bn.running_mean.clone()
    cut.image(torch.randn(4, 3, 32, 32))[0].sum().backward()
    assert not bn.training and torch.equal(bn.running_mean, before)
    assert bn.weight.grad is not None  # the affine part still trains


def test_k0_is_the_frozen_alias_with_the_same_memo_file(tmp_path) -> None:
    old = model(
        {"freeze_backbone": True, "cache_frozen": True}, {"freeze": True, "cache_frozen": True}
    )
    new = model(
        {"trainable_stages": 0, "cache_frozen": True},
        {"trainable_layers": 0, "cache_frozen": True},
        seed=1,
    )
    new.load_state_dict(old.state_dict())
    for m in (old, new):
        m.cfg.frozen_cache_dir = str(tmp_path)
    images, tokens = torch.randn(2, 3, 32, 32), old.tokenize(CAPTIONS)
    old.train(), new.train()
    torch.manual_seed(3)
    want = old(images, **tokens)
    torch.manual_seed(3)
    got = new(images, **tokens)
    for key in ("image_embed", "text_embed", "scores"):
        assert torch.equal(got[key], want[key]), key
    assert old.frozen_state_keys() == new.frozen_state_keys()
    assert {k.split(".")[1] for k in new.frozen_state_keys()} == {"backbone", "encoder"}


@pytest.mark.parametrize(
    "image,text,message",
    [
        (
            {"trainable_stages": 1, "freeze_backbone": True},
            {},
            "model.image.freeze_backbone: True contradicts trainable_stages: 1",
        ),
        ({}, {"trainable_layers": -1}, "model.text.trainable_layers: must be >= 0 or 'all'"),
        (
            {"trainable_stages": "all", "cache_frozen": True},
            {},
            "model.image.cache_frozen: needs a frozen part",
        ),
        ({"trainable_stages": "some"}, {}, "model.image.trainable_stages: 'some' matches none"),
    ],
)
def test_bad_trainable_settings_name_the_key(image: dict, text: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        model(image, text)


def test_a_backbone_that_is_not_a_chain_is_refused() -> None:
    with pytest.raises(ConfigError, match="model.image.trainable_stages: timm model 'vit_tiny"):
        model(
            {
                "backbone": "vit_tiny_patch16_224",
                "backbone_kwargs": {"img_size": 32},
                "trainable_stages": 1,
                "num_scales": 1,
            }
        )
