"""One truth in every view (issue 22): the report's plots in the search's trial order, the
importances' caption, one status vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import optuna
import pandas as pd

from workflows.experiment.space import Distribution
from workflows.results.status import COMPLETE, FAIL, PRUNED, trial_status
from workflows.results.study_plots import draw_study, plot_study, study_from_table, trial_order

SPACE = [Distribution("loss.margin", "uniform", (0.0, 1.0))]
# (trial id, margin, best val_mr) in the order the search ran them; the last one failed
RAN = [("base", 0.2, 6.0), ("t1", 0.4, 12.0), ("t2", 0.6, 30.0), ("t3", 0.8, 9.0),
       ("t4", 0.9, None)]  # fmt: skip


def _table() -> pd.DataFrame:
    """trials.csv as written: sorted best first, the failed trial last."""
    rows = sorted(RAN, key=lambda r: (r[2] is None, -(r[2] or 0)))
    return pd.DataFrame(
        {
            "trial_id": [r[0] for r in rows],
            "status": [FAIL if r[2] is None else COMPLETE for r in rows],
            "params": [json.dumps({"loss.margin": r[1]}) for r in rows],
            "best_val_mr": [r[2] for r in rows],
        }
    )


def _history() -> pd.DataFrame:
    """history.csv: trial i started at 100 + 10 i; its rows listed in another order."""
    rows = [
        {"trial_id": trial_id, "epoch": epoch, "timestamp": 100 + 10 * i + 4 * epoch,
         "time_total_s": 4.0 * epoch}
        for i, (trial_id, _, best) in enumerate(RAN) if best is not None for epoch in (1, 2)
    ]  # fmt: skip
    return pd.DataFrame(rows[::-1])


def _history_points(fig: plt.Figure) -> list[tuple[float, float]]:
    """The (trial number, value) points of Optuna's optimization history plot."""
    (ax,) = fig.axes
    (dots,) = [c for c in ax.collections if c.get_label() == "Objective Value"]
    return [tuple(p) for p in dots.get_offsets().tolist()]


def test_history_plot_is_in_the_search_trial_order(tmp_path: Path) -> None:
    table, history = _table(), _history()
    assert trial_order(history) == ["base", "t1", "t2", "t3"]  # by start, not by score
    study = study_from_table(table, "val_mr", "max", SPACE, trial_order(history))
    fig = draw_study(study, SPACE)["history.png"]
    assert _history_points(fig) == [(0, 6.0), (1, 12.0), (2, 30.0), (3, 9.0)]
    plt.close("all")

    # the persisted study's order wins: its numbers are optuna-dashboard's
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    persisted = optuna.create_study(study_name="s", storage=url, direction="maximize")
    for trial_id in ["t3", "base", "t4", "t1", "t2"]:
        trial = persisted.ask()
        trial.set_user_attr("ray_trial_id", trial_id)
    order = trial_order(history, (url, "s"))
    assert order == ["t3", "base", "t4", "t1", "t2"]
    fig = draw_study(study_from_table(table, "val_mr", "max", SPACE, order), SPACE)["history.png"]
    assert _history_points(fig) == [(0, 9.0), (1, 6.0), (3, 12.0), (4, 30.0)]  # t4: failed
    plt.close("all")
    assert trial_order(history, (url, "other")) == ["base", "t1", "t2", "t3"]  # no such study


def test_importances_name_their_method_and_trial_count(tmp_path: Path) -> None:
    space = [*SPACE, Distribution("optim.lr", "loguniform", (1e-4, 1e-2))]
    table = pd.DataFrame(
        {
            "trial_id": [f"t{i}" for i in range(6)],
            "params": [
                json.dumps({"loss.margin": i / 6, "optim.lr": 1e-4 * (i + 1)}) for i in range(6)
            ],  # fmt: skip
            "best_val_mr": [float(i * i) for i in range(6)],
        }
    )
    captions = plot_study(study_from_table(table, "val_mr", "max", space), space, tmp_path)
    assert captions["importances.png"] == (
        "parameter importances (fANOVA from 6 trials' best values; fewer than 20 trials: a "
        "rough guide)"
    )
    assert captions["history.png"] == "optimization history"
    assert (tmp_path / "importances.png").is_file() and (tmp_path / "history.png").is_file()


def test_one_status_vocabulary() -> None:
    assert trial_status(False, 4, 4) == COMPLETE
    assert trial_status(False, 1, 4) == PRUNED  # stopped early by ASHA
    assert trial_status(True, 1, 4) == FAIL
    assert trial_status(False, 1, None) == COMPLETE  # epochs unknown: never PRUNED


def test_collapse_verdict_never_fires_on_a_trial_far_above_chance() -> None:
    """The real search's second-best trial (hardest-negative triplet at 2 x B x margin, image
    cosines 0.9998, val mR 25 at 5x chance) is not collapsed; a model whose embeddings all
    coincide (its val mR measured: 0 with ties counted against it) is."""
    import torch

    from msa_model.chance import chance_metrics
    from msa_model.collapse import collapse_reason
    from msa_model.config import LossConfig
    from msa_model.metrics import retrieval_metrics

    cfg = LossConfig(global_loss="triplet_hardest", margin=0.5, triplet_reduction="sum",
                     lambda_mscma=0.0, lambda_csmmc=0.0)  # fmt: skip
    chance = chance_metrics([5] * 100)["mr"]
    point = torch.randn(1, 8).expand(100, 8)
    collapsed_mr = retrieval_metrics(point, point.repeat(5, 1), torch.arange(100).repeat(5))["mr"]

    def run(val_mrs: list[float]) -> list[dict[str, float]]:
        return [{"epoch": e, "train_loss": 32.0, "train_diag_image_cos": 0.9998,
                 "train_diag_text_cos": 0.995, "val_mr": v}
                for e, v in enumerate(val_mrs, start=1)]  # fmt: skip

    assert 4.5 < chance < 5.5 and collapsed_mr <= chance
    assert collapse_reason(run([20.0, 25.0, 25.0]), cfg, 32, chance) is None  # 5x chance
    assert collapse_reason(run([5.0, 5.0, 25.0]), cfg, 32, chance) is None  # it learned after
    reason = collapse_reason(run([6.0, collapsed_mr, collapsed_mr]), cfg, 32, chance)
    assert reason is not None and reason.startswith("collapsed at epoch 2: mean pairwise cosine")
    assert reason.endswith(f"; val mR 0.00 <= 2 x chance {chance:.2f}")
    # without validation the embeddings alone decide, as before
    assert collapse_reason(run([25.0, 25.0]), cfg, 32).startswith("collapsed at epoch 2")


def _hparams(folder: Path) -> tuple[dict, int]:
    """A TensorBoard run's HParams (name -> value) and its end status (1 done, 2 failed)."""
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    from tests.test_trial_output import _events

    data = {
        v.tag: HParamsPluginData.FromString(v.metadata.plugin_data.content)
        for e in _events(folder) for v in e.summary.value if v.tag.startswith("_hparams_/")
    }  # fmt: skip
    values = {
        key: getattr(value, value.WhichOneof("kind"))
        for key, value in data["_hparams_/session_start_info"].session_start_info.hparams.items()
    }
    return values, data["_hparams_/session_end_info"].session_end_info.status


def test_tensorboard_holds_statuses_and_the_final_stage(tmp_path: Path) -> None:
    from ray.tune.experiment import Trial

    from tests.test_trial_output import _events
    from workflows.runtime.tensorboard import TuneTensorBoard, log_final_runs

    base = {"model.image.num_scales": 3, "optim.lr": 0.01}
    board = TuneTensorBoard(tmp_path, "demo", ["val_mr", "val_mr_best"], epochs=2, baseline=base)
    configs = {"b0": base, "c1": {**base, "optim.lr": 0.02}, "f2": {**base, "optim.lr": 0.03}}
    trials = [Trial("demo", config=c, trial_id=i, stub=True) for i, c in configs.items()]
    for trial in trials:
        board.on_trial_start(0, trials, trial)
    for trial, epochs in zip(trials, (2, 1, 1), strict=True):
        for epoch in range(1, epochs + 1):
            board.on_trial_result(epoch, trials, trial, {"epoch": epoch, "val_mr": 5.0 * epoch})
    board.on_trial_complete(2, trials, trials[0])
    board.on_trial_complete(1, trials, trials[1])  # stopped by ASHA after one epoch
    board.on_trial_error(1, trials, trials[2])
    got = {t.trial_id: _hparams(tmp_path / f"demo_{t.trial_id}") for t in trials}
    assert got["b0"] == ({"model.image.num_scales": "3", "optim.lr": 0.01, "status": "COMPLETE",
                          "baseline": True, "stage": "search", "trial": "b0"}, 1)  # fmt: skip
    assert got["c1"][0]["status"] == "PRUNED" and not got["c1"][0]["baseline"]
    assert (got["f2"][0]["status"], got["f2"][1]) == ("FAIL", 2)

    runs = [
        {"label": label, "seed": seed, "params": params, "baseline": label == "baseline",
         "epoch": 2, "val": {"mr": 10.0 + seed}, "test": {"mr": 9.0 + seed, "i2t_r1": 3.0}}
        for label, params in (("rank1", configs["c1"]), ("baseline", base)) for seed in (1, 2)
    ]  # fmt: skip
    folders = log_final_runs(tmp_path, runs, "val_mr")
    log_final_runs(tmp_path, runs[:1], "val_mr")  # a resumed final stage: replaced, not doubled
    names = sorted(p.name for p in (tmp_path / "final").iterdir())
    assert names == ["baseline_seed1", "baseline_seed2", "rank1_seed1", "rank1_seed2"]
    assert [f.name for f in folders] == ["rank1_seed1", "rank1_seed2", "baseline_seed1",
                                         "baseline_seed2"]  # fmt: skip
    values, status = _hparams(tmp_path / "final" / "baseline_seed2")
    assert (values["stage"], values["candidate"], values["seed"], values["baseline"]) == (
        "final",
        "baseline",
        2.0,
        True,
    )
    assert (values["status"], values["model.image.num_scales"], status) == ("COMPLETE", "3", 1)
    for name, seed in (("rank1_seed1", 1), ("baseline_seed2", 2)):
        scalars = sorted((e.step, v.tag, v.simple_value) for e in _events(tmp_path / "final" / name)
                         for v in e.summary.value if v.HasField("simple_value"))  # fmt: skip
        assert scalars == [(2, "test/test_i2t_r1", 3.0), (2, "test/test_mr", 9.0 + seed),
                           (2, "val/val_mr", 10.0 + seed)]  # fmt: skip
    (experiment,) = [v.tag for e in _events(tmp_path) for v in e.summary.value]  # written once
    assert experiment == "_hparams_/experiment"
