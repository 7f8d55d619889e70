"""``msa export --model``: a run's weights alone, as a folder ``msa evaluate``/``msa search`` read.

The folder (:func:`msa_model.checkpoint.save_model_package`) holds ``model.safetensors``, the
tokenizer, ``meta.json`` (the text encoder's config, the run's metrics and where it came from)
and ``experiment.yaml`` (the run's experiment); no optimizer state. It is self-contained: the
frozen towers a checkpoint only references (by source and digest) are loaded from their source,
checked, and written with the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msa_model.config import ConfigError
from workflows.results.locate import resolve_checkpoint
from workflows.results.paths import relative_to_results
from workflows.results.schema import read_final

__all__ = ["export_model", "final_source"]


def final_source(results_dir: Path) -> dict[str, Any] | None:
    """Which final-stage run ``results_dir``'s checkpoint is (:attr:`FinalSummary.best_run`):
    candidate, seed, and why that seed; None without a final stage."""
    path = results_dir / "final" / "metrics.json"
    if not path.is_file():
        return None
    final = read_final(path)
    run = final.best_run
    if run is None:
        return None
    seeds = [r.seed for r in final.winner.runs]
    if run.val:
        why = f"the best validation {final.key} ({run.val[final.key]:.2f}) of seeds {seeds}"
    else:
        why = f"the first of seeds {seeds}: trained on train+val, no validation to pick by"
    return {"candidate": final.winner.label, "seed": run.seed, "picked": why}


def export_model(
    results_dir: str | Path, out: str | Path | None = None, trial: str | None = None
) -> tuple[Path, dict[str, Any]]:
    """Write the weights-only model of ``results_dir``'s winner (or of search ``trial``);
    returns the folder and ``meta.json``'s ``source`` (what was exported).

    The winner is the checkpoint ``msa evaluate RESULTS`` reads: the final stage's winner's run
    with the best validation score (its first seed when trained on train+val), else the best
    search trial. Default ``out``: ``<results_dir>/model``; an existing folder is replaced only
    when it holds an exported model.
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
    source: dict[str, Any] = {
        "results": str(results_dir),
        "checkpoint": relative_to_results(checkpoint, results_dir),
    }
    if trial is not None:
        source["trial"] = trial
    elif (picked := final_source(results_dir)) is not None:
        source.update(picked)
    path = save_model_package(target, model, model.tokenizer, {**meta, "source": source})
    return path, source


def _is_model(folder: Path, read_meta) -> bool:
    try:
        return read_meta(folder).get("kind") == "model"
    except (OSError, ValueError):
        return False
