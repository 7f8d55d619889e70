"""Assembling a run from config: splits, loaders, tokenizer, model, and a plain training loop.

The Ray worker loop (``workflows.worker``) and scripts without Ray share these pieces.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from msa_model.config import DataConfig, LossConfig, ModelConfig, OptimConfig
from msa_model.data import (
    EvalImages,
    ImageRecord,
    ImageStore,
    TrainPairs,
    build_transform,
    collate,
    eval_captions,
    make_splits,
    read_karpathy,
)
from msa_model.engine import (
    build_optimizer,
    build_scheduler,
    evaluate,
    seed_everything,
    train_epoch,
)
from msa_model.losses import MSALoss
from msa_model.model import MSAModel
from msa_model.tokenizer import build_tokenizer

__all__ = [
    "EvalSet",
    "load_splits",
    "train_loader",
    "eval_set",
    "build_model",
    "fit",
    "restore_model",
    "evaluate_split",
]


@dataclass
class EvalSet:
    """A split prepared for retrieval: each image once, each caption once."""

    images: EvalImages
    captions: list[str]
    caption_image: torch.Tensor

    def loader(self, batch_size: int, indices: list[int] | None = None) -> DataLoader:
        """Batches of images (optionally only ``indices``, keeping their global image ids)."""
        data = self.images if indices is None else Subset(self.images, indices)
        return DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate)


def load_splits(cfg: DataConfig, train_on_val: bool = False) -> dict[str, list[ImageRecord]]:
    """train/val/test records; val is carved from train when the dataset has none.

    With ``train_on_val`` the val images join train (the final retraining of a best config).
    """
    splits = make_splits(read_karpathy(cfg.json), cfg.val_fraction, cfg.split_seed)
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

    Built per epoch so a run resumed at epoch k sees exactly the batches it would have seen.
    """
    pairs = TrainPairs(records, store, build_transform(cfg, train=True), cfg.sampling, seed)
    pairs.set_epoch(epoch)
    sampler = DistributedSampler(
        pairs, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True
    )
    sampler.set_epoch(epoch)
    torch.manual_seed(seed * 100_003 + epoch * 1_009 + rank)  # augmentation draws
    return DataLoader(
        pairs,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.loader_workers,
        drop_last=len(pairs) // world_size > batch_size,
    )


def eval_set(records: list[ImageRecord], cfg: DataConfig, store: ImageStore) -> EvalSet:
    """The retrieval view of a split."""
    captions, owner = eval_captions(records)
    return EvalSet(EvalImages(records, store, build_transform(cfg, train=False)), captions, owner)


def build_model(cfg: ModelConfig, train_records: list[ImageRecord]) -> MSAModel:
    """The model, with a WordPiece vocabulary trained on ``train_records`` when none is named."""
    captions = [c for r in train_records for c in r.captions]
    return MSAModel(cfg, build_tokenizer(cfg.text, captions))


def fit(
    data: DataConfig,
    model_cfg: ModelConfig,
    loss_cfg: LossConfig,
    optim: OptimConfig,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    device: str = "cpu",
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> tuple[MSAModel, list[dict[str, float]]]:
    """Train without Ray and evaluate on val after every epoch; returns the model and history."""
    seed_everything(seed)
    splits = load_splits(data)
    store = ImageStore.from_config(data)
    model = build_model(model_cfg, splits["train"]).to(device)
    loss_fn = MSALoss(loss_cfg)
    optimizer = build_optimizer(model, optim)
    steps = epochs * max(1, len(train_loader(splits["train"], data, store, batch_size, seed, 0)))
    scheduler = build_scheduler(optimizer, optim, steps)
    val = eval_set(splits["val"], data, store)
    history = []
    for epoch in range(epochs):
        start = time.perf_counter()
        loader = train_loader(splits["train"], data, store, batch_size, seed, epoch)
        parts = train_epoch(
            model,
            loss_fn,
            loader,
            optimizer,
            device=torch.device(device),
            grad_clip_norm=optim.grad_clip_norm,
            scheduler=scheduler,
        )
        row = {"epoch": epoch + 1, **{f"train_{k}": v for k, v in parts.items()}}
        metrics = evaluate(
            model, val.loader(256), val.captions, val.caption_image, torch.device(device)
        )
        row.update({f"val_{k}": v for k, v in metrics.items()})
        row["epoch_time_s"] = time.perf_counter() - start
        history.append(row)
        if on_epoch is not None:
            on_epoch(row)
    return model, history


def restore_model(checkpoint_dir: str, device: str | torch.device = "cpu") -> tuple[MSAModel, dict]:
    """Rebuild a model from a checkpoint folder alone (no downloads, no unpickling).

    Returns the model in eval mode and the checkpoint's meta (``experiment``, ``epoch``, ...).
    """
    from msa_model.checkpoint import load_checkpoint_state, read_checkpoint_meta
    from msa_model.config import from_dict

    meta = read_checkpoint_meta(checkpoint_dir)
    model_cfg = from_dict(ModelConfig, meta["experiment"]["model"], "model")
    model_cfg.image.pretrained, model_cfg.image.weights_file = False, None
    model_cfg.text.name, model_cfg.text.config = None, dict(meta["text_encoder_config"])
    state, _, tokenizer = load_checkpoint_state(checkpoint_dir, map_location=device)
    model = MSAModel(model_cfg, tokenizer)
    model.load_state_dict(state)
    return model.to(device).eval(), meta


def evaluate_split(
    model: MSAModel,
    data: DataConfig,
    split: str,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Retrieval metrics of ``model`` on one split of ``data`` (val carved as in training)."""
    records = load_splits(data)[split]
    if not records:
        raise ValueError(f"split {split!r} of {data.json} is empty")
    view = eval_set(records, data, ImageStore.from_config(data))
    return evaluate(
        model, view.loader(batch_size), view.captions, view.caption_image, torch.device(device)
    )
