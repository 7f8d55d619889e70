"""Dotted keys (``loss.lambda_mscma``) into nested experiment mappings."""

from __future__ import annotations

import copy
from typing import Any

from msa_model.config import ConfigError

__all__ = ["get_dotted", "set_dotted", "with_values"]


def get_dotted(data: dict[str, Any], key: str) -> Any:
    """``data['a']['b']`` for ``key='a.b'``; KeyError naming the key when absent."""
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for ``key='a.b'``, creating mappings on the way."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{key}: {part} is not a section")
    node[parts[-1]] = value


def with_values(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``base`` with each dotted key of ``values`` set."""
    out = copy.deepcopy(base)
    for key, value in values.items():
        set_dotted(out, key, value)
    return out
