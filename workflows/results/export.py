"""``msa export``: the best trial(s) of a search as runnable experiment YAML files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from msa_model.config import ConfigError
from msa_model.constants import DEFAULT_METRIC
from workflows.experiment import (
    Experiment,
    dump_experiment,
    load_experiment,
    parse_experiment,
    with_values,
)
from workflows.results.trials import read_table

__all__ = ["trial_experiment", "export_best"]


def trial_experiment(exp: Experiment, params: dict[str, Any], name: str) -> Experiment:
    """``exp`` with a trial's searched values (dotted keys) filled in, named ``name``, no search."""
    raw = with_values(exp.to_dict(with_search=False), params)
    raw["name"] = name
    return parse_experiment(raw, source=f"trial config {name}")


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
    exp = load_experiment(results_dir / "experiment.yaml")
    metric = exp.search.metric if exp.search else DEFAULT_METRIC
    table = read_table(table_path)
    ranked = table[table.get(f"best_{metric}", pd.Series(dtype=float)).notna()].head(top)
    if ranked.empty:
        raise ValueError(f"{table_path}: no trial reported {metric}; nothing to export")
    written = []
    for rank, row in enumerate(ranked.itertuples(index=False), start=1):
        params = json.loads(row.params)
        if top == 1:
            path = out or results_dir / "best_config.yaml"
            name = f"{exp.name}_best"
        else:
            path = (out or results_dir / "top_configs") / f"rank{rank}.yaml"
            name = f"{exp.name}_rank{rank}"
        header = (
            f"# exported from {results_dir} trial {row.trial_id}: "
            f"best {metric} {getattr(row, f'best_{metric}'):.4f} at epoch {int(row.best_epoch)}\n"
        )
        dump_experiment(trial_experiment(exp, params, name), path, with_search=False)
        path.write_text(header + path.read_text())
        written.append(path)
    return written
