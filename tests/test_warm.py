"""The frozen bottoms' memo is built once, before training, and training only reads it."""

from __future__ import annotations

from pathlib import Path

from msa_model.pipeline import load_splits
from msa_model.tokenizer import build_tokenizer
from msa_model.training import fit
from msa_model.warm import warm_memo
from tests.conftest import TINY_MODEL, tiny_experiment
from workflows.experiment import parse_experiment
from workflows.runtime.memo import memo_specs

TEXT = {
    "config": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    },
    "padding": "max_length",
    "max_length": 16,
}


def experiment(data: Path, cache: Path, **search: dict) -> dict:
    model = {
        **TINY_MODEL,
        "frozen_cache_dir": str(cache),
        "image": {**TINY_MODEL["image"], "trainable_stages": 1, "cache_frozen": True},
        "text": {**TEXT, "trainable_layers": 1, "cache_frozen": True},
    }
    exp = tiny_experiment(data, model=model, **search)
    exp["data"]["augment"] = ["hflip", "vflip", "rot90"]
    exp["train"]["epochs"] = 1
    return exp


def test_warm_memo_holds_every_variant_and_training_adds_nothing(synth_data, tmp_path) -> None:
    spec = parse_experiment(experiment(synth_data, tmp_path), source="t").spec()
    splits = load_splits(spec.data)
    counts = warm_memo(spec, log=lambda _: None)
    captions = sorted({c for s in ("train", "val") for r in splits[s] for c in r.captions})
    tokenizer = build_tokenizer(spec.model.text, [c for r in splits["train"] for c in r.captions])
    ids = tokenizer(captions, padding="max_length", truncation=True, max_length=16)["input_ids"]
    assert counts == {
        "image": 8 * len(splits["train"]) + len(splits["val"]),
        "text": len({tuple(row) for row in ids}),
    }
    files = {p: p.stat().st_mtime_ns for p in tmp_path.glob("memo-*.pt")}
    assert len(files) == 2
    fit(spec)  # an epoch with random flips and turns, and validation: all read from the memo
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("memo-*.pt")} == files


def test_a_search_warms_each_bottom_it_can_choose_once(synth_data, tmp_path) -> None:
    space = {
        "model.image.trainable_stages": {"choice": [0, 1, 2]},
        "model.text.trainable_layers": {"choice": [1, 2]},
        "loss.lambda_mscma": {"uniform": [1.0, 20.0]},
    }
    raw = experiment(synth_data, tmp_path, search={"num_samples": 2, "space": space})
    bottoms = [
        (s.model.image.trainable, s.model.text.trainable, towers)
        for s, towers in memo_specs(parse_experiment(raw, source="t"))
    ]
    assert bottoms == [
        (1, 1, ("image", "text")),
        (0, 1, ("image",)),
        (2, 1, ("image",)),
        (1, 2, ("text",)),
    ]
    del raw["model"]["frozen_cache_dir"]  # a memo in memory only: nothing to share
    assert memo_specs(parse_experiment(raw, source="t")) == []
