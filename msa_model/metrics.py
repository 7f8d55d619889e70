"""Image-text retrieval recalls (R@1/5/10 both ways and their mean mR), computed in chunks.

Similarities are cosine (both sides L2-normalised, float32). Memory is O(chunk_size * max(N, M))
on top of the embeddings: a gallery whose full N x M matrix fits in that bound is scored with one
product for both directions; a larger one in two passes, A taking ``chunk_size`` images at a
time against all captions (text retrieval), B ``chunk_size`` captions at a time against all
images (image retrieval).

Ties are counted pessimistically: a non-matching item whose similarity equals the best
matching one is ranked above it. The rank of a query is the number of non-matching items with
similarity >= the best matching similarity; a hit at K means rank < K.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from msa_model.constants import RECALL_KEYS

__all__ = ["retrieval_metrics", "RECALL_KEYS"]

_KS = (1, 5, 10)


def _captions_of_images(caption_image: Tensor, n_images: int) -> Tensor:
    """(N, K) caption indices of every image, right-padded with -1 (K = most captions)."""
    counts = torch.bincount(caption_image, minlength=n_images)
    order = torch.argsort(caption_image, stable=True)
    width = int(counts.max()) if counts.numel() else 0
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(caption_image.numel()) - starts[caption_image[order]]
    table = torch.full((n_images, max(width, 1)), -1, dtype=torch.long)
    table[caption_image[order], slot] = order
    return table


def _recalls(ranks: Tensor) -> list[float]:
    n = max(ranks.numel(), 1)
    return [100.0 * (ranks < k).sum().item() / n for k in _KS]


def _count_ge(sims: Tensor, threshold: Tensor, block: int = 1 << 23) -> Tensor:
    """Per row, how many entries are >= threshold; overwrites ``sims`` with 0/1 (no new buffer).

    Float32 sums of 0/1 are exact below 2**24, so columns are summed in blocks of ``block``.
    """
    sims.ge_(threshold)
    counts = sims[:, :block].sum(dim=1).long()
    for start in range(block, sims.shape[1], block):
        counts += sims[:, start : start + block].sum(dim=1).long()
    return counts


def _image_query_ranks(
    images: Tensor, texts: Tensor, captions_of: Tensor, chunk_size: int
) -> Tensor:
    """Pass A: rank of each captioned image's best caption among all captions."""
    n_captions = texts.shape[0]
    buffer = torch.empty(min(chunk_size, images.shape[0]) * n_captions, device=images.device)
    ranks = [torch.empty(0, dtype=torch.long, device=images.device)]
    for start in range(0, images.shape[0], chunk_size):
        table = captions_of[start : start + chunk_size]
        keep = table[:, 0] >= 0  # images without captions are no queries
        table = table[keep]
        out = buffer[: table.shape[0] * n_captions].view(table.shape[0], n_captions)
        sims = torch.matmul(images[start : start + chunk_size][keep], texts.T, out=out)
        positives = sims.gather(1, table.clamp(min=0)).masked_fill(table < 0, float("-inf"))
        best = positives.amax(dim=1, keepdim=True)
        ranks.append(_count_ge(sims, best) - (positives >= best).sum(dim=1))
    return torch.cat(ranks)


def _caption_query_ranks(
    texts: Tensor, images: Tensor, caption_image: Tensor, chunk_size: int
) -> Tensor:
    """Pass B: rank of each caption's image among all images."""
    n_images = images.shape[0]
    buffer = torch.empty(min(chunk_size, texts.shape[0]) * n_images, device=images.device)
    ranks = []
    for start in range(0, texts.shape[0], chunk_size):
        query = texts[start : start + chunk_size]
        out = buffer[: query.shape[0] * n_images].view(query.shape[0], n_images)
        sims = torch.matmul(query, images.T, out=out)
        positive = sims.gather(1, caption_image[start : start + chunk_size, None])
        ranks.append(_count_ge(sims, positive) - 1)
    return torch.cat(ranks)


def _ranks_one_product(
    images: Tensor, texts: Tensor, caption_image: Tensor, captions_of: Tensor
) -> tuple[Tensor, Tensor]:
    """Both passes from one N x M product, when it is no larger than one chunk of a pass.

    Boolean counts are summed as int32 (exact; summing bools to the default int64 is ~6x slower
    on CPU, as slow as the product itself).
    """
    sims = images @ texts.T
    positives = sims.gather(1, captions_of.clamp(min=0)).masked_fill(captions_of < 0, float("-inf"))
    best = positives.amax(dim=1, keepdim=True)
    keep = captions_of[:, 0] >= 0
    above = (sims >= best).sum(dim=1, dtype=torch.int32)
    i2t = (above.long() - (positives >= best).sum(dim=1))[keep]
    own = sims[caption_image, torch.arange(texts.shape[0], device=sims.device)]
    t2i = (sims >= own).sum(dim=0, dtype=torch.int32).long() - 1
    return i2t, t2i


@torch.no_grad()
def retrieval_metrics(
    image_embeds: Tensor, text_embeds: Tensor, caption_image: Tensor, chunk_size: int = 1024
) -> dict[str, float]:
    """Recall@{1,5,10} for text retrieval (image query) and image retrieval (caption query).

    An image query hits at K if any of its captions ranks in the top K; images without any
    caption are not queries (and do not count in the i2t denominators) but remain in the
    gallery of every caption query.

    Args:
        image_embeds: (N, d) image embeddings.
        text_embeds: (M, d) caption embeddings.
        caption_image: (M,) index into ``image_embeds`` of each caption's image; an image may
            have any number of captions.
        chunk_size: Rows of the similarity matrix computed at once (bounds the memory).

    Returns:
        Percentages ``i2t_r1, i2t_r5, i2t_r10, t2i_r1, t2i_r5, t2i_r10`` and ``mr``, their mean.
    """
    n_images, n_captions = image_embeds.shape[0], text_embeds.shape[0]
    if caption_image.shape != (n_captions,):
        raise ValueError(
            f"caption_image has shape {tuple(caption_image.shape)}, expected ({n_captions},)"
        )
    if n_captions == 0:
        raise ValueError("no captions to evaluate")
    caption_image = caption_image.long().cpu()
    if int(caption_image.min()) < 0 or int(caption_image.max()) >= n_images:
        raise ValueError(f"caption_image must index {n_images} images")
    images = F.normalize(image_embeds.float(), dim=-1)
    texts = F.normalize(text_embeds.float(), dim=-1)
    device = images.device
    caption_image = caption_image.to(device)
    captions_of = _captions_of_images(caption_image.cpu(), n_images).to(device)

    if n_images * n_captions <= chunk_size * max(n_images, n_captions):
        i2t, t2i = _ranks_one_product(images, texts, caption_image, captions_of)
    else:
        i2t = _image_query_ranks(images, texts, captions_of, chunk_size)
        t2i = _caption_query_ranks(texts, images, caption_image, chunk_size)
    values = _recalls(i2t.cpu()) + _recalls(t2i.cpu())
    result = dict(zip(RECALL_KEYS, values, strict=True))
    result["mr"] = sum(values) / len(values)
    return result
