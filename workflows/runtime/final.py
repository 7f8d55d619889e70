"""The final stage: the best trial's best checkpoint, evaluated once on the test split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import ray.train

from msa_model.config import DataConfig
from workflows.experiment import Experiment, config_point
from workflows.results.export import trial_experiment
from workflows.results.report import write_report
from workflows.results.trials import best_row, read_table
from workflows.runtime.launch import make_trainer

__all__ = ["evaluate_stored", "run_final"]


def evaluate_stored(checkpoint: str, data: DataConfig, splits: list[str]) -> dict[str, dict]:
    """:func:`msa_model.evaluation.evaluate_checkpoint` of a local path or a storage URI."""
    from msa_model.evaluation import evaluate_checkpoint

    with ray.train.Checkpoint(checkpoint).as_directory() as local:
        return evaluate_checkpoint(local, splits, data)


def run_final(out: Path, exp: Experiment, storage: str) -> dict[str, Any]:
    """Evaluate the best trial on val and test (once), write ``final/metrics.json`` and the report.

    With ``final.retrain`` the best config is first retrained from scratch on train+val for the
    full epochs; its last checkpoint is then tested (val metrics stay the trial's own).
    """
    assert exp.search is not None
    metric = exp.search.metric
    table = read_table(out / "trials.csv")
    history = read_table(out / "history.csv")
    best = best_row(table, metric)
    params = json.loads(best["params"])
    best_exp = trial_experiment(exp, params, f"{exp.name}_best")
    checkpoint = str(best["best_checkpoint"])
    splits = ["val", "test"]
    if exp.final.retrain:
        print(f"[msa] final stage: retraining trial {best['trial_id']}'s config on train+val")
        result = make_trainer(
            best_exp, run_name="final-retrain", storage_path=f"{storage}/final", train_on_val=True
        ).fit()
        checkpoint = result.checkpoint.path
        splits = ["test"]
    print(f"[msa] final stage: evaluating {checkpoint} on {' and '.join(splits)} (test read once)")
    # In this process, not as a Ray task: it needs no cluster resources, so it cannot wait behind
    # workers that a stopped trial has not released yet.
    scores = evaluate_stored(checkpoint, best_exp.with_absolute_paths().data, splits)
    if exp.final.retrain:
        trial_hist = history[
            (history["trial_id"] == best["trial_id"]) & (history["epoch"] == best["best_epoch"])
        ]
        scores["val"] = {
            k.removeprefix("val_"): float(v)
            for k, v in trial_hist.iloc[0].items()
            if str(k).startswith("val_")
        }
    final = {
        "trial_id": best["trial_id"],
        "metric": metric,
        "epoch": int(best["best_epoch"]),
        "checkpoint": checkpoint,
        "retrained": exp.final.retrain,
        "params": params,
        "config": best_exp.to_dict(with_search=False),
        **scores,
    }
    final_dir = out / "final"
    final_dir.mkdir(parents=True, exist_ok=True)
    (final_dir / "metrics.json").write_text(json.dumps(final, indent=2, default=str))
    paper_values = config_point(exp.space, exp.to_dict())
    paper_trial = _find_trial(table, paper_values)
    write_report(
        final_dir,
        name=exp.name,
        metric=metric,
        table=table,
        history=history,
        final=final,
        paper_trial=paper_trial,
        paper_values=paper_values,
        searched=[d.key for d in exp.space],
        log_keys={d.key for d in exp.space if "log" in d.kind},
    )
    return final


def _find_trial(table: pd.DataFrame, values: dict[str, Any]) -> str | None:
    """The trial whose searched params equal ``values`` (the experiment's own settings)."""
    for row in table.itertuples(index=False):
        if json.loads(row.params) == values:
            return row.trial_id
    return None
