"""The one training loop, its checkpoints and the one evaluation path (no Ray)."""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from msa_model.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    read_checkpoint_meta,
    restore_model,
)
from msa_model.constants import better, score_key
from msa_model.evaluation import eval_set, evaluate, evaluate_checkpoint
from msa_model.progress import Progress, format_duration
from msa_model.session import LoopSession
from msa_model.training import fit
from tests.conftest import tiny_experiment
from workflows.experiment import parse_experiment


class KeepingSession(LoopSession):
    """A local session that keeps every epoch's checkpoint under ``root``."""

    def __init__(self, root: Path, resume_from: str | None = None) -> None:
        super().__init__(device="cpu", resume_from=resume_from, keeps_checkpoints=True)
        self.root, self.reports = root, []

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.reports.append(metrics)
        shutil.copytree(checkpoint_dir, self.root / f"epoch{metrics['epoch']}")


def _spec(synth_data: Path, epochs: int = 2):
    raw = tiny_experiment(synth_data)
    raw["train"]["epochs"] = epochs
    return parse_experiment(raw).spec()


def test_resumed_run_trains_like_the_uninterrupted_one(synth_data: Path, tmp_path: Path) -> None:
    spec = _spec(synth_data)
    full = KeepingSession(tmp_path / "full")
    _, history = fit(spec, full)
    assert [row["epoch"] for row in history] == [1, 2]
    assert {"train_loss", "lr", "val_mr", "val_i2t_r1", "epoch_time_s"} <= set(history[0])
    assert [row["collapsed"] for row in history] == [0.0, 0.0]  # the collapse verdict per epoch

    resumed = KeepingSession(tmp_path / "resumed", resume_from=str(tmp_path / "full" / "epoch1"))
    _, again = fit(spec, resumed)
    assert [row["epoch"] for row in resumed.reports] == [2]  # epoch 1 came from the checkpoint
    assert again[0] == history[0]
    for key in ("train_loss", "val_mr", "val_t2i_r10", "lr"):
        assert again[1][key] == pytest.approx(history[1][key], abs=1e-6), key

    meta = read_checkpoint_meta(tmp_path / "full" / "epoch2")
    # random-init towers: every tensor stored, a version every reader takes (FORMAT_VERSION
    # only when frozen towers are referenced: tests/test_checkpoint_reference.py)
    assert meta["format_version"] == 1 < FORMAT_VERSION and meta["epoch"] == 2
    assert [row["epoch"] for row in meta["history"]] == [1, 2]
    assert meta["experiment"]["train"]["epochs"] == 2
    scores = evaluate_checkpoint(tmp_path / "full" / "epoch2", ["val"], device="cpu")
    assert scores["val"]["mr"] == pytest.approx(history[1]["val_mr"], abs=1e-6)


def test_unknown_checkpoint_version_is_a_clear_error(synth_data: Path, tmp_path: Path) -> None:
    spec = _spec(synth_data, epochs=1)
    fit(spec, KeepingSession(tmp_path))
    meta_path = tmp_path / "epoch1" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["format_version"]  # written before the field existed: version 1
    meta_path.write_text(json.dumps(meta))
    model, _ = restore_model(tmp_path / "epoch1")
    assert not model.training
    meta["format_version"] = 99
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="format_version 99 is unknown"):
        restore_model(tmp_path / "epoch1")


def test_sharded_evaluation_equals_one_process(synth_data: Path) -> None:
    from msa_model.data import ImageStore
    from msa_model.pipeline import build_model, load_splits

    spec = _spec(synth_data)
    splits = load_splits(spec.data)
    torch.manual_seed(0)
    model = build_model(spec.model, splits["train"])
    view = eval_set(splits["val"], spec.data, ImageStore.from_config(spec.data))
    device = torch.device("cpu")
    whole = evaluate(model, view, device, batch_size=7)

    class Gathered(Exception):
        pass

    def take_shard(shard: Any) -> list[Any]:
        shards.append(shard)
        raise Gathered

    shards: list[Any] = []
    with pytest.raises(Gathered):  # worker 1 encodes every second image and caption
        evaluate(model, view, device, 7, rank=1, world_size=2, gather=take_shard)
    ids, _, caption_idx, _ = shards[0]
    assert ids.tolist() == list(range(1, len(view.images), 2))
    assert caption_idx.tolist() == list(range(1, len(view.captions), 2))
    # worker 0 gathers both shards in rank order
    both = evaluate(model, view, device, 7, rank=0, world_size=2, gather=lambda s: [s, shards[0]])
    assert both == pytest.approx(whole, abs=1e-9)


def test_augmentation_draws_from_each_items_own_generator(synth_data: Path) -> None:
    from msa_model.data import ImageStore, TrainPairs, build_transform
    from msa_model.pipeline import load_splits

    cfg = dataclasses.replace(_spec(synth_data).data, augment=["hflip", "vflip", "rot90"])
    records = load_splits(cfg)["train"][:12]
    pairs = TrainPairs(
        records, ImageStore.from_config(cfg), build_transform(cfg, True), "one_caption", 3
    )
    pairs.set_epoch(1)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = [pairs[i]["image"] for i in range(len(pairs))]
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is not drawn from
    torch.manual_seed(123)  # another global state, the items in reverse order: the same draws
    again = [pairs[i]["image"] for i in reversed(range(len(pairs)))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    pairs.set_epoch(2)
    other = [pairs[i]["image"] for i in range(len(pairs))]
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("decay_all", [False, True])
def test_optimizer_groups_and_decay(synth_data: Path, decay_all: bool) -> None:
    from msa_model.config import LossConfig, OptimConfig
    from msa_model.engine import build_optimizer
    from msa_model.losses import MSALoss
    from msa_model.pipeline import build_model, load_splits

    spec = _spec(synth_data)
    model = build_model(spec.model, load_splits(spec.data)["train"])
    loss_fn = MSALoss(LossConfig(global_loss="infonce", infonce_learnable=True))
    cfg = OptimConfig(lr=1e-4, head_lr=1e-3, weight_decay=0.2, decay_norms_and_biases=decay_all)
    optimizer = build_optimizer(model, cfg, loss_fn)
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    for name, param in model.named_parameters():
        expected = 0.2 if param.ndim > 1 or decay_all else 0.0
        assert decay_of[id(param)] == expected, name
        tower = name.startswith(("image.backbone.", "text.encoder."))
        assert lr_of[id(param)] == (1e-4 if tower else 1e-3), name
    (temperature,) = loss_fn.parameters()
    assert decay_of[id(temperature)] == 0.0 and lr_of[id(temperature)] == 1e-3


def test_progress_lines_without_a_terminal() -> None:
    now = [0.0]
    out = io.StringIO()
    progress = Progress(10, "demo epoch 1/2", interval_s=30, stream=out, clock=lambda: now[0])
    for _ in range(3):
        now[0] += 10
        progress.update(32)
    progress.close()
    # one line at 30 s: 3 of 10 steps, 96 samples in 30 s, 7 steps left at 10 s each
    assert out.getvalue() == "[msa] demo epoch 1/2 step 3/10  3.2 samples/s  ETA 1:10\n"
    assert format_duration(3723) == "1:02:03"


def test_better_and_score_key_by_mode() -> None:
    assert better(2.0, 1.0, "max") and not better(2.0, 1.0, "min")
    assert better(1.0, float("nan"), "min") and not better(float("nan"), 1.0, "max")
    assert better(0.5, None) and not better(None, 0.5)
    assert sorted([3.0, None, 1.0], key=lambda s: score_key(s, "min"), reverse=True) == [
        1.0,
        3.0,
        None,
    ]
