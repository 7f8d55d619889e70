"""Towers, the full model, tokenizer, optimizer groups, checkpoints and a smoke training run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from msa_model.checkpoint import restore_model, save_checkpoint
from msa_model.config import (
    ConfigError,
    ImageTowerConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    from_dict,
)
from msa_model.engine import build_optimizer, seed_everything, train_step
from msa_model.image_tower import ImageTower, WeightsNotFoundError, select_stages
from msa_model.losses import MSALoss
from msa_model.model import MSAModel
from msa_model.tokenizer import tokenizer_from_json, train_wordpiece
from tests.conftest import TINY_MODEL

CAPTIONS = [
    "two red planes on the runway next to the forest",
    "a river crossed by a bridge with three white ships",
    "farmland with a yellow car on the road in the upper left",
    "dense residential blocks and four storage tanks",
]


def tiny_model(**image: object) -> MSAModel:
    cfg = from_dict(ModelConfig, {**TINY_MODEL, "image": {**TINY_MODEL["image"], **image}})
    return MSAModel(cfg, tokenizer_from_json(train_wordpiece(CAPTIONS, 200).to_str()))


def test_import_does_not_pull_ray() -> None:
    code = "import sys, msa_model, msa_model.training, msa_model.data; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("backbone", "kwargs", "size", "stages"),
    [
        ("resnet18", {}, 64, 4),
        ("convnext_atto", {}, 64, 4),
        ("efficientnet_b0", {}, 64, 4),
        ("vit_tiny_patch16_224", {"img_size": 64}, 64, 3),
        ("swin_tiny_patch4_window7_224", {"img_size": 64, "window_size": 2}, 64, 4),
    ],
)
def test_image_tower_backbones(backbone: str, kwargs: dict, size: int, stages: int) -> None:
    cfg = ImageTowerConfig(backbone=backbone, backbone_kwargs=kwargs, num_scales=stages)
    tower = ImageTower(cfg, embed_dim=24)
    fused, scales = tower(torch.randn(2, 3, size, size))
    assert fused.shape == (2, 24) and scales.shape == (stages, 2, 24)
    assert torch.isfinite(fused).all() and torch.isfinite(scales).all()
    channels = tower.backbone.feature_info.channels()
    assert [p.in_features for p in tower.proj] == [channels[i] for i in tower.stages]


def test_stage_selection() -> None:
    reductions = [2, 4, 8, 16, 32]  # resnet: stem + four stages
    assert select_stages(reductions, ImageTowerConfig(num_scales=4)) == [1, 2, 3, 4]
    assert select_stages(reductions, ImageTowerConfig(num_scales=1)) == [4]
    assert select_stages(reductions, ImageTowerConfig(stage_indices=[3, 1])) == [1, 3]
    with pytest.raises(ConfigError, match="num_scales: 5 exceeds the 4 stages"):
        select_stages(reductions, ImageTowerConfig(num_scales=5))
    with pytest.raises(ConfigError, match=r"stage_indices: \[7\] out of range"):
        select_stages(reductions, ImageTowerConfig(stage_indices=[7]))


def test_offline_weights_error_names_model_and_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(WeightsNotFoundError) as err:
        ImageTower(ImageTowerConfig(backbone="resnet18", pretrained=True), 16)
    assert "resnet18" in str(err.value) and "weights_file" in str(err.value)
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        ImageTower(ImageTowerConfig(weights_file=str(tmp_path / "missing.safetensors")), 16)


def test_weights_file_loads_local_state_dict(tmp_path: Path) -> None:
    import timm

    source = timm.create_model("resnet18")
    torch.save(source.state_dict(), tmp_path / "r18.pth")
    tower = ImageTower(ImageTowerConfig(weights_file=str(tmp_path / "r18.pth")), 16)
    assert torch.equal(tower.backbone.conv1.weight, source.conv1.weight)


def test_model_outputs_and_masks() -> None:
    model = tiny_model(num_scales=3)
    tokens = model.tokenize(CAPTIONS[:3])
    assert (
        tokens["input_ids"].shape[0] == 3
        and tokens["attention_mask"][2].sum() < tokens["attention_mask"].shape[1] + 1
    )
    out = model(torch.randn(3, 3, 32, 32), **tokens)
    assert out["image_embed"].shape == (3, 32) and out["text_embed"].shape == (3, 32)
    assert out["image_scales"].shape == (3, 3, 32)
    assert out["scores"].shape == (3, 3, 3) and ((out["scores"] > 0) & (out["scores"] < 1)).all()
    assert out["text_tokens"].shape[1] == tokens["input_ids"].shape[1] - 1
    assert "scores" not in model(torch.randn(3, 3, 32, 32), **tokens, with_scores=False)


def test_wordpiece_is_deterministic() -> None:
    assert (
        train_wordpiece(CAPTIONS, 200).to_str()
        == train_wordpiece(list(reversed(CAPTIONS)), 200).to_str()
    )


def test_optimizer_groups_tower_and_head_lrs() -> None:
    model = tiny_model()
    opt = build_optimizer(model, OptimConfig(lr=1e-5, head_lr=1e-3, weight_decay=0.1))
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["tower"]["lr"] == 1e-5 and by_name["head"]["lr"] == 1e-3
    assert (
        by_name["tower_no_decay"]["weight_decay"] == 0.0 and by_name["head"]["weight_decay"] == 0.1
    )
    n_params = sum(len(g["params"]) for g in opt.param_groups)
    assert n_params == sum(1 for p in model.parameters() if p.requires_grad)


def test_smoke_training_loss_falls() -> None:
    seed_everything(0)
    model = tiny_model()
    loss_fn = MSALoss(LossConfig())
    opt = build_optimizer(model, OptimConfig(lr=3e-3, weight_decay=0.0))
    images = torch.randn(4, 3, 32, 32)
    batch = {"images": images, "captions": CAPTIONS, "image_ids": torch.arange(4)}
    losses = [
        train_step(model, loss_fn, batch, opt, device=torch.device("cpu"))["loss"]
        for _ in range(15)
    ]
    assert losses[-1] < 0.7 * losses[0], losses


def test_nonfinite_loss_raises() -> None:
    model = tiny_model()
    opt = build_optimizer(model, OptimConfig())
    batch = {
        "images": torch.full((2, 3, 32, 32), float("nan")),
        "captions": CAPTIONS[:2],
        "image_ids": torch.arange(2),
    }
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        train_step(model, MSALoss(LossConfig()), batch, opt, device=torch.device("cpu"))


def test_checkpoint_round_trip_rebuilds_model(tmp_path: Path) -> None:
    model = tiny_model().eval()
    meta = {
        "epoch": 3,
        "experiment": {"model": {**TINY_MODEL, "image": dict(TINY_MODEL["image"])}},
        "text_encoder_config": model.text.encoder.config.to_dict(),
    }
    save_checkpoint(tmp_path, model, model.tokenizer, meta)
    restored, got = restore_model(str(tmp_path))
    assert got["epoch"] == 3
    tokens = model.tokenize(CAPTIONS)
    assert restored.tokenize(CAPTIONS)["input_ids"].equal(tokens["input_ids"])
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(restored.encode_image(images), model.encode_image(images))
        assert torch.allclose(restored.encode_text(**tokens), model.encode_text(**tokens))


def test_text_tower_from_local_directory_and_offline_miss(tmp_path: Path) -> None:
    from transformers import BertConfig, BertModel

    from msa_model.config import TextTowerConfig
    from msa_model.text_tower import ModelNotFoundError, TextTower
    from msa_model.tokenizer import build_tokenizer

    tokenizer = tokenizer_from_json(train_wordpiece(CAPTIONS, 200).to_str())
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    source = BertModel(config)
    source.save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(str(tmp_path / "bert"))

    cfg = TextTowerConfig(name=str(tmp_path / "bert"))
    loaded = build_tokenizer(cfg, [])
    assert loaded(CAPTIONS)["input_ids"] == tokenizer(CAPTIONS)["input_ids"]
    tower = TextTower(cfg, embed_dim=32, vocab_size=len(loaded))
    assert torch.equal(
        tower.encoder.embeddings.word_embeddings.weight, source.embeddings.word_embeddings.weight
    )
    enc = loaded(CAPTIONS, padding=True, return_tensors="pt")
    glob, tokens, mask = tower(enc["input_ids"], enc["attention_mask"])
    assert glob.shape == (4, 32) and tokens.shape[-1] == 32 and mask.shape == tokens.shape[:2]

    with pytest.raises(ModelNotFoundError, match="model.text.name: 'no-such-org/no-such-bert'"):
        TextTower(TextTowerConfig(name="no-such-org/no-such-bert"), 32, 100)
