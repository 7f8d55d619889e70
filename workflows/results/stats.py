"""Summaries over seeds: mean, std, 95% t-interval, paired differences, and chance level
(:func:`msa_model.chance.chance_metrics`, re-exported)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from scipy import stats

from msa_model.chance import chance_metrics

__all__ = ["summarize", "paired_difference", "verdict", "chance_metrics"]


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
