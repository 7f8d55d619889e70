"""Search with a trained model: a sentence against a folder of images, an image against captions.

Images go through the evaluation transform and both sides through the global embeddings, so a
score is the cosine similarity :mod:`msa_model.evaluation` ranks by. A folder is embedded once:
:func:`load_gallery` keeps its embeddings in a cache file keyed by the folder's listing (each
file's name, size and modification time), the model and the image settings, and embeds the
folder again when any of them changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from msa_model.config import DataConfig, to_dict
from msa_model.data import EvalImages, ImageRecord, ImageStore, build_transform, collate
from msa_model.engine import encode_captions, encode_images

__all__ = [
    "IMAGE_SUFFIXES",
    "Gallery",
    "Hit",
    "list_images",
    "gallery_key",
    "embed_images",
    "load_gallery",
    "embed_texts",
    "top_k",
    "rank",
    "search_images",
    "search_captions",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


@dataclass
class Gallery:
    """A folder's images and their embeddings."""

    folder: Path
    names: list[str]  # image paths relative to ``folder`` (POSIX), sorted
    embeds: torch.Tensor  # (N, d), L2-normalised, in the order of ``names``
    cached: bool = False  # read from the cache rather than embedded now


@dataclass(frozen=True)
class Hit:
    """One result: the gallery index, the image name or caption, the cosine similarity."""

    index: int
    item: str
    score: float


def list_images(folder: str | Path) -> list[str]:
    """The image files under ``folder`` (any depth), as sorted relative POSIX paths."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not a folder of images")
    names = sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )
    if not names:
        raise FileNotFoundError(f"{folder}: holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return names


def gallery_key(folder: str | Path, names: list[str], data: DataConfig, model_tag: str) -> str:
    """What the folder's embeddings depend on: every file's name, size and mtime, the image
    settings and ``model_tag`` (something that changes with the weights), hashed."""
    folder = Path(folder)
    files = [(n, (s := os.stat(folder / n)).st_size, s.st_mtime_ns) for n in names]
    settings = {
        k: v for k, v in to_dict(data).items() if k in ("image_size", "mean", "std", "resize")
    }
    text = json.dumps({"files": files, "settings": settings, "model": model_tag}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _normalised(embeds: torch.Tensor) -> torch.Tensor:
    return F.normalize(embeds.float(), dim=-1)


def embed_images(
    model: nn.Module,
    data: DataConfig,
    folder: str | Path,
    names: list[str],
    device: str | torch.device,
    batch_size: int = 256,
) -> torch.Tensor:
    """L2-normalised global embeddings (N, d) of ``folder``'s ``names``, in order."""
    device = torch.device(device)
    store = ImageStore(folder, data.image_size, cache=False, resize=data.resize)
    records = [ImageRecord(filename=name, split="test", captions=()) for name in names]
    view = EvalImages(records, store, build_transform(data, train=False))
    loader = DataLoader(view, batch_size=batch_size, shuffle=False, collate_fn=collate)
    ids, embeds = encode_images(model, loader, device)
    return _normalised(embeds[torch.argsort(ids)])


def load_gallery(
    model: nn.Module,
    data: DataConfig,
    folder: str | Path,
    cache: str | Path | None,
    model_tag: str,
    device: str | torch.device,
    batch_size: int = 256,
) -> Gallery:
    """``folder``'s images embedded, read from ``cache`` when it matches the folder as it is.

    Args:
        model: The trained model.
        data: The model's data section (image size, normalisation, resize filter).
        folder: The image folder (searched at any depth).
        cache: The cache file (written, replacing a stale one), or None for no cache.
        model_tag: Changes whenever the model's weights do (see :func:`gallery_key`).
        device: Where to embed.
        batch_size: Images per forward pass.
    """
    folder = Path(folder)
    names = list_images(folder)
    key = gallery_key(folder, names, data, model_tag)
    if cache is not None and Path(cache).is_file():
        try:
            stored = torch.load(cache, map_location="cpu", weights_only=True)
        except Exception:  # an unreadable cache is rebuilt, never trusted
            stored = {}
        if stored.get("key") == key and stored.get("names") == names:
            return Gallery(folder, names, stored["embeds"], cached=True)
    embeds = embed_images(model, data, folder, names, device, batch_size)
    if cache is not None:
        cache = Path(cache)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.name + ".tmp")
        torch.save({"key": key, "names": names, "embeds": embeds}, tmp)
        tmp.replace(cache)
    return Gallery(folder, names, embeds)


def embed_texts(
    model: nn.Module, texts: list[str], device: str | torch.device, batch_size: int = 256
) -> torch.Tensor:
    """L2-normalised global embeddings (M, d) of ``texts``, in order."""
    return _normalised(encode_captions(model, texts, torch.device(device), batch_size))


def top_k(query: torch.Tensor, gallery: torch.Tensor, k: int) -> list[tuple[int, float]]:
    """The ``k`` best (index, cosine) of ``gallery`` (N, d) for one normalised ``query`` (d,).

    Ordered by score, then by index (equal scores keep the gallery order).
    """
    scores = gallery @ query
    order = torch.sort(-scores, stable=True).indices[:k]
    return [(int(i), float(scores[i])) for i in order]


def rank(
    queries: torch.Tensor, gallery: torch.Tensor, k: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each query's best ``k`` (default: all) gallery items by cosine similarity.

    Args:
        queries: (Q, d) L2-normalised embeddings (e.g. images).
        gallery: (N, d) L2-normalised embeddings (e.g. captions).
        k: How many per query.

    Returns:
        ``(scores, indices)``, both (Q, k), best first; equal scores keep the gallery order.
    """
    scores = queries.float() @ gallery.float().T
    order = torch.sort(-scores, dim=1, stable=True).indices[:, :k]
    return scores.gather(1, order), order


def search_images(
    model: nn.Module, gallery: Gallery, query: str, k: int, device: str | torch.device
) -> list[Hit]:
    """The ``k`` images of ``gallery`` that best match the sentence ``query``."""
    text = embed_texts(model, [query], device)[0]
    return [Hit(i, gallery.names[i], s) for i, s in top_k(text, gallery.embeds, k)]


def search_captions(
    model: nn.Module,
    data: DataConfig,
    image: str | Path,
    captions: list[str],
    k: int,
    device: str | torch.device,
    batch_size: int = 256,
) -> list[Hit]:
    """The ``k`` of ``captions`` that best match the image file ``image``."""
    image = Path(image)
    if not image.is_file():
        raise FileNotFoundError(f"{image}: no such image file")
    if not captions:
        raise ValueError("no captions to rank")
    embed = embed_images(model, data, image.parent, [image.name], device)[0]
    texts = embed_texts(model, captions, device, batch_size)
    return [Hit(i, captions[i], s) for i, s in top_k(embed, texts, k)]
