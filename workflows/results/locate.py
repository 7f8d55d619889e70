"""The checkpoint behind a results folder, one of its trials, a checkpoint or an exported model."""

from __future__ import annotations

import json
from pathlib import Path

from msa_model.config import ConfigError
from msa_model.constants import DEFAULT_METRIC
from workflows.results.paths import resolve_in_results
from workflows.results.schema import TrialRow, read_final
from workflows.results.trials import read_table, trial_rows

__all__ = ["find_trial", "trial_checkpoint", "resolve_checkpoint"]


def find_trial(results_dir: str | Path, trial_id: str, metric: str = DEFAULT_METRIC) -> TrialRow:
    """The row of ``trials.csv`` whose id is ``trial_id`` or the only one starting with it
    (``metric``: the search's, for its ``best``).

    Raises:
        FileNotFoundError: ``results_dir`` holds no ``trials.csv``.
        ConfigError: no trial, or several, match.
    """
    path = Path(results_dir) / "trials.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{results_dir}: no trials.csv (is this a `msa tune` results dir?)")
    table = trial_rows(read_table(path), metric)
    rows = [r for r in table if r.trial_id == trial_id] or [
        r for r in table if r.trial_id.startswith(trial_id)
    ]
    if len(rows) != 1:
        what = "no trial" if not rows else f"{len(rows)} trials"
        ids = ", ".join(r.trial_id for r in table)
        raise ConfigError(f"--trial {trial_id}: {what} of {path} match (its trials: {ids})")
    return rows[0]


def trial_checkpoint(results_dir: str | Path, trial_id: str) -> str:
    """The path of the best checkpoint the trial kept (its best validation epoch)."""
    row = find_trial(results_dir, trial_id)
    if not row.best_checkpoint:
        raise FileNotFoundError(
            f"trial {row.trial_id} of {results_dir} kept no checkpoint (status {row.status})"
        )
    return resolve_in_results(row.best_checkpoint, results_dir)


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
    final = target / "final" / "metrics.json"
    trained = target / "metrics.json"  # msa train's summary
    paths = [
        read_final(final).checkpoint if final.is_file() else None,
        json.loads(trained.read_text()).get("checkpoint") if trained.is_file() else None,
    ]
    if path := next((p for p in paths if p), None):
        return Path(resolve_in_results(path, target))
    if (target / "trials.csv").is_file():  # a search without its final stage: the best trial
        rows = trial_rows(read_table(target / "trials.csv"), DEFAULT_METRIC)  # best first
        kept = next((r.best_checkpoint for r in rows if r.best_checkpoint), None)
        if kept:
            return Path(resolve_in_results(kept, target))
    raise FileNotFoundError(
        f"{target}: neither a checkpoint (meta.json) nor a results folder with final/metrics.json, "
        f"metrics.json or trials.csv naming one"
    )
