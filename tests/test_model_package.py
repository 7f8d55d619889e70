"""Weights only: the exported model format, and optimizer state kept in the latest checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from msa_model.checkpoint import (
    CheckpointError,
    load_model_state,
    read_checkpoint_meta,
    restore_model,
    save_checkpoint,
    save_model_package,
)
from msa_model.config import ModelConfig, from_dict
from msa_model.model import MSAModel
from msa_model.tokenizer import build_tokenizer
from tests.conftest import TINY_MODEL
from workflows.experiment import load_experiment
from workflows.runtime.checkpoints import RunCheckpoints


def _model() -> MSAModel:
    cfg = from_dict(ModelConfig, TINY_MODEL, "model")
    torch.manual_seed(0)
    return MSAModel(cfg, build_tokenizer(cfg.text, ["a red roof", "two green fields"] * 10))


def test_model_package_restores_the_same_model(tmp_path: Path) -> None:
    model = _model()
    experiment = {"name": "tiny", "model": TINY_MODEL}
    meta = {
        "epoch": 3,
        "metrics": {"val_mr": 12.5},
        "history": [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}],
        "experiment": experiment,
        "text_encoder_config": model.text.encoder.config.to_dict(),
    }
    save_checkpoint(tmp_path / "ckpt", model, model.tokenizer, meta, training_state={"epoch": 3})
    package = save_model_package(tmp_path / "model", model, model.tokenizer, meta)
    assert sorted(p.name for p in package.iterdir()) == [
        "experiment.yaml", "meta.json", "model.safetensors", "tokenizer",
    ]  # fmt: skip
    written = read_checkpoint_meta(package)
    assert written["kind"] == "model" and "history" not in written
    assert written["metrics"] == {"val_mr": 12.5} and written["epoch"] == 3
    assert load_experiment(package / "experiment.yaml").name == "tiny"
    full, weights = load_model_state(tmp_path / "ckpt"), load_model_state(package)
    assert full.keys() == weights.keys()
    assert all(torch.equal(full[k], weights[k]) for k in full)
    restored, _ = restore_model(package)
    tokens = restored.tokenize(["a red roof"])
    with torch.no_grad():
        expected = model.eval().encode_text(**model.tokenize(["a red roof"]))
        assert torch.equal(restored.encode_text(**tokens), expected)
    # the package is smaller than the checkpoint's model.pt: no pickle framing, no optimizer
    assert (package / "model.safetensors").stat().st_size <= (
        tmp_path / "ckpt" / "model.pt"
    ).stat().st_size

    (package / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="model.safetensors: unreadable weights file"):
        load_model_state(package)


def test_only_the_latest_checkpoint_keeps_optimizer_state(tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    run = tmp_path / "runs" / "x_1"
    store = RunCheckpoints(str(run), keep=2, metric="val_mr", mode="max")
    for epoch, score in [(1, 10.0), (2, 30.0), (3, 20.0), (4, 5.0)]:
        (local / "meta.json").write_text(json.dumps({"epoch": epoch}))
        (local / "model.pt").write_bytes(b"weights")
        (local / "optimizer.pt").write_bytes(b"state")
        store.save(str(local), epoch, {"val_mr": score})
        kept = sorted(p.name for p in run.glob("checkpoint_*"))
        with_state = sorted(p.parent.name for p in run.glob("checkpoint_*/optimizer.pt"))
        assert with_state == [f"checkpoint_{epoch:06d}"], epoch  # the latest only
        assert all((run / name / "model.pt").is_file() for name in kept)
    assert kept == ["checkpoint_000002", "checkpoint_000003", "checkpoint_000004"]
    restarted = RunCheckpoints(str(run), keep=2, metric="val_mr", mode="max")
    assert Path(restarted.latest(), "optimizer.pt").is_file()  # what a restarted trial reads
