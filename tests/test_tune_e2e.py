"""End to end on a real local Ray cluster: `msa tune`, export -> train, evaluate, CLI errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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
    )
    exp["model"]["image"]["num_scales"] = 1
    exp["train"]["max_failures"] = 0
    write_yaml(work / "tiny.yaml", exp)
    proc = msa("tune", "tiny.yaml", "--num-cpus", "2", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return work


def test_tune_writes_consistent_results(tuned: Path) -> None:
    out = tuned / "results" / "tiny"
    for name in (
        "experiment.yaml",
        "trials.csv",
        "history.csv",
        "best_config.yaml",
        "final/metrics.json",
        "final/report.md",
        "final/val_curves.png",
        "final/params.png",
    ):
        assert (out / name).is_file(), name
    trials = read_table(out / "trials.csv")
    assert len(trials) == 3 and trials["trial_id"].is_unique
    failed = trials["param.model.image.num_scales"] == 9
    assert failed.any() and (~failed).any(), "the seeded search must hit both choices"
    assert (trials.loc[failed, "status"] == "ERROR").all()
    assert trials.loc[failed, "error"].str.contains("num_scales: 9 exceeds").all()
    assert (trials.loc[~failed, "status"] == "TERMINATED").all()
    assert (trials.loc[~failed, "epochs"] == 2).all()
    # the first trial is the experiment's own values (the paper settings)
    history = read_table(out / "history.csv")
    first = json.loads(trials.loc[trials["param.loss.lambda_mscma"] == 15.0, "params"].iloc[0])
    assert first == {"loss.lambda_mscma": 15.0, "model.image.num_scales": 1}

    best = trials.iloc[0]
    assert best["best_val_mr"] == trials["best_val_mr"].max()
    per_trial = history[history["trial_id"] == best["trial_id"]]
    assert best["best_val_mr"] == pytest.approx(per_trial["val_mr"].max())

    exported = yaml.safe_load((out / "best_config.yaml").read_text())
    assert "search" not in exported and exported["name"] == "tiny_best"
    assert exported["loss"]["lambda_mscma"] == pytest.approx(best["param.loss.lambda_mscma"])
    assert exported["model"]["image"]["num_scales"] == best["param.model.image.num_scales"]

    final = json.loads((out / "final" / "metrics.json").read_text())
    assert final["trial_id"] == best["trial_id"] and final["epoch"] == best["best_epoch"]
    assert set(KEYS) <= set(final["val"]) and set(KEYS) <= set(final["test"])
    # the final stage re-evaluates the selected checkpoint: val must match what the trial reported
    row = per_trial[per_trial["epoch"] == best["best_epoch"]].iloc[0]
    for key in KEYS:
        assert final["val"][key] == pytest.approx(row[f"val_{key}"], abs=1e-6)
    report = (out / "final" / "report.md").read_text()
    assert "paper settings" in report and best["trial_id"] in report and "test" in report

    for trial_id in trials.loc[~failed, "trial_id"]:
        events = list((out / "tensorboard" / trial_id).glob("events.out.tfevents.*"))
        assert events, f"no TensorBoard events for trial {trial_id}"
    assert (out / "ray" / "tune").is_dir()


def test_export_then_train_reproduces_trial(tuned: Path) -> None:
    out = tuned / "results" / "tiny"
    proc = msa("export", "results/tiny", "--out", "again.yaml", cwd=tuned)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert Path(proc.stdout.strip()) == Path("again.yaml")
    proc = msa("train", "again.yaml", "--num-cpus", "2", cwd=tuned)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch 2/2" in proc.stdout + proc.stderr
    trials = read_table(out / "trials.csv")
    history = read_table(out / "history.csv")
    trial = history[history["trial_id"] == trials.iloc[0]["trial_id"]].sort_values("epoch")
    rerun = read_table(tuned / "results" / "tiny_best" / "history.csv").sort_values("epoch")
    assert list(rerun["epoch"]) == list(trial["epoch"])
    for key in ["train_loss", *[f"val_{k}" for k in KEYS]]:
        assert rerun[key].to_numpy() == pytest.approx(trial[key].to_numpy(), abs=1e-4), key
    summary = json.loads((tuned / "results" / "tiny_best" / "metrics.json").read_text())
    assert Path(summary["checkpoint"], "meta.json").is_file()


def test_evaluate_cli_matches_final_stage(tuned: Path) -> None:
    proc = msa("evaluate", "results/tiny", "--split", "test", cwd=tuned)
    assert proc.returncode == 0, proc.stderr[-2000:]
    final = json.loads((tuned / "results" / "tiny" / "final" / "metrics.json").read_text())
    printed = dict(line.split() for line in proc.stdout.strip().splitlines())
    for key in KEYS:
        assert float(printed[key]) == pytest.approx(final["test"][key], abs=0.01)


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
    """final.retrain: the best config is retrained on train+val, then tested once."""
    exp = tiny_experiment(
        synth_data,
        name="retrain",
        search={
            "num_samples": 1,
            "scheduler": {"type": "fifo"},
            "space": {"loss.margin": {"uniform": [0.2, 0.6]}},
        },
        final={"retrain": True},
    )
    exp["train"]["epochs"] = 1
    write_yaml(tmp_path / "retrain.yaml", exp)
    proc = msa("tune", "retrain.yaml", "--num-cpus", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "results" / "retrain"
    final = json.loads((out / "final" / "metrics.json").read_text())
    assert final["retrained"] is True
    assert "/final/final-retrain/" in final["checkpoint"]
    meta = json.loads((Path(final["checkpoint"]) / "meta.json").read_text())
    assert "val_mr" not in meta["metrics"]  # no validation while training on train+val
    trial = read_table(out / "trials.csv").iloc[0]
    assert final["val"]["mr"] == pytest.approx(trial["best_val_mr"])
    assert set(KEYS) <= set(final["test"])
