"""Assembling a run from config: the splits, the training loader of an epoch, the model."""

from __future__ import annotations

from torch.utils.data import DataLoader, DistributedSampler

from msa_model.config import DataConfig, ModelConfig
from msa_model.data import (
    ImageRecord,
    ImageStore,
    TrainPairs,
    build_transform,
    collate,
    make_splits,
    read_karpathy,
)
from msa_model.model import MSAModel
from msa_model.tokenizer import build_tokenizer

__all__ = ["load_splits", "train_loader", "build_model"]


def load_splits(cfg: DataConfig, train_on_val: bool = False) -> dict[str, list[ImageRecord]]:
    """train/val/test records; val is carved from train when the dataset has none.

    With ``train_on_val`` the val images join train (the final retraining of a best config).
    """
    splits = make_splits(
        read_karpathy(cfg.json), cfg.val_fraction, cfg.split_seed, cfg.test_fraction
    )
    if train_on_val:
        splits = {"train": splits["train"] + splits["val"], "val": [], "test": splits["test"]}
    return splits


def train_loader(
    records: list[ImageRecord],
    cfg: DataConfig,
    store: ImageStore,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """The loader of one epoch: a seeded shuffle of (seed, epoch), sharded over ``world_size``.

    Built per epoch so a run resumed at epoch k sees exactly the batches it would have seen. It
    draws nothing from the global RNG while built; caption sampling is seeded by (seed, epoch),
    augmentation by (seed, epoch, item).
    """
    pairs = TrainPairs(records, store, build_transform(cfg, train=True), cfg.sampling, seed)
    pairs.set_epoch(epoch)
    sampler = DistributedSampler(
        pairs, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
    )
    sampler.set_epoch(epoch)
    return DataLoader(
        pairs,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.loader_workers,
        drop_last=len(pairs) // world_size > batch_size,
    )


def build_model(cfg: ModelConfig, train_records: list[ImageRecord]) -> MSAModel:
    """The model, with a WordPiece vocabulary trained on ``train_records`` when none is named."""
    captions = [c for r in train_records for c in r.captions]
    return MSAModel(cfg, build_tokenizer(cfg.text, captions))
