"""How `msa tune` lays out its trials: launcher, concurrency, retries, checkpoint paths."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from workflows.experiment import parse_experiment
from workflows.runtime.checkpoints import RunCheckpoints
from workflows.runtime.records import _with_missing_epochs
from workflows.runtime.search import concurrent_trials, trains_in_trial, trial_retries


def _exp(samples: int = 8, **train):
    return parse_experiment({"name": "x", "train": train, "search": {"num_samples": samples}})


def test_one_worker_trains_in_the_trial_unless_asked_for_a_torch_trainer() -> None:
    assert trains_in_trial(_exp())
    assert not trains_in_trial(_exp(num_workers=2))
    assert not trains_in_trial(_exp(trial_launcher="torch_trainer"))


@pytest.mark.parametrize(
    ("train", "resources", "driver", "samples", "expected"),
    [
        ({}, {"CPU": 2}, None, 8, 2),  # in-trial: one CPU each
        ({"trial_launcher": "torch_trainer"}, {"CPU": 2}, {"CPU": 0, "msa_driver": 1}, 8, 2),
        ({"trial_launcher": "torch_trainer"}, {"CPU": 2}, {"CPU": 0.01}, 8, 1),  # 1.01 CPU each
        ({"num_workers": 2}, {"CPU": 5}, {"CPU": 0}, 8, 2),
        ({"cpus_per_worker": 4}, {"CPU": 2}, None, 8, 1),  # never below one
        ({"use_gpu": True, "gpus_per_worker": 0.5}, {"CPU": 16, "GPU": 1}, None, 8, 2),
        ({}, {"CPU": 16}, None, 3, 3),  # no more than the trials
    ],
)
def test_concurrent_trials(train, resources, driver, samples, expected) -> None:
    assert concurrent_trials(_exp(samples, **train), resources, driver) == expected


def test_trial_retries_add_the_runs_restarts_when_the_trial_trains_itself() -> None:
    exp = _exp(max_failures=2)
    assert trial_retries(exp, in_trial=True) == 2
    assert trial_retries(exp, in_trial=False) == 0  # the TorchTrainer restarts the run itself
    assert trial_retries(_exp(max_failures=-1), in_trial=True) == -1


def test_missing_epochs_come_from_the_latest_checkpoint_left(tmp_path) -> None:
    kept = tmp_path / "checkpoint_000001"
    kept.mkdir()
    recorded = [{"epoch": e, "val_mr": 10.0 * e} for e in (1, 2, 3)]
    (kept / "meta.json").write_text(json.dumps({"history": recorded}))
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 4],
            "val_mr": [11.0, 22.0, 44.0],
            "checkpoint_path": [None, str(kept), str(tmp_path / "checkpoint_000003")],  # deleted
        }
    )
    merged = _with_missing_epochs(history)
    assert merged["epoch"].tolist() == [1, 2, 3, 4]
    assert merged["val_mr"].tolist() == [11.0, 22.0, 30.0, 44.0]  # Tune's rows are kept
    complete = history[history["epoch"] < 3]
    assert _with_missing_epochs(complete) is complete  # nothing missing: no checkpoint read


def test_run_checkpoints_keep_the_best_and_the_latest(tmp_path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    run = tmp_path / "runs" / "x-1"
    store = RunCheckpoints(str(run), keep=2, metric="val_mr", mode="max")
    assert store.latest() is None
    for epoch, score in [(1, 10.0), (2, 30.0), (3, 20.0), (4, 5.0)]:
        (local / "meta.json").write_text(json.dumps({"epoch": epoch}))
        path = store.save(str(local), epoch, {"val_mr": score})
        assert path == f"{run}/checkpoint_{epoch:06d}"
    # best two (epochs 2 and 3) and the latest (4); the record says so, the rest is deleted
    assert sorted(p.name for p in run.glob("checkpoint_*")) == [
        "checkpoint_000002",
        "checkpoint_000003",
        "checkpoint_000004",
    ]
    assert json.loads((run / "checkpoint_000004" / "meta.json").read_text()) == {"epoch": 4}
    again = RunCheckpoints(str(run), keep=2, metric="val_mr", mode="max")  # a restarted trial
    assert again.latest() == f"{run}/checkpoint_000004"
    assert [e["epoch"] for e in again.entries] == [2, 3, 4]
    lowest = RunCheckpoints(str(tmp_path / "runs" / "y-1"), keep=1, metric="train_loss", mode="min")
    for epoch, loss in [(1, 3.0), (2, 1.0), (3, float("nan"))]:
        lowest.save(str(local), epoch, {"train_loss": loss})
    assert [e["epoch"] for e in lowest.entries] == [2, 3]  # NaN never ranks as best


def test_collapsed_trials_are_stopped_once_they_stop_improving() -> None:
    from workflows.runtime.search import CollapsedStopper

    stop = CollapsedStopper("val_mr", patience=2)
    # t1 collapsed from epoch 2 but its ranking still improves: it goes on until 2 flat epochs
    reports = [(10.0, 0.0), (12.0, 1.0), (14.0, 1.0), (14.0, 1.0), (14.0, 1.0)]
    stopped = [stop("t1", {"val_mr_best": best, "collapsed": c}) for best, c in reports]
    assert stopped == [False, False, False, False, True]
    # t2 flat but healthy: never stopped; a report without the verdict never stops
    assert not any(stop("t2", {"val_mr_best": 5.0, "collapsed": 0.0}) for _ in range(4))
    assert stop("t3", {"epoch": 3}) is False and stop.stop_all() is False
