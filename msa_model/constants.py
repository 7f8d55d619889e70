"""Names used across the library and the workflows: data path keys, metrics, the search default."""

from __future__ import annotations

import math
from typing import Literal

__all__ = [
    "DATA_PATH_KEYS",
    "RECALL_KEYS",
    "METRIC_KEYS",
    "DEFAULT_METRIC",
    "DEFAULT_MODE",
    "Mode",
    "better",
    "score_key",
]

DATA_PATH_KEYS = ("json", "images")  # the keys of the `data` section that name files
RECALL_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")  # in percent
METRIC_KEYS = (*RECALL_KEYS, "mr")  # what a retrieval evaluation returns; mr is their mean
DEFAULT_METRIC = "val_mr"  # the metric a run's best epoch and a search are chosen by
DEFAULT_MODE = "max"

Mode = Literal["max", "min"]


def score_key(score: float | None, mode: str = DEFAULT_MODE) -> float:
    """A sort key, larger for a better ``score`` under ``mode``; missing or NaN sorts last."""
    if score is None or math.isnan(score):
        return -math.inf
    return score if mode == "max" else -score


def better(a: float | None, b: float | None, mode: str = DEFAULT_MODE) -> bool:
    """Whether score ``a`` beats ``b`` under ``mode``; a missing or NaN score never wins."""
    return score_key(a, mode) > score_key(b, mode)
