"""The checkpoint behind a results folder, one of its trials, a checkpoint or an exported model."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from msa_model.config import ConfigError
from workflows.results.paths import resolve_in_results
from workflows.results.trials import read_table

__all__ = ["find_trial", "trial_checkpoint", "resolve_checkpoint"]


def find_trial(results_dir: str | Path, trial_id: str) -> pd.Series:
    """The row of ``trials.csv`` whose id is ``trial_id`` or the only one starting with it.

    Raises:
        FileNotFoundError: ``results_dir`` holds no ``trials.csv``.
        ConfigError: no trial, or several, match.
    """
    path = Path(results_dir) / "trials.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{results_dir}: no trials.csv (is this a `msa tune` results dir?)")
    table = read_table(path)
    ids = table["trial_id"].astype(str)
    exact = table[ids == trial_id]
    rows = exact if not exact.empty else table[ids.str.startswith(trial_id)]
    if len(rows) != 1:
        what = "no trial" if rows.empty else f"{len(rows)} trials"
        raise ConfigError(
            f"--trial {trial_id}: {what} of {path} match (its trials: {', '.join(ids)})"
        )
    return rows.iloc[0]


def trial_checkpoint(results_dir: str | Path, trial_id: str) -> str:
    """The path of the best checkpoint the trial kept (its best validation epoch)."""
    row = find_trial(results_dir, trial_id)
    path = row.get("best_checkpoint")
    if not isinstance(path, str) or not path:
        raise FileNotFoundError(
            f"trial {row['trial_id']} of {results_dir} kept no checkpoint (status {row['status']})"
        )
    return resolve_in_results(path, results_dir)


def resolve_checkpoint(target: str | Path, trial: str | None = None) -> Path:
    """A checkpoint folder from a model or checkpoint, a ``msa tune`` results dir (the final
    stage's winner, else the best trial's best checkpoint; or that of search ``trial``) or a
    ``msa train`` one.

    Paths in results files may be relative to the results dir.
    """
    target = Path(target)
    if trial is not None:
        return Path(trial_checkpoint(target, trial))
    if (target / "meta.json").is_file():
        return target
    for summary in (target / "final" / "metrics.json", target / "metrics.json"):
        if summary.is_file():
            path = json.loads(summary.read_text()).get("checkpoint")
            if path:
                return Path(resolve_in_results(path, target))
    if (target / "trials.csv").is_file():  # a search without its final stage: the best trial
        table = read_table(target / "trials.csv")  # sorted best first
        kept = table[table.get("best_checkpoint", pd.Series(dtype=str)).notna()]
        if not kept.empty:
            return Path(resolve_in_results(kept.iloc[0]["best_checkpoint"], target))
    raise FileNotFoundError(
        f"{target}: neither a checkpoint (meta.json) nor a results folder with final/metrics.json, "
        f"metrics.json or trials.csv naming one"
    )
