"""The search of ``msa tune``: Ray Tune + Optuna over training runs, then the final stage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import ExperimentAnalysis, ResultGrid

from msa_model.config import ConfigError
from workflows.errors import NoTrialReported, ResultsFolderError, SearchInterrupted
from workflows.experiment import Experiment, SearchExperiment, dump_experiment, load_experiment
from workflows.experiment.datasets import check_run_data
from workflows.results.export import export_best
from workflows.results.folders import claim_results_dir, created_by, mark_created, release_lock
from workflows.results.paths import relative_to_results
from workflows.results.read_ledger import TestAlreadyRead
from workflows.results.status import STATUSES
from workflows.results.study_file import check_study
from workflows.results.trials import history_table, trials_table
from workflows.runtime.cluster import check_feasible, connect
from workflows.runtime.fatal import run_once
from workflows.runtime.final import run_final
from workflows.runtime.launch import storage_root
from workflows.runtime.memo import warm_memos
from workflows.runtime.records import collect_records, unfinished_trials
from workflows.runtime.reporter import search_console
from workflows.runtime.searcher import (
    baseline_point,
    make_scheduler,
    make_searcher,
    study_storage,
)
from workflows.runtime.session import running_best_key
from workflows.runtime.space_tune import to_tune
from workflows.runtime.tensorboard import TuneTensorBoard
from workflows.runtime.trainable import (
    concurrent_trials,
    train_run,
    trains_in_trial,
    trial_resources,
    trial_retries,
    trial_run_name,
)
from workflows.runtime.trusted import check_trusted
from workflows.signals import tune_interrupts

__all__ = [
    "run_tune",
    "CollapsedStopper",
    "make_driver",
    "trains_in_trial",
    "concurrent_trials",
    "trial_retries",
]

TUNE_DIR = "tune"
PLANNED = "search_runs.json"  # trials per Tune run: what --resume expects of the latest one


def make_driver(exp: Experiment, storage_path: str, metric: str, mode: str):
    """The Tune trainable: one trial's training run (:func:`train_run`) of ``exp`` with its
    params (:meth:`~workflows.experiment.schema.Experiment.with_params`).

    The run's folder is ``<storage_path>/<name>_<trial id>`` (:func:`trial_run_name`, as its
    Tune trial dir and TensorBoard run) and its progress lines start with ``[<name> <trial
    id>]``. The function carries the experiment's name, so trials show under it in the
    dashboard.
    """

    name = exp.name

    def driver(params: dict[str, Any]) -> None:
        trial_id = tune.get_context().get_trial_id()
        run_name = trial_run_name(name, trial_id)

        def run() -> None:
            trial = exp.with_params(params, source="trial config")
            train_run(trial, run_name, storage_path, metric, mode, label=f"{name} {trial_id}")

        run_once(f"{storage_path}/{run_name}", run)  # an error that would repeat is not retried

    driver.__name__ = driver.__qualname__ = name
    return driver


def _tune_runs(root: str) -> list[str]:
    """The Tune runs of a search: ``tune``, then ``tune_more<k>`` for each ``--more``."""
    names = [TUNE_DIR]
    while tune.Tuner.can_restore(f"{root}/{TUNE_DIR}_more{len(names)}"):
        names.append(f"{TUNE_DIR}_more{len(names)}")
    return names


def _study(exp: SearchExperiment, out: Path) -> str | None:
    """The Optuna storage URL of the search's study (None with Tune's random search)."""
    return study_storage(exp, out) if exp.search.searcher.type == "optuna" and exp.space else None


def _prepare_dir(out: Path, exp: SearchExperiment, resume: bool, more: int, root: str) -> bool:
    """Check, lock and create ``out``; check the study; whether Tune's state is to be restored."""
    stored = out / "experiment.yaml"
    tune_path = f"{root}/{TUNE_DIR}"
    study = _study(exp, out)
    restore = False
    if more < 0:
        raise ConfigError(f"--more: must be >= 1, got {more}")
    if more and not resume:
        raise ConfigError("--more adds trials to a finished search: pass it with --resume")
    if resume and not out.is_dir():
        raise ConfigError(f"--resume: no search to resume at {tune_path}")
    claim_results_dir(out, "msa tune", resume)  # msa's own folder, locked for this run
    if resume:
        restore = tune.Tuner.can_restore(tune_path)
        if not restore and (more or created_by(out) is None or not stored.is_file()):
            raise ConfigError(f"--resume: no search to resume at {tune_path}")
        if not restore:  # stopped while starting: no trial state to lose
            print("[msa] --resume: the search stopped before Tune saved its state; starting it")
        check_trusted(root)
        # compared as parsed: keys added to the schema since take their defaults on both sides
        if stored.is_file() and load_experiment(stored).to_dict() != exp.to_dict():
            raise ConfigError(
                f"--resume: {stored} differs from the given config; resume with the same file"
            )
        if more and not (out / "trials.csv").is_file():
            raise ConfigError(
                f"--more: the search in {out} did not finish (no trials.csv); finish it with "
                f"--resume first"
            )
    elif created_by(out) not in (None, "msa tune", "msa demo"):
        raise ConfigError(
            f"{out} already holds the results of {created_by(out)}: change `name` (or --results)"
        )
    elif (out / "ray" / TUNE_DIR).exists() or tune.Tuner.can_restore(tune_path):
        raise ConfigError(
            f"{out} already holds a search named {exp.name!r}: pass --resume to continue it, or "
            f"remove the folder, or change `name`"
        )
    if study is not None:
        exists = check_study(study, exp.name, must_exist=restore)
        if exists and not resume:
            raise ConfigError(
                f"{study} already holds an Optuna study named {exp.name!r}: pass --resume --more "
                f"N to add trials to it, or remove it, or change `name`"
            )
    mark_created(out, "msa tune")
    dump_experiment(exp, stored)
    return restore


def _planned(out: Path) -> dict[str, int]:
    """Trials each Tune run of the search was started with (``tune``, ``tune_more<k>``)."""
    try:
        return {str(k): int(v) for k, v in json.loads((out / PLANNED).read_text()).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def _plan(out: Path, name: str, trials: int) -> None:
    (out / PLANNED).write_text(json.dumps({**_planned(out), name: trials}, indent=1))


def _tuner(
    exp: SearchExperiment, out: Path, root: str, runs: list[str], resume: bool, more: int
) -> tuple[tune.Tuner, str]:
    """A new Tuner over ``exp.space`` (``more`` trials in a new run), or the latest run restored.

    Returns the Tuner and its run's name.
    """
    search, in_trial = exp.search, trains_in_trial(exp)
    resources = trial_resources(exp, in_trial)
    driver = tune.with_resources(
        make_driver(exp.with_absolute_paths(), f"{root}/trials", search.metric, search.mode),
        resources,
    )
    if resume and not more:
        try:
            tuner = tune.Tuner.restore(
                f"{root}/{runs[-1]}",
                trainable=driver,
                param_space=to_tune(exp.space),
                resume_unfinished=True,
                resume_errored=False,
                restart_errored=False,
            )
        except (AttributeError, ImportError) as exc:  # tuner.pkl names a class we no longer have
            raise ResultsFolderError(
                f"{out}: its Tune state was saved by another version of msa-tune and cannot be "
                f"restored by this one ({exc}); resume it with that version, or start the "
                f"search anew under another name"
            ) from exc
        return tuner, runs[-1]
    name = f"{TUNE_DIR}_more{len(runs)}" if more else TUNE_DIR
    tuner = tune.Tuner(
        driver,
        param_space=to_tune(exp.space),
        tune_config=tune.TuneConfig(
            # Optuna, ASHA and the report all rank a trial by its best epoch so far
            metric=running_best_key(search.metric),
            mode=search.mode,
            search_alg=make_searcher(exp, _study(exp, out), more=len(runs) if more else 0),
            reuse_actors=True,  # a finished trial's process runs the next: no second start-up
            scheduler=make_scheduler(exp),
            num_samples=more or search.num_samples,
            trial_name_creator=lambda trial: trial_run_name(exp.name, trial.trial_id),
            trial_dirname_creator=lambda trial: trial_run_name(exp.name, trial.trial_id),
            max_concurrent_trials=concurrent_trials(
                exp, ray.cluster_resources(), None if in_trial else resources, runs=more or None
            ),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=root,
            callbacks=[
                TuneTensorBoard(
                    (out / "tensorboard").resolve(),
                    exp.name,
                    [search.metric, running_best_key(search.metric)],
                    epochs=exp.train.epochs,  # fewer: PRUNED, as in the study and trials.csv
                    baseline=baseline_point(exp),
                )
            ],
            failure_config=tune.FailureConfig(max_failures=trial_retries(exp, in_trial)),
            stop=CollapsedStopper(search.metric) if search.stop_collapsed else None,
            **search_console(exp),  # one line per finished trial, Ray's table with --verbose
        ),
    )
    return tuner, name


class CollapsedStopper(tune.Stopper):
    """Tune's stop rule for ``search.stop_collapsed``: a collapsed trial that stopped improving.

    The loop's verdict (:func:`msa_model.collapse.collapse_reason`) no longer fires on a run that
    ranks far above chance (a validated epoch above ``CHANCE_TIMES`` x chance clears it), but
    between those epochs a collapsed-looking run can still be improving: a trial is ended only
    when it reports a collapse and its best ``metric`` has not improved for ``patience`` epochs.
    """

    def __init__(self, metric: str, patience: int = 2) -> None:
        self.key, self.patience = running_best_key(metric), patience
        self.bests: dict[str, list[float]] = {}

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        bests = self.bests.setdefault(trial_id, [])
        if self.key in result:
            bests.append(result[self.key])
        stalled = len(bests) > self.patience and bests[-1] == bests[-1 - self.patience]
        return bool(result.get("collapsed")) and stalled

    def stop_all(self) -> bool:
        return False


def run_tune(
    exp: Experiment,
    results_root: Path = Path("results"),
    address: str | None = None,
    storage: str | None = None,
    resume: bool = False,
    final: bool = True,
    num_cpus: int | None = None,
    more: int = 0,
    reread_test: bool = False,
) -> Path:
    """Search ``exp.search.space``; write trials.csv, best_config.yaml, final/ and TensorBoard.

    ``resume`` continues the latest run of an interrupted search; with ``more`` > 0 it adds
    ``more`` trials to a finished one (the same Optuna study, a new Tune run): the tables then
    hold every run's trials. Returns the results folder ``results_root/<name>``.

    The dataset is checked before Ray starts (with a test split when the final stage runs).
    An interrupted search raises :class:`SearchInterrupted` before export and the final stage;
    the final stage reads the test split once per model (``reread_test`` to read it again).
    """
    exp = exp.require_search()
    out = results_root / exp.name
    try:
        return _search(exp, out, address, storage, resume, final, num_cpus, more, reread_test)
    finally:
        release_lock(out)


def _search(
    exp: SearchExperiment,
    out: Path,
    address: str | None,
    storage: str | None,
    resume: bool,
    final: bool,
    num_cpus: int | None,
    more: int,
    reread_test: bool,
) -> Path:
    """:func:`run_tune` once its results folder is known."""
    check_run_data(exp.with_absolute_paths().data, require_test=final and exp.final.enabled)
    root = storage_root(out, storage, exp.name)
    restore = _prepare_dir(out, exp, resume, more, root)
    connect(address, num_cpus=num_cpus, name=exp.name)
    check_feasible(exp, trains_in_trial(exp))
    warm_memos(exp)
    runs = _tune_runs(root) if restore else [TUNE_DIR]
    tuner, name = _tuner(exp, out, root, runs, restore, more)
    if not (restore and not more):
        _plan(out, name, more or exp.search.num_samples)
    with tune_interrupts() as interrupted:
        results = tuner.fit()
    expected = _planned(out).get(name, exp.search.num_samples if name == TUNE_DIR else None)
    left = unfinished_trials(results, expected)
    if left or interrupted():
        unfinished = f"with {left} trial(s) unfinished" if left else "after its last trial"
        raise SearchInterrupted(
            f"search interrupted {unfinished}; its state is saved in {root}: "
            f"rerun with --resume to continue (nothing exported, test split not read)"
        )
    records = collect_records(results, f"{root}/trials", exp.name)
    for earlier in runs:
        if earlier != name:
            records += collect_records(
                ResultGrid(ExperimentAnalysis(f"{root}/{earlier}")), f"{root}/trials", exp.name
            )

    table = trials_table(records, exp.search.metric, exp.search.mode, exp.train.epochs)
    history = history_table(records)
    for frame, column in ((table, "best_checkpoint"), (history, "checkpoint_path")):
        if column in frame:  # results files name paths relative to the results folder
            frame[column] = [
                relative_to_results(p, out) if isinstance(p, str) else p for p in frame[column]
            ]
    table.to_csv(out / "trials.csv", index=False)
    history.to_csv(out / "history.csv", index=False)
    counts = ", ".join(f"{int((table['status'] == s).sum())} {s}" for s in STATUSES)
    print(f"[msa] {len(table)} trials ({counts}); table in {out / 'trials.csv'}")
    if f"best_{exp.search.metric}" not in table or table[f"best_{exp.search.metric}"].isna().all():
        raise NoTrialReported(
            f"no trial reported {exp.search.metric}: all {len(table)} failed; see the error "
            f"column of {out / 'trials.csv'}"
        )
    export_best(out)
    if final and exp.final.enabled:
        try:
            run_final(out, exp, storage=root, reread_test=reread_test)
        except TestAlreadyRead as exc:
            if not resume:
                raise
            print(f"[msa] the final stage already ran; not reading the test split again: {exc}")
        export_best(out)  # the final stage's winner
    return out
