"""``msa export``: the best trial(s) of a search as runnable experiment YAML files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from msa_model.config import ConfigError, load_yaml
from workflows.experiment import dump_experiment, parse_experiment
from workflows.experiment.dotted import with_values
from workflows.results.trials import read_table

__all__ = ["trial_config", "export_best"]


def trial_config(experiment: dict[str, Any], params: dict[str, Any], name: str) -> dict[str, Any]:
    """The experiment with a trial's searched values filled in and ``search`` removed."""
    base = {k: v for k, v in experiment.items() if k != "search"}
    raw = with_values(base, params)
    raw["name"] = name
    parse_experiment(raw, source=f"exported config {name}")  # always a loadable file
    return raw


def export_best(results_dir: Path, top: int = 1, out: Path | None = None) -> list[Path]:
    """Write the ``top`` best trials' configs; returns the files written.

    ``top=1`` writes ``best_config.yaml`` (or ``out``); more write ``top_configs/rank<k>.yaml``
    (or into the folder ``out``). Ranking is by the search metric on the validation split.
    """
    results_dir = Path(results_dir)
    table_path = results_dir / "trials.csv"
    if not table_path.is_file():
        raise FileNotFoundError(f"{results_dir}: no trials.csv (is this a `msa tune` results dir?)")
    if top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    experiment = load_yaml(results_dir / "experiment.yaml")
    metric = (experiment.get("search") or {}).get("metric", "val_mr")
    table = read_table(table_path)
    ranked = table[table.get(f"best_{metric}", pd.Series(dtype=float)).notna()].head(top)
    if ranked.empty:
        raise ValueError(f"{table_path}: no trial reported {metric}; nothing to export")
    written = []
    for rank, row in enumerate(ranked.itertuples(index=False), start=1):
        params = json.loads(row.params)
        if top == 1:
            path = out or results_dir / "best_config.yaml"
            name = f"{experiment['name']}_best"
        else:
            path = (out or results_dir / "top_configs") / f"rank{rank}.yaml"
            name = f"{experiment['name']}_rank{rank}"
        raw = trial_config(experiment, params, name)
        header = (
            f"# exported from {results_dir} trial {row.trial_id}: "
            f"best {metric} {getattr(row, f'best_{metric}'):.4f} at epoch {int(row.best_epoch)}\n"
        )
        dump_experiment(raw, path)
        path.write_text(header + path.read_text())
        written.append(path)
    return written
