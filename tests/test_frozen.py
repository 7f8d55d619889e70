"""Frozen towers stay in eval mode; their memoised outputs equal the computed ones."""

from __future__ import annotations

import pytest
import torch

from msa_model.config import ConfigError, ModelConfig, from_dict
from msa_model.frozen import FeatureMemo
from msa_model.model import MSAModel
from msa_model.tokenizer import tokenizer_from_json, train_wordpiece
from tests.conftest import TINY_MODEL

CAPTIONS = ["a red plane on the runway", "a river with a bridge", "farmland and a yellow car"]


def frozen_model(cache: bool) -> MSAModel:
    raw = {
        **TINY_MODEL,
        "image": {**TINY_MODEL["image"], "freeze_backbone": True, "cache_frozen": cache},
        "text": {
            **TINY_MODEL.get("text", {}),
            "freeze": True,
            "cache_frozen": cache,
            "padding": "max_length",
            "max_length": 12,
        },
    }
    torch.manual_seed(0)
    return MSAModel(
        from_dict(ModelConfig, raw),
        tokenizer_from_json(train_wordpiece(CAPTIONS * 4, 200).to_str()),
    )


def test_memo_computes_each_new_sample_once() -> None:
    calls: list[int] = []

    def double(x: torch.Tensor) -> list[torch.Tensor]:
        calls.append(x.shape[0])
        return [2 * x, x.sum(1)]

    memo = FeatureMemo(double, torch.nn.Linear(1, 1))
    a, b, c = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), torch.tensor([5.0, 6.0])
    first = memo(torch.stack([a, b, a]))  # a twice in one batch: computed once
    assert calls == [2]
    torch.testing.assert_close(first[0], torch.stack([2 * a, 2 * b, 2 * a]))
    torch.testing.assert_close(first[1], torch.tensor([3.0, 7.0, 3.0]))
    second = memo(torch.stack([c, b]))  # only c is new
    assert calls == [2, 1] and len(memo) == 3
    torch.testing.assert_close(second[0], torch.stack([2 * c, 2 * b]))


def test_frozen_towers_stay_in_eval_mode_and_keep_their_statistics() -> None:
    model = frozen_model(cache=False)
    model.train()
    assert not model.image.backbone.training and not model.text.encoder.training
    assert model.image.proj.training  # the heads train
    stats = {k: v.clone() for k, v in model.image.backbone.state_dict().items()}
    tokens = model.tokenize(CAPTIONS)
    model(torch.randn(3, 3, 32, 32), **tokens)
    for key, value in model.image.backbone.state_dict().items():
        assert torch.equal(value, stats[key]), key  # no BatchNorm running-stat drift
    assert all(not p.requires_grad for p in model.image.backbone.parameters())


def test_cached_towers_give_the_uncached_outputs() -> None:
    plain, cached = frozen_model(cache=False), frozen_model(cache=True)
    cached.load_state_dict(plain.state_dict())
    images = torch.randn(3, 3, 32, 32)
    tokens = plain.tokenize(CAPTIONS)
    for _ in range(2):  # the second pass is served from the memo
        expected = plain(images, **tokens)
        got = cached(images, **tokens)
        for key in ("image_embed", "text_embed", "scores"):
            torch.testing.assert_close(got[key], expected[key], atol=1e-5, rtol=1e-5)
    assert len(cached.image._memo) == 3 and len(cached.text._memo) == 3
    got["scores"].sum().backward()  # the heads still train through memoised features
    assert cached.image.proj[0].weight.grad is not None


@pytest.mark.parametrize(
    "section,key", [("image", "trainable_stages"), ("text", "trainable_layers")]
)
def test_cache_needs_a_frozen_tower(section: str, key: str) -> None:
    raw = {**TINY_MODEL, section: {**TINY_MODEL.get(section, {}), "cache_frozen": True}}
    message = f"model.{section}.cache_frozen: needs a frozen part .{key}"
    with pytest.raises(ConfigError, match=message):
        from_dict(ModelConfig, raw, "model")


def test_memo_on_disk_is_shared_by_the_next_run(tmp_path) -> None:
    model = frozen_model(cache=True)
    images = torch.randn(2, 3, 32, 32)
    first = model.image.pooled(images)
    model.eval()  # leaving training mode writes the memo
    assert list(tmp_path.iterdir()) == []  # no folder configured: memory only
    model.cfg.frozen_cache_dir = str(tmp_path)
    disk = MSAModel(model.cfg, model.tokenizer)
    disk.load_state_dict(model.state_dict())
    disk.image.pooled(images)
    disk.text(**disk.tokenize(CAPTIONS))
    disk.eval()
    assert len(list(tmp_path.glob("memo-*.pt"))) == 2  # the image and the text memo

    def fail(*_: torch.Tensor) -> list[torch.Tensor]:
        raise AssertionError("recomputed an input the memo file holds")

    again = MSAModel(model.cfg, model.tokenizer)
    again.load_state_dict(model.state_dict())
    again.image._memo.fn = fail
    for got, want in zip(again.image.pooled(images), first, strict=True):
        torch.testing.assert_close(got, want)
    torch.manual_seed(1)
    fresh = MSAModel(model.cfg, model.tokenizer)  # other weights: another file, nothing reused
    fresh.image.pooled(images)
    assert len(fresh.image._memo) == 2 and fresh.image._memo.path != again.image._memo.path
    again.image._memo.fn = fresh.image._bottom
    again.load_state_dict(fresh.state_dict())  # new weights empty the memo
    torch.testing.assert_close(again.image.pooled(images), fresh.image.pooled(images))
