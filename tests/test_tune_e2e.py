"""End to end on a real local Ray cluster: `msa tune`, export -> train, evaluate, CLI errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml

from tests.conftest import tiny_experiment, write_yaml
from workflows.results.trials import read_table

pytestmark = pytest.mark.ray
KEYS = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mr"]


def msa(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the real `msa` CLI in a subprocess (its own local Ray cluster of 2 CPUs)."""
    env = {**os.environ, "RAY_DEDUP_LOGS": "0"}
    return subprocess.run(
        [sys.executable, "-m", "workflows", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def tuned(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished three-trial search; trials with num_scales 9 fail inside the worker."""
    work = tmp_path_factory.mktemp("tune")
    exp = tiny_experiment(
        synth_data,
        search={
            "num_samples": 3,
            "searcher": {"seed": 3},
            "scheduler": {"type": "fifo"},
            "space": {
                "model.image.num_scales": {"choice": [1, 9]},
                "loss.lambda_mscma": {"loguniform": [1.0, 30.0]},
            },
        },
        final={"top_k": 1, "seeds": 2},
    )
    exp["model"]["image"]["num_scales"] = 1
    exp["train"]["max_failures"] = 0
    write_yaml(work / "tiny.yaml", exp)
    log = work / "tune.log"
    with log.open("w") as out:  # the search runs while the test reads its Ray dashboard
        proc = subprocess.Popen([sys.executable, "-m", "workflows", "tune", "tiny.yaml",
                                 "--num-cpus", "2"], cwd=work, stdout=out, stderr=out,
                                env={**os.environ, "RAY_DEDUP_LOGS": "0"})  # fmt: skip
        seen = _watch_dashboard(proc, log, "tiny")
    (work / "dashboard.json").write_text(json.dumps(seen))
    assert proc.returncode == 0, log.read_text()[-3000:]
    return work


def _watch_dashboard(proc: subprocess.Popen, log: Path, name: str) -> dict[str, list[str]]:
    """Until ``proc`` ends: the trials its Ray dashboard shows, as a user finds them there.

    Through the dashboard's HTTP API (State API actors, then each actor's log, with the
    cluster's token): every trial id named by a progress line ``[<name> <id>] epoch ...``,
    with the lines found for it.
    """
    seen: dict[str, list[str]] = {}
    url = None
    while proc.poll() is None:
        time.sleep(2)
        url = url or next(iter(re.findall(r"Ray dashboard: (http\S+)", log.read_text())), None)
        if url is None:
            continue
        try:
            actors = _dashboard_get(url, "/api/v0/actors?detail=true&limit=1000")
            for actor in json.loads(actors)["data"]["result"]["result"]:
                text = _dashboard_get(url, f"/api/v0/logs/file?actor_id={actor['actor_id']}"
                                      "&suffix=out&lines=100000")  # fmt: skip
                for trial, line in re.findall(rf"\[{name} (\w{{8}})\] (epoch .*)", text):
                    seen[trial] = sorted({*seen.get(trial, []), line})
        except (OSError, ValueError, KeyError):  # starting up, or shutting down
            continue
    return seen


def _dashboard_get(url: str, path: str) -> str:
    """GET from the dashboard with ``~/.ray/auth_token`` (the log API's leading 1 dropped)."""
    token = Path.home() / ".ray" / "auth_token"
    headers = {"Authorization": f"Bearer {token.read_text().strip()}"} if token.exists() else {}
    request = urllib.request.Request(url + path, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return body[1:].decode() if path.startswith("/api/v0/logs/") else body.decode()


def test_dashboard_shows_each_trial_by_name(tuned: Path) -> None:
    """Each trial that trained is found in the Ray dashboard during the search by its name,
    with its progress (every epoch's line in its actor's log)."""
    seen = json.loads((tuned / "dashboard.json").read_text())
    trials = read_table(tuned / "results" / "tiny" / "trials.csv")
    trained = trials.loc[trials["status"] == "COMPLETE", "trial_id"].tolist()
    assert trained and set(trained) <= set(seen), (trained, seen)
    for trial in trained:
        assert [line.split(" ")[1] for line in seen[trial]] == ["1/2", "2/2"], seen[trial]


def test_tune_writes_consistent_results(tuned: Path) -> None:
    out = tuned / "results" / "tiny"
    final = json.loads((out / "final" / "metrics.json").read_text())
    printed = (tuned / "tune.log").read_text()  # its end: the final stage and where to look
    assert f"[msa] winner {final['winner']['label']} (search trial " in printed
    assert "[msa] report: results/tiny/final/report.md" in printed
    assert "[msa] best config: results/tiny/best_config.yaml" in printed
    # one console style without --verbose: a line per finished trial and the best trial, no
    # Ray table (old or new), snapshot warning, checkpoint line or Ray's TensorBoard hint
    assert re.search(r"^\[msa\] trial tiny_\w{8} COMPLETE after 2/2 epochs", printed, re.M)
    assert re.search(r"^\[msa\] best trial tiny_\w{8}: val_mr ", printed, re.M)
    assert re.search(r"^\[msa\] final run baseline_seed1 COMPLETE: epoch \d", printed, re.M)
    for noise in ("== Status ==", "Trial status:", "╭", "Experiment state snapshotting",
                  "Checkpoint successfully created", "tensorboard --logdir /tmp/ray"):  # fmt: skip
        assert noise not in printed, noise
    for name in (
        "experiment.yaml",
        "trials.csv",
        "history.csv",
        "best_config.yaml",
        "optuna.db",
        "final/metrics.json",
        "final/test_reads.json",
        "final/report.md",
        "final/val_curves.png",
        "final/final.png",
        "final/slices.png",
    ):
        assert (out / name).is_file(), name
    trials = read_table(out / "trials.csv")
    assert len(trials) == 3 and trials["trial_id"].is_unique
    failed = trials["param.model.image.num_scales"] == 9
    assert failed.any() and (~failed).any(), "the seeded search must hit both choices"
    assert (trials.loc[failed, "status"] == "FAIL").all()
    assert trials.loc[failed, "error"].str.contains("num_scales: 9 exceeds").all()
    assert (trials.loc[~failed, "status"] == "COMPLETE").all()
    assert (trials.loc[~failed, "epochs"] == 2).all()
    # the first trial is the experiment's own values (the paper settings)
    history = read_table(out / "history.csv")
    first = json.loads(trials.loc[trials["param.loss.lambda_mscma"] == 15.0, "params"].iloc[0])
    assert first == {"loss.lambda_mscma": 15.0, "model.image.num_scales": 1}

    best = trials.iloc[0]
    assert best["best_val_mr"] == trials["best_val_mr"].max()
    per_trial = history[history["trial_id"] == best["trial_id"]]
    assert best["best_val_mr"] == pytest.approx(per_trial["val_mr"].max())
    # every epoch reports the best so far: what Optuna and ASHA rank trials by
    for _, group in history.groupby("trial_id"):
        assert group["val_mr_best"].tolist() == group["val_mr"].cummax().tolist()
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")
    told = sorted(t.value for t in study.trials if t.value is not None)
    assert told == pytest.approx(sorted(trials["best_val_mr"].dropna()))

    final = json.loads((out / "final" / "metrics.json").read_text())
    # the final stage: the best config and the baseline, each retrained with seeds 1 and 2
    assert final["seeds"] == [1, 2] and final["epochs"] == 2
    labels = [c["label"] for c in final["candidates"]]
    assert labels in (["baseline"], ["rank1", "baseline"])  # rank1 may be the baseline itself
    assert final["baseline"]["params"] == first and final["baseline"]["trial_id"] is not None
    reads = json.loads((out / "final" / "test_reads.json").read_text())
    for cand in final["candidates"]:
        assert [r["seed"] for r in cand["seeds"]] == [1, 2]
        for run in cand["seeds"]:
            # the tested checkpoint is the run's best validation epoch, its val metrics its own
            checkpoint = out / run["checkpoint"]  # relative to the results folder
            record = json.loads((checkpoint.parent / "checkpoints.json").read_text())
            latest = max(record["checkpoints"], key=lambda e: e["epoch"])["name"]
            history = json.loads((checkpoint.parent / latest / "meta.json").read_text())
            scores = [epoch["val_mr"] for epoch in history["history"]]
            assert len(scores) == 2 and run["epoch"] == 1 + scores.index(max(scores))
            for key in KEYS:
                assert run["val"][key] == pytest.approx(
                    history["history"][run["epoch"] - 1][f"val_{key}"]
                )
            assert set(KEYS) <= set(run["test"])
            assert reads[f"final:{Path(run['checkpoint']).parent.name}"][0]["finished"]
        for split in ("val", "test"):
            mean = sum(r[split]["mr"] for r in cand["seeds"]) / 2
            assert cand[split]["mr"]["mean"] == pytest.approx(mean) and cand[split]["mr"]["n"] == 2
    winner = final["winner"]
    assert winner["val"]["mr"]["mean"] == max(c["val"]["mr"]["mean"] for c in final["candidates"])
    paired = [
        w["test"]["mr"] - b["test"]["mr"]
        for w, b in zip(winner["seeds"], final["baseline"]["seeds"], strict=True)
    ]
    assert final["comparison"]["test"]["mr"]["mean"] == pytest.approx(sum(paired) / 2)
    report = (out / "final" / "report.md").read_text()
    assert "paired by seed" in report and final["comparison"]["test"]["verdict"] in report
    assert "chance mr" in report and "test 6 images / 30 captions" in report

    exported = yaml.safe_load((out / "best_config.yaml").read_text())
    assert "search" not in exported and exported["name"] == "tiny_best"
    assert exported["loss"]["lambda_mscma"] == pytest.approx(winner["params"]["loss.lambda_mscma"])
    assert exported["model"]["image"]["num_scales"] == winner["params"]["model.image.num_scales"]

    for trial_id in trials.loc[~failed, "trial_id"]:
        events = list((out / "tensorboard" / f"tiny_{trial_id}").glob("events.out.tfevents.*"))
        assert events, f"no TensorBoard events for trial {trial_id}"
    assert (out / "ray" / "tune").is_dir()


def test_python_doc_reads_the_search(tuned: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """docs/python.md's ``python tuned`` blocks: trials.csv, history.csv, ResultGrid, restore."""
    from tests.test_python_api import doc_blocks, run_blocks

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "demo").symlink_to(tuned / "results" / "tiny")
    monkeypatch.chdir(tmp_path)
    ns = run_blocks(doc_blocks("tuned"))
    assert ns["name"] == "tiny" and len(ns["grid"]) == len(ns["trials"]) == 3
    assert ns["winner"].metrics["val_mr_best"] == pytest.approx(ns["best"].best_val_mr)
    assert ns["curve"]["val_mr"].max() == pytest.approx(ns["best"].best_val_mr)
    assert ns["best"].trial_id in capsys.readouterr().out


def test_study_trials_csv_and_tensorboard_tell_one_story(tuned: Path) -> None:
    """Each trial's status, Ray id and per-epoch values are the same in optuna.db, trials.csv,
    history.csv and TensorBoard; the final stage's runs are in TensorBoard with their test mR."""
    from tests.test_trial_output import _events
    from tests.test_views import _hparams

    out = tuned / "results" / "tiny"
    trials, history = read_table(out / "trials.csv"), read_table(out / "history.csv")
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")
    assert study.metric_names == ["val_mr"]
    assert [t.user_attrs["baseline"] for t in study.trials] == [True, False, False]
    by_id = {t.user_attrs["ray_trial_id"]: t for t in study.trials}
    assert set(by_id) == set(trials["trial_id"])
    for row in trials.itertuples():
        curve = history[history["trial_id"] == row.trial_id]
        assert by_id[row.trial_id].state.name == row.status
        assert by_id[row.trial_id].intermediate_values == pytest.approx(
            dict(zip(curve["epoch"], curve["val_mr"], strict=True))
        )
        values, _ = _hparams(out / "tensorboard" / f"tiny_{row.trial_id}")
        assert (values["status"], values["trial"]) == (row.status, row.trial_id)
    final = json.loads((out / "final" / "metrics.json").read_text())
    for cand in final["candidates"]:
        for run in cand["seeds"]:
            folder = out / "tensorboard" / "final" / f"{run['label']}_seed{run['seed']}"
            values, _ = _hparams(folder)
            assert (values["candidate"], values["baseline"]) == (cand["label"], cand["baseline"])
            test_mr = [v.simple_value for e in _events(folder) for v in e.summary.value
                       if v.tag == "test/test_mr"]  # fmt: skip
            assert test_mr == [pytest.approx(run["test"]["mr"])]


def test_export_then_train_reproduces_trial(tuned: Path) -> None:
    out = tuned / "results" / "tiny"
    proc = msa("export", "results/tiny", "--out", "again.yaml", cwd=tuned)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(proc.stdout.strip()) == Path("again.yaml")
    proc = msa("train", "again.yaml", "--num-cpus", "2", cwd=tuned)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch 2/2" in proc.stdout + proc.stderr
    winner = json.loads((out / "final" / "metrics.json").read_text())["winner"]
    history = read_table(out / "history.csv")
    trial = history[history["trial_id"] == winner["trial_id"]].sort_values("epoch")
    rerun = read_table(tuned / "results" / "tiny_best" / "history.csv")
    assert list(rerun["epoch"]) == list(trial["epoch"]) == [1, 2]  # every epoch, in order
    for key in ["train_loss", *[f"val_{k}" for k in KEYS]]:
        assert rerun[key].to_numpy() == pytest.approx(trial[key].to_numpy(), abs=1e-4), key
    summary = json.loads((tuned / "results" / "tiny_best" / "metrics.json").read_text())
    assert (tuned / "results" / "tiny_best" / summary["checkpoint"] / "meta.json").is_file()


def test_evaluate_cli_matches_final_stage(tuned: Path) -> None:
    proc = msa("evaluate", "results/tiny", "--split", "test", cwd=tuned)
    assert proc.returncode == 1 and "--reread-test" in proc.stderr  # the final stage read it
    proc = msa("evaluate", "results/tiny", "--split", "test", "--reread-test", cwd=tuned)
    assert proc.returncode == 0, proc.stderr[-2000:]
    final = json.loads((tuned / "results" / "tiny" / "final" / "metrics.json").read_text())
    runs = final["winner"]["seeds"]  # `msa evaluate RESULTS` reads the best-validation seed's
    tested = next(r for r in runs if r["checkpoint"] == final["checkpoint"])
    assert tested["val"]["mr"] == max(r["val"]["mr"] for r in runs)
    printed = dict(line.split() for line in proc.stdout.strip().splitlines())
    for key in KEYS:
        assert float(printed[key]) == pytest.approx(tested["test"][key], abs=0.01)


def test_second_tune_without_resume_is_refused(tuned: Path) -> None:
    proc = msa("tune", "tiny.yaml", cwd=tuned)
    assert proc.returncode == 2
    assert "already holds a search" in proc.stderr and "--resume" in proc.stderr


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: x\nloss: {margn: 0.5}\n", "unknown key loss.margn"),
        ("name: x\nsearch: {space: {loss.margin: {uniform: [0.9, 0.1]}}}\n", "empty range"),
        ("name: x\nmodel: [1, 2\n", "invalid YAML"),
    ],
)
def test_bad_yaml_is_a_clear_cli_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "bad.yaml").write_text(content)
    proc = msa("tune", "bad.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert "bad.yaml" in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "results").exists()


def test_two_worker_ddp_run_evaluates_like_one_process(synth_data: Path, tmp_path: Path) -> None:
    """DDP with two Ray Train workers: the sharded, gathered validation metrics of the last
    epoch equal a single-process evaluation of the saved checkpoint."""
    exp = tiny_experiment(synth_data, name="ddp")
    exp["train"].update(num_workers=2, epochs=1, batch_size=8)
    write_yaml(tmp_path / "ddp.yaml", exp)
    proc = msa("train", "ddp.yaml", "--num-cpus", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    history = read_table(tmp_path / "results" / "ddp" / "history.csv")
    proc = msa("evaluate", "results/ddp", "--split", "val", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    printed = dict(line.split() for line in proc.stdout.strip().splitlines())
    for key in KEYS:
        assert float(printed[key]) == pytest.approx(history[f"val_{key}"].iloc[-1], abs=0.01)


def test_final_retrain_on_train_plus_val(synth_data: Path, tmp_path: Path) -> None:
    """final.retrain: each final run trains on train+val, then its last epoch is tested once."""
    exp = tiny_experiment(
        synth_data,
        name="retrain",
        search={
            "num_samples": 1,
            "scheduler": {"type": "fifo"},
            "space": {"loss.margin": {"uniform": [0.2, 0.6]}},
        },
        final={"retrain": True, "top_k": 1, "seeds": 1},
    )
    exp["train"]["epochs"] = 1
    exp["model"] = {**exp["model"], "frozen_cache_dir": str(tmp_path / "memo")}  # the image
    exp["model"]["image"] = {**exp["model"]["image"], "trainable_stages": 1, "cache_frozen": True}
    exp["model"]["text"] = {
        **exp["model"]["text"],
        "trainable_layers": 0,
        "cache_frozen": True,
        "padding": "max_length",
        "max_length": 16,
    }  # top trains, memo shared
    write_yaml(tmp_path / "retrain.yaml", exp)
    proc = msa("tune", "retrain.yaml", "--num-cpus", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "image memo: " in log and "text memo: " in log  # built before the trials:
    assert log.index("text memo: ") < log.index("[retrain ")  # before any trial's progress
    assert len(list((tmp_path / "memo").glob("memo-*.pt"))) >= 2
    out = tmp_path / "results" / "retrain"
    final = json.loads((out / "final" / "metrics.json").read_text())
    assert final["retrained"] is True and final["winner"]["label"] == "baseline"
    (run,) = final["baseline"]["seeds"]
    assert run["checkpoint"].startswith("ray/final_runs/retrain-final-") and run["epoch"] == 1
    meta = json.loads((out / run["checkpoint"] / "meta.json").read_text())
    assert "val_mr" not in meta["metrics"]  # no validation while training on train+val
    assert run["val"] is None and final["baseline"]["val"] is None
    assert set(KEYS) <= set(run["test"])


def test_resume_more_adds_trials_to_the_same_study(tuned: Path) -> None:
    """Last on the module's search: `--resume --more 1` adds a trial to its finished study."""
    out = tuned / "results" / "tiny"
    proc = msa("tune", "tiny.yaml", "--more", "1", cwd=tuned)
    assert proc.returncode == 2 and "pass it with --resume" in proc.stderr
    before = read_table(out / "trials.csv")
    proc = msa(
        "tune", "tiny.yaml", "--num-cpus", "2", "--resume", "--more", "1", "--no-final", cwd=tuned
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = read_table(out / "trials.csv")
    assert len(after) == 4 and set(before["trial_id"]) < set(after["trial_id"])
    assert (out / "ray" / "tune_more1").is_dir()
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(study.trials) == 4
    reported = after.loc[after["status"] != "FAIL", "trial_id"]
    assert set(reported) <= set(read_table(out / "history.csv")["trial_id"])
