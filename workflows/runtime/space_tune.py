"""``search.space`` as Ray Tune's sampling domains (the Ray side of
:mod:`workflows.experiment.space`)."""

from __future__ import annotations

from typing import Any

from ray import tune

from workflows.experiment.space import Distribution

__all__ = ["to_tune"]


def to_tune(dists: list[Distribution]) -> dict[str, Any]:
    """Flat ``{dotted_key: ray.tune domain}`` for ``Tuner(param_space=...)``."""
    return {
        d.key: tune.choice(list(d.args)) if d.kind == "choice" else getattr(tune, d.kind)(*d.args)
        for d in dists
    }
