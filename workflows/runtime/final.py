"""The final stage: the best configs and the baseline retrained with new seeds, tested once each.

The candidates are the ``final.top_k`` best distinct configs of the search by validation and
the baseline (the experiment's own values). Each is retrained with ``final.seeds`` new seeds
(``train.seed + 1``, ``+ 2``, ...) for the full epochs, all runs as concurrent Tune trials on the
cluster's resources (FIFO, no searcher). A run keeps its best validation epoch's checkpoint and
reads the test split once, in its trial, after training. The winner is the candidate with the
best mean validation score; its difference to the baseline is paired by seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs
import ray
import ray.train
from ray import tune

from msa_model.checkpoint import read_checkpoint_meta
from msa_model.config import DataConfig
from msa_model.constants import METRIC_KEYS
from workflows.errors import SearchInterrupted
from workflows.experiment import Experiment, SearchExperiment
from workflows.results.paths import relative_to_results
from workflows.results.read_ledger import claim_test_read, finish_test_read, recorded_reads
from workflows.results.schema import (
    Candidate,
    FinalRun,
    FinalSummary,
    Gallery,
    read_final,
    write_final,
)
from workflows.results.trials import read_table, trial_rows
from workflows.runtime.fatal import run_once
from workflows.runtime.records import unfinished_trials
from workflows.runtime.reporter import final_console
from workflows.runtime.searcher import baseline_point, study_storage
from workflows.runtime.trainable import (
    concurrent_trials,
    train_run,
    trains_in_trial,
    trial_resources,
    trial_retries,
)
from workflows.signals import tune_interrupts

__all__ = ["pick_candidates", "final_seeds", "make_final_driver", "run_final"]

RUNS_DIR = "final_runs"  # under the storage root: each run's checkpoints
# in a run's folder: its test result, written right after the read, so that a run restarted or
# resumed after the read (a crash, a SIGKILL) reports it instead of reading the test split again
TESTED = "test_result.json"
FINAL_SUMMARY = "metrics.json"  # in final/


def pick_candidates(table: pd.DataFrame, exp: Experiment) -> list[Candidate]:
    """The ``final.top_k`` best distinct configs of ``table`` (sorted best first) + the baseline.

    Labels are ``rank<r>`` (``rank`` among the distinct configs) and ``baseline`` for the
    experiment's own values (``rank`` None when it never reported).
    """
    metric = exp.require_search().search.metric
    baseline = baseline_point(exp) or {}
    ranked: list[Candidate] = []
    for row in trial_rows(table, metric):
        if row.best is None or any(c.params == row.params for c in ranked):
            continue
        rank = len(ranked) + 1
        is_base = row.params == baseline
        ranked.append(Candidate(f"rank{rank}", rank, is_base, row.trial_id, row.best, row.params))
    chosen = ranked[: exp.final.top_k]
    base = next((c for c in ranked if c.baseline), None)
    if base is None:
        base = Candidate("baseline", None, True, None, None, baseline)
    elif base in chosen:
        chosen.remove(base)
    return [*chosen, dataclasses.replace(base, label="baseline")]


def final_seeds(exp: Experiment) -> list[int]:
    """The final stage's seeds: new ones, not the search's ``train.seed``."""
    return [exp.train.seed + i for i in range(1, exp.final.seeds + 1)]


def _run_name(exp: Experiment, params: dict[str, Any], seed: int) -> str:
    """A stable name per (config, seed, train+val): the same model gets the same run.

    The rest of the experiment is the search's own (``--resume`` refuses another config).
    """
    key = {"params": params, "seed": seed, "retrain": exp.final.retrain}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
    return f"{exp.name}-final-{digest[:12]}"


def make_final_driver(
    exp: Experiment,
    storage_path: str,
    metric: str,
    mode: str,
    train_on_val: bool,
):
    """The Tune trainable of one final run of ``exp``: train (:func:`train_run`), then test once.

    ``config["run"]`` holds its ``label``, ``params``, ``seed`` and ``run`` name. The last report
    holds the tested epoch (``final_epoch``), its ``val_*`` metrics (none on train+val), the
    ``test_*`` metrics and the ``checkpoint``.
    """

    name = exp.name

    def driver(config: dict[str, Any]) -> None:
        run = config["run"]
        run_dir = f"{storage_path}/{run['run']}"

        def train_and_test() -> None:
            label = f"{name} {run['label']} seed {run['seed']}"
            trained = exp.with_params(
                {**run["params"], "train.seed": run["seed"]},
                source=f"final run {run['label']} seed {run['seed']}",
            )
            best = train_run(trained, run["run"], storage_path, metric, mode, train_on_val, label)
            if best is None:
                raise RuntimeError(f"final run {run['run']}: no checkpoint was written")
            report = _stored_test(run_dir)
            if report is None:  # the test split is read once, and its result kept at once
                from msa_model.evaluation import read_test_split

                with ray.train.Checkpoint(best).as_directory() as local:  # fetched once
                    tested = read_checkpoint_meta(local)["metrics"]
                    scores, examples = read_test_split(local, trained.data)
                report = {
                    "final_epoch": int(tested["epoch"]),
                    **{k: tested[k] for k in tested if k.startswith("val_")},
                    **{f"test_{k}": v for k, v in scores.items()},
                    "test_examples": json.dumps(examples),
                    "checkpoint": best,
                }
                _store_test(run_dir, report)
            tune.report(report)

        run_once(run_dir, train_and_test)

    driver.__name__ = driver.__qualname__ = f"{name}_final"
    return driver


def _stored_test(run_dir: str) -> dict[str, Any] | None:
    """The test result a run kept (:data:`TESTED`), None when its test split was never read."""
    fs, root = pyarrow.fs.FileSystem.from_uri(run_dir.rstrip("/"))
    try:
        with fs.open_input_stream(f"{root}/{TESTED}") as f:
            return json.loads(f.read().decode())
    except FileNotFoundError:
        return None


def _store_test(run_dir: str, report: dict[str, Any]) -> None:
    fs, root = pyarrow.fs.FileSystem.from_uri(run_dir.rstrip("/"))
    with fs.open_output_stream(f"{root}/{TESTED}") as f:
        f.write(json.dumps(report).encode())


def _gallery(data: DataConfig) -> dict[str, Gallery]:
    """Images, captions and chance-level metrics of the val and test splits."""
    from msa_model.pipeline import load_splits
    from workflows.results.stats import chance_metrics

    splits = load_splits(data)
    out = {}
    for split in ("val", "test"):
        counts = [len(r.captions) for r in splits[split]]
        if sum(counts):
            out[split] = Gallery(len(counts), sum(counts), chance_metrics(counts))
    return out


def _previous_runs(final_dir: Path) -> dict[str, FinalRun]:
    """Runs an earlier final stage finished (a search extended with ``--more``), by name."""
    path = final_dir / FINAL_SUMMARY
    if not path.is_file():
        return {}
    runs = [r for c in read_final(path).candidates for r in c.runs]
    return {r.run: r for r in runs if r.test}


def _launch(
    exp: SearchExperiment, root: str, todo: list[dict[str, Any]], final_dir: Path, reread: bool
) -> list[FinalRun]:
    """Run ``todo`` (Tune's configs: ``label``, ``params``, ``seed``, ``run``) as concurrent
    Tune trials; each finished run's record."""
    in_trial = trains_in_trial(exp)
    resources = trial_resources(exp, in_trial)
    driver = make_final_driver(
        exp.with_absolute_paths(),
        f"{root}/{RUNS_DIR}",
        exp.search.metric,
        exp.search.mode,
        exp.final.retrain,
    )
    at_once = concurrent_trials(
        exp, ray.cluster_resources(), None if in_trial else resources, runs=len(todo)
    )
    print(f"[msa] final stage: {len(todo)} runs, {at_once} at a time")
    earlier = recorded_reads(final_dir)
    for run in todo:
        key = f"final:{run['run']}"
        tested = _stored_test(f"{root}/{RUNS_DIR}/{run['run']}") is not None
        if not (tested and earlier.get(key)):  # a read already claimed and kept is not a new one
            claim_test_read(final_dir, key, reread)
    with tune_interrupts() as interrupted:
        results = tune.Tuner(
            tune.with_resources(driver, resources),
            param_space={"run": tune.grid_search(todo)},
            tune_config=tune.TuneConfig(
                max_concurrent_trials=at_once,
                reuse_actors=True,  # a finished run's process starts the next
                trial_name_creator=lambda t: (
                    f"{t.config['run']['label']}_seed{t.config['run']['seed']}"
                ),
                trial_dirname_creator=lambda t: t.config["run"]["run"],
            ),
            run_config=tune.RunConfig(
                name=f"final_tune_{datetime.now():%Y%m%d-%H%M%S}",
                storage_path=root,
                failure_config=tune.FailureConfig(max_failures=trial_retries(exp, in_trial)),
                **final_console(exp.search.metric),  # one line per run (a table with --verbose)
            ),
        ).fit()
    if unfinished_trials(results, len(todo)) or interrupted():  # Ctrl-C: Tune saved the runs
        raise SearchInterrupted("the final stage was interrupted: rerun with --resume")
    done = []
    for result in results:
        run, last = result.config["run"], result.metrics or {}
        if result.error is not None or "checkpoint" not in last:
            print(f"[msa] final run {run['label']} seed {run['seed']} failed: {result.error}")
            continue
        val = {k: float(last[f"val_{k}"]) for k in METRIC_KEYS if f"val_{k}" in last}
        done.append(
            FinalRun(
                label=run["label"],
                seed=run["seed"],
                run=run["run"],
                checkpoint=relative_to_results(last["checkpoint"], final_dir.parent),
                epoch=int(last["final_epoch"]),
                val=val or None,
                test={k: float(last[f"test_{k}"]) for k in METRIC_KEYS},
                examples=json.loads(last.get("test_examples", "{}")),
            )
        )
    return done


def run_final(out: Path, exp: Experiment, storage: str, reread_test: bool = False) -> FinalSummary:
    """Retrain the candidates with new seeds, test each run once, write ``final/``.

    Writes ``final/metrics.json`` (:func:`~workflows.results.summary.final_summary`) and the
    report. Each run's test read is recorded in ``final/test_reads.json``; a second read of the
    same model raises :class:`~workflows.results.read_ledger.TestAlreadyRead` unless
    ``reread_test``. Runs an earlier final stage finished (same config and seed) are reused.
    """
    # here, not at the top: every trial process imports this module (its trainable), and needs
    # neither scipy nor matplotlib
    from workflows.results.report import write_report
    from workflows.results.summary import final_summary
    from workflows.runtime.tensorboard import log_final_runs

    exp = exp.require_search()
    final_dir = out / "final"
    final_dir.mkdir(parents=True, exist_ok=True)
    table = read_table(out / "trials.csv")
    candidates = pick_candidates(table, exp)
    seeds = final_seeds(exp)
    earlier = _previous_runs(final_dir)
    runs, todo = [], []
    for cand in candidates:
        for seed in seeds:
            name = _run_name(exp, cand.params, seed)
            if name in earlier:
                runs.append(dataclasses.replace(earlier[name], label=cand.label))
            else:
                todo.append({"label": cand.label, "params": cand.params, "seed": seed, "run": name})
    labels = ", ".join(c.label for c in candidates)
    print(f"[msa] final stage: {labels}, each with seeds {seeds}; the test split read once each")
    if todo:
        runs += _launch(exp, storage, todo, final_dir, reread_test)
    final = final_summary(
        candidates,
        runs,
        metric=exp.search.metric,
        mode=exp.search.mode,
        epochs=exp.train.epochs,
        seeds=seeds,
        retrained=exp.final.retrain,
        gallery=_gallery(exp.with_absolute_paths().data),
        search_trials=len(table),
    )
    write_final(final_dir / FINAL_SUMMARY, final)
    for run in todo:
        if any(r.run == run["run"] for r in runs):
            finish_test_read(final_dir, f"final:{run['run']}")
    write_report(
        final_dir,
        name=exp.name,
        table=table,
        history=read_table(out / "history.csv"),
        final=final,
        space=exp.space,
        study=(study_storage(exp, out), exp.name) if exp.search.searcher.type == "optuna" else None,
    )
    log_final_runs(  # one TensorBoard run per candidate and seed, beside the search's trials
        (out / "tensorboard").resolve(),
        [
            {**run.to_json(), "params": cand.params, "baseline": cand.baseline}
            for cand in final.candidates
            for run in cand.runs
        ],
        exp.search.metric,
    )
    return final
