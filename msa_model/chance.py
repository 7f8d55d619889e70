"""The chance level of the retrieval metrics: the exact expected recalls of a random ranking."""

from __future__ import annotations

import math
from collections.abc import Sequence

from msa_model.constants import RECALL_KEYS

__all__ = ["chance_metrics"]

KS = (1, 5, 10)


def _miss_all(gallery: int, relevant: int, k: int) -> float:
    """Probability that none of ``relevant`` items is among the first ``k`` of a random order."""
    p = 1.0
    for j in range(min(k, gallery)):
        if gallery - relevant - j <= 0:
            return 0.0
        p *= (gallery - relevant - j) / (gallery - j)
    return p


def chance_metrics(captions_per_image: Sequence[int]) -> dict[str, float]:
    """Expected recalls and mR (percent) of a uniformly random ranking, exactly.

    An image query hits at K when any of its captions is among the first K of all captions
    (hypergeometric); a caption query when its one image is among the first K images.
    Images without captions are no queries but stay in the gallery.
    """
    images = len(captions_per_image)
    captions = sum(captions_per_image)
    queries = [c for c in captions_per_image if c > 0]
    if not queries:
        raise ValueError("chance_metrics: no captions")
    out = {}
    for k in KS:
        out[f"i2t_r{k}"] = (
            100.0 * math.fsum(1 - _miss_all(captions, c, k) for c in queries) / len(queries)
        )
        out[f"t2i_r{k}"] = 100.0 * min(k, images) / images
    out = {key: out[key] for key in RECALL_KEYS}
    out["mr"] = math.fsum(out.values()) / len(RECALL_KEYS)
    return out
