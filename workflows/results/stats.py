"""Summaries over seeds: mean, std, 95% t-interval, paired differences, and chance level."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from scipy import stats

from msa_model.constants import RECALL_KEYS

__all__ = ["summarize", "paired_difference", "verdict", "chance_metrics"]

KS = (1, 5, 10)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """``n``, ``mean``, sample ``std`` and the 95% confidence interval of the mean.

    The interval is ``mean -/+ t(0.975, n - 1) * std / sqrt(n)``; ``std`` and ``ci95`` are None
    for a single value.
    """
    n = len(values)
    if n == 0:
        raise ValueError("summarize: no values")
    mean = math.fsum(values) / n
    if n == 1:
        return {"n": 1, "mean": mean, "std": None, "ci95": None}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci95": [mean - half, mean + half]}


def paired_difference(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """:func:`summarize` of ``a[i] - b[i]`` (pairs sharing a seed)."""
    if len(a) != len(b):
        raise ValueError(f"paired_difference: {len(a)} values against {len(b)}")
    return summarize([x - y for x, y in zip(a, b, strict=True)])


def verdict(difference: dict[str, Any], mode: str = "max") -> str:
    """The plain sentence for a paired difference (winner - baseline) of a ``mode`` metric."""
    ci = difference["ci95"]
    if ci is None:
        return "not distinguishable (one seed: no interval)"
    sign = 1 if mode == "max" else -1
    low, high = sorted((sign * ci[0], sign * ci[1]))
    if low > 0:
        return "better than the baseline (CI excludes 0)"
    if high < 0:
        return "worse than the baseline (CI excludes 0)"
    return "not distinguishable (CI includes 0)"


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
