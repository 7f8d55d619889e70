"""Checkpoints reference frozen towers (source + digest) instead of storing them."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from transformers import BertConfig, BertModel

from msa_model.checkpoint import (
    CheckpointError,
    checkpoint_meta,
    load_model_state,
    read_checkpoint_meta,
    restore_model,
    save_checkpoint,
    save_model_package,
)
from msa_model.config import ModelConfig, from_dict
from msa_model.model import MSAModel
from msa_model.session import LoopSession
from msa_model.tokenizer import load_tokenizer, tokenizer_from_json, train_wordpiece
from msa_model.training import fit
from tests.conftest import TINY_MODEL, tiny_experiment
from workflows.experiment import parse_experiment

CAPTIONS = ["a red plane on the runway", "a river with a bridge", "farmland and a yellow car"]
TEXT = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def write_backbone(path: Path, seed: int) -> None:
    """A random ``TINY_MODEL`` backbone's state dict, as a weights file."""
    torch.manual_seed(seed)
    image = TINY_MODEL["image"]
    net = timm.create_model(image["backbone"], **image["backbone_kwargs"])
    torch.save(net.state_dict(), path)


def write_encoder(folder: Path, seed: int, layers: int = 1) -> None:
    """A random tiny BERT with its tokenizer, as a local model folder."""
    tokenizer = tokenizer_from_json(train_wordpiece(CAPTIONS * 4, 200).to_str())
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), **{**TEXT, "num_hidden_layers": layers})
    BertModel(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, Any]:
    """The model config of towers loaded from local weights and frozen."""
    write_backbone(tmp_path / "backbone.pth", seed=1)
    write_encoder(tmp_path / "encoder", seed=1)
    return {
        **TINY_MODEL,
        "image": {
            **TINY_MODEL["image"],
            "weights_file": str(tmp_path / "backbone.pth"),
            "freeze_backbone": True,
        },
        "text": {"name": str(tmp_path / "encoder"), "freeze": True, "max_length": 12},
    }


def trained_model(raw: dict[str, Any]) -> MSAModel:
    """The model of ``raw`` with its trainable parameters moved off their init."""
    cfg = from_dict(ModelConfig, copy.deepcopy(raw), "model")
    torch.manual_seed(0)
    model = MSAModel(cfg, load_tokenizer(cfg.text.tokenizer or cfg.text.name or ""))
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(0.05)
    return model.eval()


def save(model: MSAModel, raw: dict[str, Any], folder: Path, **kwargs: Any) -> Path:
    meta = checkpoint_meta({"name": "ref", "model": raw}, model, 1, [{"epoch": 1}])
    return save_checkpoint(folder, model, model.tokenizer, meta, **kwargs)


def outputs(model: MSAModel) -> dict[str, torch.Tensor]:
    torch.manual_seed(3)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        return model.eval()(images, **model.tokenize(CAPTIONS[:2]))


def assert_same_outputs(a: MSAModel, b: MSAModel) -> None:
    got, expected = outputs(a), outputs(b)
    for key, value in expected.items():
        assert torch.equal(got[key], value), key


def test_checkpoint_leaves_frozen_towers_out_and_restores(sources: dict, tmp_path: Path) -> None:
    model = trained_model(sources)
    frozen = model.frozen_state_keys()
    assert {key.split(".")[0] for key in frozen} == {"image", "text"}
    folder = save(model, sources, tmp_path / "ckpt")
    stored = load_model_state(folder)
    assert not frozen & stored.keys()
    state = model.state_dict()
    assert stored.keys() | frozen == state.keys()
    frozen_memory = {state[key].data_ptr() for key in frozen}  # nor under another name
    assert not any(state[key].data_ptr() in frozen_memory for key in stored)
    meta = read_checkpoint_meta(folder)
    assert meta["format_version"] == 2
    refs = meta["frozen_towers"]
    assert refs["image"]["source"]["weights_file"] == sources["image"]["weights_file"]
    assert refs["text"]["source"] == {"name": sources["text"]["name"]}
    assert refs["image"]["tensors"] + refs["text"]["tensors"] == len(frozen)
    restored, _ = restore_model(folder)
    assert_same_outputs(restored, model)

    full = save(model, sources, tmp_path / "full", reference_frozen=False)
    assert (folder / "model.pt").stat().st_size < (full / "model.pt").stat().st_size / 2


@pytest.mark.parametrize("tower", ["image", "text"])
def test_a_changed_tower_is_refused_by_name(sources: dict, tmp_path: Path, tower: str) -> None:
    folder = save(trained_model(sources), sources, tmp_path / "ckpt")
    if tower == "image":
        write_backbone(Path(sources["image"]["weights_file"]), seed=2)
    else:
        write_encoder(Path(sources["text"]["name"]), seed=2)
    with pytest.raises(CheckpointError) as err:
        restore_model(folder)
    message = str(err.value)
    source = sources["image"]["weights_file"] if tower == "image" else sources["text"]["name"]
    assert f"frozen {tower} tower" in message and source in message
    assert message.count("sha256:") == 2  # both digests


def test_missing_trained_tensors_are_not_filled_from_the_source(
    sources: dict, tmp_path: Path
) -> None:
    folder = save(trained_model(sources), sources, tmp_path / "ckpt")
    stored = load_model_state(folder)
    del stored["image.proj.0.weight"]
    torch.save(stored, folder / "model.pt")
    with pytest.raises(CheckpointError, match="lacks .* tensors of the image tower"):
        restore_model(folder)


def test_partly_trained_towers_store_their_top(sources: dict, tmp_path: Path) -> None:
    write_encoder(Path(sources["text"]["name"]), seed=1, layers=2)
    image = {k: v for k, v in sources["image"].items() if k != "freeze_backbone"}
    text = {k: v for k, v in sources["text"].items() if k != "freeze"}
    raw = {
        **sources,
        "image": {**image, "trainable_stages": 1},
        "text": {**text, "trainable_layers": 1},
    }
    model = trained_model(raw)
    frozen = model.frozen_state_keys()
    folder = save(model, raw, tmp_path / "ckpt")
    stored = load_model_state(folder)
    assert not frozen & stored.keys()
    assert any(k.startswith("image.backbone.") for k in stored)  # the trained top stage
    assert any(k.startswith("text.encoder.") for k in stored)  # the trained top layer
    assert_same_outputs(restore_model(folder)[0], model)
    write_encoder(Path(sources["text"]["name"]), seed=2, layers=2)
    with pytest.raises(CheckpointError, match="frozen text tower"):
        restore_model(folder)


def test_full_checkpoints_still_load(sources: dict, tmp_path: Path) -> None:
    model = trained_model(sources)
    folder = save(model, sources, tmp_path / "ckpt", reference_frozen=False)
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert "frozen_towers" not in meta and meta["format_version"] == 1
    del meta["format_version"]  # as the oldest checkpoints
    meta_path.write_text(json.dumps(meta))
    assert load_model_state(folder).keys() == model.state_dict().keys()
    write_backbone(Path(sources["image"]["weights_file"]), seed=2)  # not read: all stored
    restored, _ = restore_model(folder)
    assert_same_outputs(restored, model)


def test_random_init_frozen_towers_are_stored(tmp_path: Path) -> None:
    raw = {
        **TINY_MODEL,
        "image": {**TINY_MODEL["image"], "freeze_backbone": True},
        "text": {**TINY_MODEL["text"], "freeze": True},
    }
    cfg = from_dict(ModelConfig, copy.deepcopy(raw), "model")
    torch.manual_seed(0)
    model = MSAModel(cfg, tokenizer_from_json(train_wordpiece(CAPTIONS * 4, 200).to_str()))
    folder = save(model, raw, tmp_path / "ckpt")
    assert "frozen_towers" not in read_checkpoint_meta(folder)
    assert load_model_state(folder).keys() == model.state_dict().keys()
    assert_same_outputs(restore_model(folder)[0], model)


def test_exported_model_is_self_contained(sources: dict, tmp_path: Path) -> None:
    model = trained_model(sources)
    restored, meta = restore_model(save(model, sources, tmp_path / "ckpt"))
    package = save_model_package(tmp_path / "model", restored, restored.tokenizer, meta)
    written = read_checkpoint_meta(package)
    assert "frozen_towers" not in written and written["format_version"] == 1
    assert load_model_state(package).keys() == model.state_dict().keys()
    Path(sources["image"]["weights_file"]).unlink()  # the package needs no source
    write_encoder(Path(sources["text"]["name"]), seed=2)
    assert_same_outputs(restore_model(package)[0], model)


class KeepingSession(LoopSession):
    """A local session that keeps every epoch's checkpoint under ``root``."""

    def __init__(self, root: Path, resume_from: str | None = None) -> None:
        super().__init__(device="cpu", resume_from=resume_from, keeps_checkpoints=True)
        self.root = root

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        import shutil

        shutil.copytree(checkpoint_dir, self.root / f"epoch{metrics['epoch']}")


def test_training_resumes_from_a_referencing_checkpoint(
    sources: dict, synth_data: Path, tmp_path: Path
) -> None:
    raw = tiny_experiment(synth_data, model=sources)
    raw["train"]["epochs"] = 2
    spec = parse_experiment(raw).spec()
    _, history = fit(spec, KeepingSession(tmp_path / "full"))
    epoch1 = tmp_path / "full" / "epoch1"
    assert "frozen_towers" in read_checkpoint_meta(epoch1)
    _, again = fit(spec, KeepingSession(tmp_path / "resumed", resume_from=str(epoch1)))
    assert again[1]["val_mr"] == pytest.approx(history[1]["val_mr"], abs=1e-6)

    write_backbone(Path(sources["image"]["weights_file"]), seed=2)
    with pytest.raises(CheckpointError, match="frozen image tower"):
        fit(spec, KeepingSession(tmp_path / "changed", resume_from=str(epoch1)))
