"""Shared fixtures: a small synthetic dataset on disk and a tiny experiment YAML."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from msa_model.data import write_synthetic_dataset

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads in tests

TINY_MODEL = {
    "embed_dim": 32,
    "image": {
        "backbone": "resnet10t",
        "backbone_kwargs": {"channels": [8, 16, 32, 64], "stem_width": 8},
        "num_scales": 2,
    },
    "text": {
        "config": {
            "hidden_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "intermediate_size": 64,
        },
        "vocab_size": 200,
        "max_length": 24,
    },
    "mscmat": {"num_heads": 2},
}


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 synthetic 32-px images (train/val/test) written once per test session."""
    out = tmp_path_factory.mktemp("synth")
    write_synthetic_dataset(out, num_images=60, size=32, seed=0)
    return out


def tiny_experiment(data: Path, name: str = "tiny", **sections: dict) -> dict:
    """A two-epoch experiment on ``data`` with the tiny model; ``sections`` update it."""
    exp = {
        "name": name,
        "data": {
            "json": str(data / "dataset.json"),
            "images": str(data / "images"),
            "image_size": 32,
            "sampling": "one_caption",
            "augment": [],
        },
        "model": TINY_MODEL,
        "optim": {"lr": 1e-3},
        "train": {"epochs": 2, "batch_size": 16, "eval_batch_size": 64, "seed": 0},
    }
    for key, value in sections.items():
        exp[key] = value
    return exp


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
