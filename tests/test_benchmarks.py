"""Smoke test of the benchmark runner at tiny sizes: the table and the JSON's structure only.

No timing assertions: the numbers depend on the machine and its load. The tuning-overhead
benchmark needs a Ray cluster (minutes), so only its pure helpers run here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from benchmarks import runner
from benchmarks.bench_overhead import ProcessTreeSampler, summarise


def test_quick_runner_writes_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = runner.main(
        ["--quick", "--only", "mscmat,metrics", "--only", "train_step", "--out", str(tmp_path)]
    )
    assert code == 0
    table = capsys.readouterr().out
    header = next(line for line in table.splitlines() if line.startswith("benchmark"))
    assert header.replace(" ", "") == "benchmark|case|fast/measured|baseline|ratio|target|met"
    reports = sorted(tmp_path.glob("*.json"))
    assert [p.name for p in reports if p.name != "latest.json"], "no timestamped report"
    latest = json.loads((tmp_path / "latest.json").read_text())
    assert latest["quick"] is True
    machine = latest["machine"]
    for key in ("cpu_model", "cpu_cores", "torch", "ray", "memory_gib"):
        assert machine[key], key
    assert list(latest["benchmarks"]) == ["mscmat", "metrics", "train_step"]
    for name, entry in latest["benchmarks"].items():
        assert "error" not in entry, (name, entry.get("error"))
        assert entry["rows"] and entry["checks"], name
        for check in entry["checks"]:
            assert set(check) == {
                "bench",
                "case",
                "value",
                "unit",
                "baseline",
                "ratio",
                "target",
                "met",
            }
            assert check["bench"] == name and check["value"] >= 0
    step = latest["benchmarks"]["train_step"]["rows"][0]
    assert step["step_samples_per_s"] > 0 and step["loader_cold_samples_per_s"] > 0


def test_check_targets_and_table() -> None:
    fast = runner.Check("x", "speed", 1.0, "s", 30.0, 30.0, ">= 20")
    slow = runner.Check("x", "share", 0.4, "%", target="<= 0.15")
    plain = runner.Check("x", "time", 2.0, "s")
    assert fast.met is True and slow.met is False and plain.met is None
    table = runner.format_table([fast, slow, plain])
    assert "<= 15%" in table and "40.0%" in table and "30x" in table
    assert table.splitlines()[2].endswith("yes") and table.splitlines()[3].endswith("NO")


def test_unknown_benchmark_is_refused() -> None:
    with pytest.raises(SystemExit, match="unknown benchmark"):
        runner.main(["--only", "nope"])


def test_overhead_summary_and_sampler() -> None:
    trials = pd.DataFrame(
        {
            "trial_id": ["aa11", "bb22"],
            "status": ["TERMINATED", "STOPPED"],
            "epochs": [2, 1],
            "train_s": [8.0, 3.0],
            "time_s": [10.0, 6.0],
        }
    )
    lines = [
        (1.0, "Trial demo_aa11 started with configuration:"),
        (1.5, "Trial demo_bb22 started with configuration:"),
        (12.0, "Trial demo_aa11 completed after 2 iterations at 2026-01-01"),
        (9.5, "Trial demo_bb22 completed after 1 iterations at 2026-01-01"),
    ]
    rows = summarise(trials, lines)
    assert [r["overhead"] for r in rows] == pytest.approx([0.2, 0.5])
    assert rows[0]["span_s"] == pytest.approx(11.0) and rows[1]["span_s"] == pytest.approx(8.0)

    sampler = ProcessTreeSampler(os.getpid(), interval=0.05)
    sampler.start()
    sum(i * i for i in range(300_000))  # some CPU in this process
    sampler.stop()
    summary = sampler.summary()
    assert summary["processes"] >= 1 and summary["tune_cpu_s"] > 0
    assert 0 <= summary["cpu_busy_machine"] <= 1


def test_finetune_arms_around_a_winner() -> None:
    """`real_rsicd --suite finetune --winner`: frozen vs the winner's tower tops, each alone,
    with MSA at the paper's weights and at the winner's; a frozen winner gets the preset's tops."""
    import copy

    from benchmarks.real_rsicd import finetune_arms
    from msa_model.config import load_yaml
    from workflows.experiment import SEARCH_SPACES

    preset = load_yaml(SEARCH_SPACES / "rsicd_finetune.yaml")
    winner = copy.deepcopy(preset)
    winner["model"]["text"]["trainable_layers"] = 1
    winner["optim"]["lr"] = 3.0e-5
    winner["loss"].update(global_loss="infonce", lambda_mscma=0.5, lambda_csmmc=2.0)
    arms, pairs = finetune_arms(preset, winner)
    top = "top (image 0, text 1; searched), infonce"
    assert list(arms) == [
        "frozen, infonce",
        "frozen, infonce + MSA (paper)",
        "frozen, infonce + MSA (searched)",
        top,
        f"{top} + MSA (paper)",
        f"{top} + MSA (searched)",
    ]
    assert arms["frozen, infonce"]["model.text.trainable_layers"] == 0
    assert arms["frozen, infonce"]["loss.lambda_mscma"] == 0.0
    assert "loss.lambda_mscma" not in arms[f"{top} + MSA (paper)"]  # the preset's: 15
    assert arms[f"{top} + MSA (searched)"]["loss.lambda_mscma"] == 0.5
    assert arms[top]["optim.lr"] == 3.0e-5 and arms[top]["model.text.trainable_layers"] == 1
    assert (top, "frozen, infonce") in pairs and len(pairs) == 6
    winner["model"]["text"]["trainable_layers"] = 0
    arms, _ = finetune_arms(preset, winner)
    assert "top (image 0, text 2; preset), infonce" in arms
