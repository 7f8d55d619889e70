"""The search's searcher and scheduler, the running best, and the final stage's candidates."""

from __future__ import annotations

import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from msa_model.config import ConfigError
from workflows.experiment import SearcherConfig, parse_experiment
from workflows.results.schema import Candidate
from workflows.runtime.final import final_seeds, pick_candidates
from workflows.runtime.searcher import (
    BASELINE_ATTR,
    RAY_ID_ATTR,
    BaselineASHA,
    baseline_point,
    make_sampler,
    make_scheduler,
    make_searcher,
)
from workflows.runtime.session import RunningBest, running_best_key
from workflows.runtime.space_tune import to_tune


def _exp(**search):
    return parse_experiment(
        {
            "name": "s",
            "loss": {"margin": 0.05},
            "train": {"epochs": 4},
            "search": {"space": {"loss.margin": {"uniform": [0.0, 1.0]}}, **search},
            "final": {"top_k": 2, "seeds": 3},
        }
    )


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp"])
def test_each_sampler_is_seeded(sampler: str) -> None:
    cfg = SearcherConfig(sampler=sampler, n_startup_trials=2)

    def suggestions(seed: int) -> list[dict]:
        study = optuna.create_study(sampler=make_sampler(cfg, seed), direction="maximize")
        study.optimize(
            lambda t: (
                -((t.suggest_float("x", 0.0, 1.0) - 0.3) ** 2) + t.suggest_categorical("k", [1, 2])
            ),
            n_trials=5,
        )
        return [t.params for t in study.trials]

    assert suggestions(0) == suggestions(0)
    assert suggestions(0) != suggestions(1)


def test_tpe_settings_reach_the_sampler_and_bad_ones_are_refused() -> None:
    tpe = make_sampler(SearcherConfig(n_startup_trials=3, multivariate=True), 0)
    assert isinstance(tpe, optuna.samplers.TPESampler)
    assert tpe._n_startup_trials == 3 and tpe._multivariate
    with pytest.raises(ConfigError, match="search.searcher.multivariate: only the tpe"):
        _exp(searcher={"sampler": "random", "multivariate": True})
    with pytest.raises(ConfigError, match="search.searcher.n_startup_trials"):
        _exp(searcher={"n_startup_trials": -1})
    with pytest.raises(ConfigError, match="final.seeds: must be >= 1"):
        parse_experiment({"name": "s", "final": {"seeds": 0}})


def test_searcher_starts_with_the_baseline_and_persists_its_study(tmp_path: Path) -> None:
    exp = _exp()
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    space = to_tune(exp.space)
    searcher = make_searcher(exp, url)
    searcher.set_search_properties("val_mr_best", "max", space)  # what Tune does first
    study = optuna.load_study(study_name="s", storage=url)  # created in the storage
    (first,) = study.trials  # the baseline, enqueued
    assert first.state == optuna.trial.TrialState.WAITING
    assert first.system_attrs["fixed_params"] == {"loss.margin": 0.05}
    restored = make_searcher(exp, url)  # --resume: Tune sets the searcher up again
    restored.set_search_properties("val_mr_best", "max", space)
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 1  # no second baseline
    more = make_searcher(exp, url, more=1)  # an extension: no second baseline, a new seed
    more.set_search_properties("val_mr_best", "max", space)
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 1
    assert isinstance(make_scheduler(exp), BaselineASHA)
    assert make_scheduler(exp).baseline == baseline_point(exp) == {"loss.margin": 0.05}


def test_study_tells_epochs_status_ray_id_and_baseline(tmp_path: Path) -> None:
    """Driven as Tune drives it: per-epoch values (not the running best), an early stop PRUNED,
    a full run COMPLETE with its best, a failure FAIL, a repeated epoch overwritten."""
    exp = _exp()
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    searcher = make_searcher(exp, url)
    searcher.set_search_properties("val_mr_best", "max", to_tune(exp.space))
    curves = {"base": [5.0, 9.0, 7.0, 8.0], "cut": [4.0, 3.0], "boom": [6.0]}
    for trial_id, curve in curves.items():
        searcher.suggest(trial_id)
        for epoch, value in enumerate(curve, start=1):
            result = {"epoch": epoch, "val_mr": value, "val_mr_best": max(curve[:epoch])}
            searcher.on_trial_result(trial_id, result)
    searcher.on_trial_result("cut", {"epoch": 2, "val_mr": 3.5, "val_mr_best": 4.0})  # restarted
    searcher.on_trial_complete("base", {"epoch": 4, "val_mr": 8.0, "val_mr_best": 9.0})
    searcher.on_trial_complete("cut", {"epoch": 2, "val_mr": 3.5, "val_mr_best": 4.0})
    searcher.on_trial_complete("boom", error=True)
    study = optuna.load_study(study_name="s", storage=url)
    assert study.metric_names == ["val_mr"]
    got = {
        t.user_attrs[RAY_ID_ATTR]: (t.state.name, t.value, t.intermediate_values,
                                    t.user_attrs[BASELINE_ATTR])
        for t in study.trials
    }  # fmt: skip
    assert got == {
        "base": ("COMPLETE", 9.0, {1: 5.0, 2: 9.0, 3: 7.0, 4: 8.0}, True),
        "cut": ("PRUNED", 3.5, {1: 4.0, 2: 3.5}, False),  # Optuna keeps the last epoch's value
        "boom": ("FAIL", None, {1: 6.0}, False),
    }


def test_running_best_is_the_best_so_far_including_epochs_before_a_restart() -> None:
    best = RunningBest("val_mr", "max", earlier=[4.0, None])
    seen = [best.add({"val_mr": v}).get("val_mr_best") for v in (3.0, 6.0, 5.0)]
    assert seen == [4.0, 6.0, 6.0]
    assert RunningBest("val_mr", "max").add({"train_loss": 1.0}) == {"train_loss": 1.0}
    low = RunningBest("train_loss", "min")
    assert [low.add({"train_loss": v})["train_loss_best"] for v in (3.0, 1.0, 2.0)] == [3, 1, 1]
    assert running_best_key("val_mr") == "val_mr_best"


def _table(rows: list[tuple[str, float | None, float]]) -> pd.DataFrame:
    """A sorted trials table: (trial id, margin, best val_mr)."""
    return pd.DataFrame(
        {
            "trial_id": [r[0] for r in rows],
            "status": ["TERMINATED"] * len(rows),
            "params": [f'{{"loss.margin": {r[1]}}}' for r in rows],
            "best_val_mr": [r[2] for r in rows],
        }
    )


def test_candidates_are_the_top_distinct_configs_and_the_baseline() -> None:
    exp = _exp()
    table = _table([("a", 0.5, 9.0), ("b", 0.5, 8.0), ("c", 0.7, 7.0), ("d", 0.05, 6.0)])
    cands = pick_candidates(table, exp)
    assert [(c.label, c.trial_id, c.rank) for c in cands] == [
        ("rank1", "a", 1),
        ("rank2", "c", 2),  # b repeats a's config
        ("baseline", "d", 3),
    ]
    assert cands[-1].baseline and cands[-1].params == {"loss.margin": 0.05}
    top = pick_candidates(_table([("d", 0.05, 9.0), ("a", 0.5, 8.0), ("c", 0.7, 7.0)]), exp)
    assert [c.label for c in top] == ["rank2", "baseline"]  # the baseline is in the top 2
    failed = pick_candidates(_table([("a", 0.5, 9.0), ("d", 0.05, float("nan"))]), exp)
    assert failed[-1] == Candidate("baseline", None, True, None, None, {"loss.margin": 0.05})
    assert final_seeds(exp) == [1, 2, 3]  # never the search's seed 0


@pytest.mark.ray
def test_asha_never_stops_the_baseline(tmp_path: Path) -> None:
    """A real Tune run: three fast trials beat the slow baseline at every rung first. Plain
    ASHA stops the baseline at its first rung; ours lets it train every epoch. The persisted
    study tells both: the stopped baseline PRUNED after one epoch, the kept one COMPLETE with
    each epoch's val_mr (which falls at epoch 3) and its best, both with their Ray ids."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    exp = _exp(num_samples=4, scheduler={"grace_period": 1})
    marks = tmp_path / "marks"
    marks.mkdir()
    metric = running_best_key("val_mr")

    def curve(margin: float) -> list[float]:
        return [100 * margin * f for f in (1.0, 1.2, 0.5, 1.1)]

    def trainable(config: dict) -> None:
        baseline = config["loss.margin"] == 0.05
        values = curve(config["loss.margin"])
        for epoch in range(1, 5):
            if baseline and epoch == 1:  # wait until the others reported their first epoch
                while len(list(marks.glob("*"))) < 3:
                    time.sleep(0.1)
                time.sleep(1.0)
            elif epoch == 1:
                (marks / tune.get_context().get_trial_id()).touch()
            best = max(values[:epoch])
            tune.report({"epoch": epoch, "val_mr": values[epoch - 1], metric: best})

    def baseline_run(scheduler, url: str) -> tuple[int, optuna.trial.FrozenTrial, str]:
        """The baseline's epochs, its trial in the study and its Ray trial id."""
        for mark in marks.glob("*"):
            mark.unlink()
        grid = tune.Tuner(
            trainable,
            param_space={"loss.margin": tune.uniform(0.1, 1.0)},
            tune_config=tune.TuneConfig(
                metric=metric,
                mode="max",
                search_alg=make_searcher(exp, url),
                scheduler=scheduler,
                num_samples=4,
                max_concurrent_trials=2,
            ),
            run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), verbose=0),
        ).fit()
        (result,) = [r for r in grid if r.config["loss.margin"] == 0.05]
        study = optuna.load_study(study_name="s", storage=url)
        assert study.metric_names == ["val_mr"]
        (trial,) = [t for t in study.trials if t.user_attrs[BASELINE_ATTR]]
        assert {t.user_attrs[RAY_ID_ATTR] for t in study.trials} == {
            r.metrics["trial_id"] for r in grid
        }
        return int(result.metrics["epoch"]), trial, result.metrics["trial_id"]

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        plain = ASHAScheduler(time_attr="epoch", max_t=5, grace_period=1, reduction_factor=2)
        epochs, stopped, ray_id = baseline_run(plain, f"sqlite:///{tmp_path / 'plain.db'}")
        assert epochs == 1
        assert stopped.state == optuna.trial.TrialState.PRUNED
        assert stopped.intermediate_values == {1: 5.0} and stopped.user_attrs[RAY_ID_ATTR] == ray_id
        epochs, kept, _ = baseline_run(make_scheduler(exp), f"sqlite:///{tmp_path / 'ours.db'}")
        assert epochs == 4
        assert kept.state == optuna.trial.TrialState.COMPLETE and kept.value == pytest.approx(6.0)
        assert kept.intermediate_values == pytest.approx(dict(enumerate(curve(0.05), start=1)))
    finally:
        ray.shutdown()
