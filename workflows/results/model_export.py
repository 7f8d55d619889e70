"""``msa export --model``: a run's weights alone, as a folder ``msa evaluate``/``msa search`` read.

The folder (:func:`msa_model.checkpoint.save_model_package`) holds ``model.safetensors``, the
tokenizer, ``meta.json`` (the text encoder's config, the run's metrics and where it came from)
and ``experiment.yaml`` (the run's experiment); no optimizer state. It is self-contained: the
frozen towers a checkpoint only references (by source and digest) are loaded from their source,
checked, and written with the rest.
"""

from __future__ import annotations

from pathlib import Path

from msa_model.config import ConfigError
from workflows.results.locate import resolve_checkpoint
from workflows.results.paths import relative_to_results

__all__ = ["export_model"]


def export_model(
    results_dir: str | Path, out: str | Path | None = None, trial: str | None = None
) -> Path:
    """Write the weights-only model of ``results_dir``'s winner (or of search ``trial``).

    The winner is the checkpoint ``msa evaluate RESULTS`` reads: the final stage's winner (its
    first seed's best validation epoch), else the best run. Default ``out``:
    ``<results_dir>/model``; an existing folder is replaced only when it holds an exported model.
    """
    from msa_model.checkpoint import read_checkpoint_meta, restore_model, save_model_package

    results_dir = Path(results_dir)
    target = Path(out) if out is not None else results_dir / "model"
    if target.is_file() or (
        target.is_dir() and any(target.iterdir()) and not _is_model(target, read_checkpoint_meta)
    ):
        raise ConfigError(
            f"--out {target}: exists and is not an exported model; give a new or empty folder"
        )
    checkpoint = resolve_checkpoint(results_dir, trial)
    model, meta = restore_model(checkpoint)
    source = {
        "results": str(results_dir),
        "checkpoint": relative_to_results(checkpoint, results_dir),
    }
    if trial is not None:
        source["trial"] = trial
    return save_model_package(target, model, model.tokenizer, {**meta, "source": source})


def _is_model(folder: Path, read_meta) -> bool:
    try:
        return read_meta(folder).get("kind") == "model"
    except (OSError, ValueError):
        return False
