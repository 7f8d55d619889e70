"""``final/metrics.json``: its schema and numbers from hand-made runs; export reads its winner."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from msa_model.constants import METRIC_KEYS
from workflows.experiment import dump_experiment, parse_experiment
from workflows.results.export import export_best
from workflows.results.report import write_report
from workflows.results.schema import Candidate, FinalRun, FinalSummary, Gallery, write_final
from workflows.results.summary import final_summary

CANDIDATES = [
    Candidate("rank1", 1, False, "t1", 70.0, {"loss.margin": 0.3}),
    Candidate("rank2", 2, False, "t2", 69.0, {"loss.margin": 0.4}),
    Candidate("baseline", 5, True, "t5", 50.0, {"loss.margin": 0.5}),
]
VAL_MR = {"rank1": [60.0, 62.0, 64.0], "rank2": [63.0, 64.0, 65.0], "baseline": [50.0, 51.0, 55.0]}
TEST_MR = {"rank1": [58.0, 59.0, 60.0], "rank2": [61.0, 61.0, 64.0], "baseline": [52.0, 50.0, 55.0]}


def _runs() -> list[FinalRun]:
    runs = []
    for label in VAL_MR:
        for seed in (3, 1, 2):  # listed in any order, summarised by seed
            val = {k: VAL_MR[label][seed - 1] + 1 for k in METRIC_KEYS}
            test = {k: TEST_MR[label][seed - 1] - 1 for k in METRIC_KEYS}
            val["mr"], test["mr"] = VAL_MR[label][seed - 1], TEST_MR[label][seed - 1]
            ckpt = f"/ckpt/{label}-{seed}"
            runs.append(FinalRun(label, seed, f"{label}-{seed}", ckpt, 4, val, test))
    return runs


def _final() -> FinalSummary:
    gallery = {"val": Gallery(100, 500, dict.fromkeys(METRIC_KEYS, 5.0))}
    return final_summary(
        CANDIDATES,
        _runs(),
        metric="val_mr",
        mode="max",
        epochs=8,
        seeds=[1, 2, 3],
        retrained=False,
        gallery=gallery,
        search_trials=8,
    )


def test_schema_winner_and_paired_comparison() -> None:
    final = json.loads(json.dumps(_final().to_json()))  # what metrics.json holds
    assert final["schema_version"] == 1
    assert {"baseline", "winner", "candidates", "comparison", "gallery", "seeds"} <= set(final)
    for cand in [final["winner"], final["baseline"], *final["candidates"]]:
        assert {"label", "params", "seeds", "val", "test", "trial_id", "rank"} <= set(cand)
        assert [r["seed"] for r in cand["seeds"]] == [1, 2, 3]
        for split in ("val", "test"):
            assert set(cand[split]) == set(METRIC_KEYS)
            assert set(cand[split]["mr"]) == {"n", "mean", "std", "ci95"}
    # the best mean validation mR wins (rank2: 64), not the best search score (rank1)
    assert final["winner"]["label"] == "rank2" and final["baseline"]["label"] == "baseline"
    assert final["winner"]["val"]["mr"]["mean"] == pytest.approx(64.0)
    assert final["winner"]["val"]["i2t_r1"]["mean"] == pytest.approx(65.0)
    # the winner's best-validation seed (rank2's val mR 63, 64, 65 for seeds 1, 2, 3)
    assert final["checkpoint"] == "/ckpt/rank2-3" and final["params"] == {"loss.margin": 0.4}
    # paired by seed: val differences 13, 13, 10 -> mean 12, std sqrt(3), t(0.975, 2) = 4.302653
    diff = final["comparison"]["val"]["mr"]
    half = 4.302653 * 3**0.5 / 3**0.5
    assert diff["mean"] == pytest.approx(12.0) and diff["std"] == pytest.approx(3**0.5)
    assert diff["ci95"] == pytest.approx([12.0 - half, 12.0 + half], abs=1e-5)
    assert final["comparison"]["val"]["verdict"] == "better than the baseline (CI excludes 0)"
    # test differences 9, 11, 9: mean 9.667, std 1.1547, half 2.8684: excludes 0 too
    assert final["comparison"]["test"]["mr"]["mean"] == pytest.approx(29 / 3)
    assert final["comparison"]["test"]["seeds"] == [1, 2, 3]


def test_report_and_export_read_the_winner(tmp_path: Path) -> None:
    exp = parse_experiment(
        {"name": "x", "search": {"space": {"loss.margin": {"uniform": [0.1, 0.9]}}}}
    )
    out = tmp_path / "x"
    (out / "final").mkdir(parents=True)
    dump_experiment(exp, out / "experiment.yaml")
    rows = [
        ("t1", 0.3, 70.0), ("t2", 0.4, 69.0), ("t3", 0.6, 60.0), ("t4", 0.7, 55.0),
        ("t5", 0.5, 50.0), ("t6", 0.8, 40.0), ("t7", 0.2, 30.0), ("t8", 0.1, 20.0),
    ]  # fmt: skip
    table = "trial_id,status,param.loss.margin,params,best_val_mr,best_epoch,epochs,time_s,"
    table += "collapsed\n" + "".join(
        f'{i},TERMINATED,{m},"{{""loss.margin"": {m}}}",{s},4,8,1.0,{i == "t7"}\n'
        for i, m, s in rows
    )
    (out / "trials.csv").write_text(table)
    final = _final()
    first = dataclasses.replace(final.winner.runs[0], examples={
        "image_to_text": [{"image": "x.png", "hits": [
            {"caption": "a port", "right": True, "score": 0.91},
            {"caption": "a farm", "right": False, "score": 0.5}]}],
        "text_to_image": [{"caption": "a farm", "image": "y.png", "hits": [
            {"image": "x.png", "right": False, "score": 0.5}]}],
    })  # fmt: skip
    winner = dataclasses.replace(final.winner, runs=(first, *final.winner.runs[1:]))
    final = dataclasses.replace(final, winner=winner)
    assert final.best_run is not None and final.best_run.seed == 3  # its best val score
    history = pd.DataFrame({"trial_id": ["t1", "t1"], "epoch": [1, 2], "val_mr": [50.0, 70.0]})
    without_best = write_report(
        out / "final", name="x", table=pd.read_csv(out / "trials.csv", dtype={"trial_id": str}),
        history=history, final=final, space=exp.space,
    ).read_text()  # fmt: skip
    assert "## Example queries on the test split (winner, seed 1)" in without_best  # the only ones
    best_examples = {"image_to_text": [{"image": "z.png", "hits": []}], "text_to_image": []}
    runs = [r if r.seed != 3 else dataclasses.replace(r, examples=best_examples)
            for r in final.winner.runs]  # fmt: skip
    with_best = dataclasses.replace(final, winner=dataclasses.replace(winner, runs=tuple(runs)))
    shown = write_report(
        out / "final", name="x", table=pd.read_csv(out / "trials.csv", dtype={"trial_id": str}),
        history=history, final=with_best, space=exp.space,
    ).read_text()  # fmt: skip
    assert "## Example queries on the test split (winner, seed 3)" in shown  # what export takes
    assert "**Image `z.png`**" in shown and "x.png" not in shown.split("seed 3)")[1]
    write_final(out / "final" / "metrics.json", final)
    (best,) = export_best(out)
    assert yaml.safe_load(best.read_text())["loss"]["margin"] == 0.4  # rank2, the winner
    assert "final stage, rank2 (search trial t2): mean val_mr 64.0000 over 3" in best.read_text()
    ranked = export_best(out, top=3, out=tmp_path / "top")
    margins = [yaml.safe_load(p.read_text())["loss"]["margin"] for p in ranked]
    assert margins == [0.4, 0.3, 0.5]  # winner, then by mean val mR
    header, body = table.split("\n", 1)  # one more trial, now the best:
    (out / "trials.csv").write_text(
        f'{header}\nt9,TERMINATED,0.9,"{{""loss.margin"": 0.9}}",99,4,8,1,False\n{body}'
    )
    (best,) = export_best(out)  # a trial added since the final stage: the search's ranking
    assert yaml.safe_load(best.read_text())["loss"]["margin"] == 0.9

    report = write_report(
        out / "final",
        name="x",
        table=pd.read_csv(out / "trials.csv", dtype={"trial_id": str}),
        history=history,
        final=final,
        space=exp.space,
    ).read_text()
    assert (
        "`rank2` - `baseline` = +12.00 mr points (95% CI [7.70, 16.30], 3 seeds paired): " in report
    )
    assert "**better than the baseline (CI excludes 0)**" in report
    assert "validation 100 images / 500 captions (chance mr 5.00)" in report
    assert "| rank2 | 3 | 65.00 ± 1.00 [62.52, 67.48] |" in report
    examples = report.split("## Example queries on the test split (winner, seed 1)")[1]
    assert "**Image `x.png`**, its best captions:\n\n1. ✓ a port (0.910)\n2. ✗ a farm (0.500)" in (
        examples
    )
    assert '**Caption** "a farm" (of `y.png`), its best images:\n\n1. ✗ `x.png` (0.500)' in examples
    assert "read `rank2` seed 3 (its best validation mr): `/ckpt/rank2-3`." in report
    trials = report.split("### All trials")[1]
    assert (
        "| trial_id | status | loss.margin | best_val_mr | best_epoch | epochs | time_s | "
        "collapsed |" in trials
    )
    assert "| t7 | TERMINATED | 0.2 | 30 | 4 | 8 | 1 | yes |" in trials
    assert "| t6 | TERMINATED | 0.8 | 40 | 4 | 8 | 1 |  |" in trials
    for png in ("val_curves.png", "final.png", "importances.png", "slices.png", "history.png"):
        assert (out / "final" / png).is_file(), png


def test_study_plot_axes_tick_integers_and_plain_log_values() -> None:
    import matplotlib.pyplot as plt

    from workflows.experiment.space import Distribution
    from workflows.results.study_plots import integer_keys, readable_axes

    space = [Distribution("model.image.num_scales", "choice", (1, 2, 3, 4)),
             Distribution("loss.lambda_mscma", "loguniform", (0.1, 30.0))]  # fmt: skip
    assert integer_keys(space) == {"model.image.num_scales"}
    fig, (scales, weight) = plt.subplots(1, 2)
    scales.plot([1, 2], [3.0, 5.0])
    scales.set_xlabel("model.image.num_scales")
    weight.plot([0.1, 3.0, 30.0], [1.0, 2.0, 3.0])
    weight.set_xscale("log")
    readable_axes(fig, integer_keys(space))
    fig.canvas.draw()
    ticks = [t for t in scales.get_xticks() if 1 <= t <= 2]
    assert ticks and all(t == int(t) for t in ticks)  # Matplotlib alone: 1.0, 1.25, 1.5, ...
    labels = [t.get_text() for t in weight.get_xticklabels() if t.get_text()]
    assert {"0.2", "1", "5", "10"} <= set(labels)  # 1-2-5 in plain numbers, not 10^0 alone
    plt.close(fig)


def test_checkpoint_is_the_best_validation_seed_else_the_first() -> None:
    final = _final()
    assert final.best_run.seed == 3 and final.checkpoint == "/ckpt/rank2-3"
    minimise = dataclasses.replace(final, mode="min")  # the lowest val mR of rank2: seed 1
    assert minimise.best_run.seed == 1 and minimise.checkpoint == "/ckpt/rank2-1"
    runs = tuple(dataclasses.replace(r, val=None) for r in final.winner.runs)
    no_val = dataclasses.replace(final, winner=dataclasses.replace(final.winner, runs=runs))
    assert no_val.best_run.seed == 1 and no_val.checkpoint == "/ckpt/rank2-1"  # train+val
