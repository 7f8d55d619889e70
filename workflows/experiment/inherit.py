"""Experiments that inherit: ``base: other.yaml`` names the file a YAML extends.

The base path is relative to the file that names it; a bare file name not found there is looked
up among the shipped experiments (``base: rsicd_lite.yaml`` in your own folder). The file's
values are deep-merged over its base's: mappings merge key by key, any other value (a list, a
scalar, null) replaces the base's. Bases may have bases; a cycle is refused.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from msa_model.config import ConfigError, load_yaml

__all__ = ["BASE_KEY", "chain_source", "deep_merge", "load_with_bases"]

BASE_KEY = "base"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: mappings merge recursively, other values replace (copied)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _base_path(value: Any, path: Path, shipped: Path | None) -> Path:
    """The file ``path``'s ``base:`` names; errors name ``path`` and where it looked."""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{path}: base: expected a file name (e.g. rsicd_lite.yaml), got {value!r}"
        )
    local = (path.parent / Path(value).expanduser()).resolve()
    if local.is_file():
        return local
    looked = [str(local)]
    if shipped is not None and Path(value).name == value:
        packaged = (shipped / value).resolve()
        if packaged.is_file():
            return packaged
        looked.append(str(packaged))
    raise ConfigError(f"{path}: base: {value!r} not found (looked for {' and '.join(looked)})")


def load_with_bases(
    path: str | Path, shipped: Path | None = None
) -> tuple[dict[str, Any], list[Path]]:
    """The mapping of the YAML ``path`` merged over its bases, without ``base``.

    Args:
        path: The experiment file.
        shipped: The shipped experiments' folder, where a bare base name is also looked up.

    Returns:
        The merged mapping and the chain of files read (``path`` first, then its bases).
    """
    chain = [Path(path)]
    layers = [load_yaml(path)]
    while BASE_KEY in layers[-1]:
        base = _base_path(layers[-1][BASE_KEY], chain[-1], shipped)
        if any(base == seen.resolve() for seen in chain):
            names = " -> ".join(str(p) for p in [*chain, base])
            raise ConfigError(f"{chain[0]}: base: a cycle of bases ({names})")
        chain.append(base)
        layers.append(load_yaml(base))
    merged: dict[str, Any] = {}
    for layer in reversed(layers):
        merged = deep_merge(merged, {k: v for k, v in layer.items() if k != BASE_KEY})
    return merged, chain


def chain_source(chain: list[Path]) -> str:
    """How errors name an experiment read through bases: ``a.yaml (base: b.yaml -> c.yaml)``."""
    if len(chain) == 1:
        return str(chain[0])
    return f"{chain[0]} (base: {' -> '.join(str(p) for p in chain[1:])})"
