"""A model folder's meta and weights checked before use, so a broken one is a one-line error.

``msa evaluate`` and ``msa search`` read what a user hands in: a ``meta.json`` without its
``experiment`` (or with a section that is not a mapping) or weights that do not fit the model
the meta describes (another ``embed_dim``) are :class:`CheckpointError`, naming the folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from msa_model.checkpoint import CheckpointError, read_checkpoint_meta

__all__ = ["read_model_meta", "weights_must_fit"]

SECTIONS = ("data", "model")


def read_model_meta(folder: Path) -> dict[str, Any]:
    """The meta of a model or checkpoint folder, with the sections a model is rebuilt from.

    Raises:
        FileNotFoundError: No ``meta.json``.
        CheckpointError: The meta lacks ``experiment`` or its ``data``/``model`` mappings.
    """
    meta = read_checkpoint_meta(folder)
    experiment = meta.get("experiment")
    if not isinstance(experiment, dict):
        raise CheckpointError(
            f"{Path(folder) / 'meta.json'}: no `experiment` mapping (the config the model was "
            "trained with); not a model msa wrote, or a damaged one"
        )
    for section in SECTIONS:
        if not isinstance(experiment.get(section), dict):
            raise CheckpointError(
                f"{Path(folder) / 'meta.json'}: experiment.{section} is missing or not a mapping"
            )
    return meta


@contextmanager
def weights_must_fit(folder: Path) -> Iterator[None]:
    """Turn torch's "Error(s) in loading state_dict" (weights of another shape) into one line."""
    try:
        yield
    except RuntimeError as exc:
        text = str(exc)
        if "Error(s) in loading state_dict" not in text:
            raise
        detail = next((ln.strip() for ln in text.splitlines()[1:] if ln.strip()), "")
        raise CheckpointError(
            f"{folder}: the weights do not fit the model its meta.json describes ({detail[:200]})"
        ) from None
