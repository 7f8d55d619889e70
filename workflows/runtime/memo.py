"""The frozen towers' memo, built once on every node before a search's trials start.

Every trial and seed of a search reads the memo files of the frozen tower bottoms from
``model.frozen_cache_dir`` on its node (:mod:`msa_model.warm`). One Ray task per alive node
fills them first, for each frozen bottom the search can choose (``trainable_stages`` /
``trainable_layers`` searched as a ``choice``), with its progress in the driver's console.
"""

from __future__ import annotations

import os
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from msa_model.spec import RunSpec
from workflows.experiment import Experiment

__all__ = ["memo_specs", "warm_memos"]

BOTTOM_KEYS = ("model.image.trainable_stages", "model.text.trainable_layers")


def memo_specs(exp: Experiment) -> list[tuple[RunSpec, tuple[str, ...]]]:
    """Each frozen bottom the search can train on top of (with a memo to share): a run spec
    and the towers whose memo it adds."""
    model = exp.model
    if model.frozen_cache_dir is None or not (model.image.cache_frozen or model.text.cache_frozen):
        return []
    variants = [{}] + [  # each tower's memo depends on its own bottom only: one key at a time
        {d.key: value}
        for d in exp.space
        if d.key in BOTTOM_KEYS and d.kind == "choice"
        for value in d.args
    ]
    specs, seen = [], {"image": set(), "text": set()}
    for values in variants:
        spec = exp.with_params(values, source=exp.name).spec()
        new = tuple(
            tower
            for tower, bottom in (
                ("image", spec.model.image.trainable),
                ("text", spec.model.text.trainable),
            )
            if bottom not in seen[tower]
        )
        for tower in new:
            seen[tower].add(getattr(spec.model, tower).trainable)
        if new:
            specs.append((spec, new))
    return specs


def _warm_on_node(specs: list[tuple[RunSpec, tuple[str, ...]]], node: str) -> list[dict[str, int]]:
    import torch

    from msa_model.warm import warm_memo

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))

    def log(line: str) -> None:
        print(f"[memo {node[:8]}] {line}", flush=True)

    return [warm_memo(spec, log, towers=towers) for spec, towers in specs]


def warm_memos(exp: Experiment) -> list[dict[str, Any]]:
    """Fill the memo files on every alive node; what each node's memo holds."""
    specs = memo_specs(exp)
    if not specs:
        return []
    task = ray.remote(num_cpus=1)(_warm_on_node)
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    refs = [
        task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
            specs, node
        )
        for node in nodes
    ]
    counts = ray.get(refs)
    return [{"node": node, "memos": c} for node, c in zip(nodes, counts, strict=True)]
