"""Retrieval evaluation: one path for the training loop, the final stage and ``msa evaluate``.

Each image and each caption of a split is encoded once (sharded over data-parallel workers,
then gathered), and the six recalls and mR are computed on the global embeddings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset

from msa_model.checkpoint import restore_model
from msa_model.config import DataConfig, from_dict
from msa_model.data import (
    EvalImages,
    ImageRecord,
    ImageStore,
    build_transform,
    collate,
    eval_captions,
)
from msa_model.engine import default_device, encode_captions, encode_images
from msa_model.metrics import retrieval_metrics
from msa_model.pipeline import load_splits

__all__ = [
    "EvalSet",
    "eval_set",
    "split_set",
    "embed_set",
    "evaluate",
    "query_examples",
    "evaluate_split",
    "evaluate_checkpoint",
    "read_test_split",
]

Gather = Callable[[Any], list[Any]]  # every worker's object, in rank order


@dataclass
class EvalSet:
    """A split prepared for retrieval: each image once, each caption once."""

    images: EvalImages
    captions: list[str]
    caption_image: torch.Tensor  # (captions,) the image id of each caption

    def loader(self, batch_size: int, indices: list[int] | None = None) -> DataLoader:
        """Batches of images (optionally only ``indices``, keeping their global image ids)."""
        data = self.images if indices is None else Subset(self.images, indices)
        return DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate)


def eval_set(records: list[ImageRecord], cfg: DataConfig, store: ImageStore) -> EvalSet:
    """The retrieval view of a split."""
    captions, owner = eval_captions(records)
    return EvalSet(EvalImages(records, store, build_transform(cfg, train=False)), captions, owner)


def evaluate(
    model: nn.Module,
    data: EvalSet,
    device: torch.device,
    batch_size: int = 256,
    amp: str = "none",
    rank: int = 0,
    world_size: int = 1,
    gather: Gather | None = None,
) -> dict[str, float]:
    """Retrieval metrics (percent) of ``model`` on ``data``.

    With ``world_size`` > 1 each worker encodes its shard (every ``world_size``-th image and
    caption from ``rank``) and ``gather`` collects the shards; every worker returns the same
    numbers.
    """
    images, texts = embed_set(model, data, device, batch_size, amp, rank, world_size, gather)
    return retrieval_metrics(images, texts, data.caption_image)


def embed_set(
    model: nn.Module,
    data: EvalSet,
    device: torch.device,
    batch_size: int = 256,
    amp: str = "none",
    rank: int = 0,
    world_size: int = 1,
    gather: Gather | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The global embeddings of every image and every caption of ``data`` (see :func:`evaluate`)."""
    image_ids, image_embeds = encode_images(
        model, data.loader(batch_size, list(range(rank, len(data.images), world_size))), device, amp
    )
    caption_idx = list(range(rank, len(data.captions), world_size))
    text_embeds = encode_captions(
        model, [data.captions[i] for i in caption_idx], device, batch_size, amp
    )
    shard = (image_ids, image_embeds, torch.tensor(caption_idx, dtype=torch.long), text_embeds)
    shards = gather(shard) if world_size > 1 and gather is not None else [shard]
    images = torch.empty(len(data.images), image_embeds.shape[1])
    texts = torch.empty(len(data.captions), text_embeds.shape[1])
    for ids, embeds, cidx, tembeds in shards:
        images[ids] = embeds
        texts[cidx] = tembeds
    return images, texts


def _norm(caption: str) -> str:
    """A caption's text for comparison: lower case, single spaces, no trailing full stop."""
    return " ".join(caption.lower().split()).rstrip(" .")


def query_examples(
    images: torch.Tensor, texts: torch.Tensor, data: EvalSet, count: int = 3, k: int = 5
) -> dict[str, list[dict[str, Any]]]:
    """A few queries with their top ``k`` results, each marked right (a pair) or wrong.

    ``count`` images and ``count`` captions spread evenly over the split (the captions of
    other images than the image queries): ``image_to_text`` lists each image's best captions,
    ``text_to_image`` each caption's best images, with the cosine score. Captions are distinct
    by normalised text (:func:`_norm`; RSICD's images share near-identical captions): an image's
    hits are its ``k`` best distinct texts, no two caption queries read the same, and a hit is
    right when one of the image's captions reads as the caption.
    """
    names = [r.filename for r in data.images.records]
    scores = F.normalize(images, dim=-1) @ F.normalize(texts, dim=-1).T  # (images, captions)
    owner = data.caption_image.tolist()
    norms = [_norm(c) for c in data.captions]
    texts_of: dict[int, set[str]] = {}
    for j, i in enumerate(owner):
        texts_of.setdefault(i, set()).add(norms[j])

    def top(row: torch.Tensor) -> list[tuple[int, float]]:
        best = row.topk(min(k, row.numel()))
        return [
            (i, round(v, 4))
            for i, v in zip(best.indices.tolist(), best.values.tolist(), strict=True)
        ]

    def top_texts(row: torch.Tensor) -> list[tuple[int, float]]:
        seen: set[str] = set()
        hits = []
        for j in row.argsort(descending=True).tolist():
            if norms[j] not in seen:
                seen.add(norms[j])
                hits.append((j, round(float(row[j]), 4)))
                if len(hits) == k:
                    break
        return hits

    def spread(n: int) -> list[int]:
        return torch.linspace(0, n - 1, count).round().long().unique().tolist()

    picks = spread(len(names))
    to_text = [
        {"image": names[i], "hits": [{"caption": data.captions[j],
                                      "right": norms[j] in texts_of.get(i, ()), "score": v}
                                     for j, v in top_texts(scores[i])]}
        for i in picks
    ]  # fmt: skip
    others = [j for j in range(len(owner)) if owner[j] not in picks] or list(range(len(owner)))
    first: dict[str, int] = {}
    for j in others:
        first.setdefault(norms[j], j)
    distinct = list(first.values())  # the first caption of each text
    to_image = [
        {"caption": data.captions[j], "image": names[owner[j]],
         "hits": [{"image": names[i], "right": norms[j] in texts_of.get(i, ()), "score": v}
                  for i, v in top(scores[:, j])]}
        for j in (distinct[q] for q in spread(len(distinct)))
    ]  # fmt: skip
    return {"image_to_text": to_text, "text_to_image": to_image}


def split_set(data: DataConfig, split: str) -> EvalSet:
    """The retrieval view of one split of ``data`` (val and test carved as in training)."""
    records = load_splits(data)[split]
    if not records:
        raise ValueError(f"split {split!r} of {data.json} is empty")
    return eval_set(records, data, ImageStore.from_config(data))


def evaluate_split(
    model: nn.Module,
    data: DataConfig,
    split: str,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> dict[str, float]:
    """Retrieval metrics of ``model`` on one split of ``data``."""
    return evaluate(model, split_set(data, split), torch.device(device), batch_size)


def evaluate_checkpoint(
    directory: str | Path,
    splits: list[str],
    data: DataConfig | dict[str, Any] | None = None,
    device: str | torch.device | None = None,
) -> dict[str, dict[str, float]]:
    """Restore a checkpoint folder and evaluate it on each of ``splits``.

    Args:
        directory: A local checkpoint folder.
        splits: Split names (``train``, ``val``, ``test``).
        data: The data to evaluate on (default: the checkpoint's own ``data`` section).
        device: Default: CUDA when available.
    """
    model, data, batch, device = _restored(directory, data, device)
    return {split: evaluate_split(model, data, split, batch, device) for split in splits}


def read_test_split(
    directory: str | Path,
    data: DataConfig | dict[str, Any] | None = None,
    device: str | torch.device | None = None,
    examples: int = 3,
) -> tuple[dict[str, float], dict[str, list[dict[str, Any]]]]:
    """A checkpoint's test metrics and ``examples`` queries each way (:func:`query_examples`),
    from one encoding of the test split (the final stage's single read)."""
    model, data, batch, device = _restored(directory, data, device)
    view = split_set(data, "test")
    images, texts = embed_set(model, view, device, batch)
    metrics = retrieval_metrics(images, texts, view.caption_image)
    return metrics, query_examples(images, texts, view, examples)


def _restored(
    directory: str | Path,
    data: DataConfig | dict[str, Any] | None,
    device: str | torch.device | None,
) -> tuple[nn.Module, DataConfig, int, torch.device]:
    """The checkpoint's model on ``device``, the data to evaluate and the eval batch size."""
    device = torch.device(device) if device is not None else default_device()
    model, meta = restore_model(directory, device)
    experiment = meta["experiment"]
    if not isinstance(data, DataConfig):
        data = from_dict(DataConfig, data if data is not None else experiment["data"], "data")
    batch = int(experiment.get("train", {}).get("eval_batch_size", 256))
    return model, data, batch, device
