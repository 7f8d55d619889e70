"""Experiment YAML: loading, validation messages, overrides and the search-space syntax."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from msa_model.config import ConfigError
from workflows.experiment import SEARCH_SPACES, apply_overrides, load_experiment, parse_experiment
from workflows.experiment.space import config_point, parse_space
from workflows.runtime.space_tune import to_tune


def _write(tmp_path: Path, data: dict, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", ["demo", "rsitmd", "rsicd"])
def test_shipped_experiments_load(name: str) -> None:
    exp = load_experiment(SEARCH_SPACES / f"{name}.yaml")
    assert exp.name == name
    assert exp.search is not None and "model.image.num_scales" in exp.search.space


def test_paper_settings_in_rsitmd() -> None:
    exp = load_experiment(SEARCH_SPACES / "rsitmd.yaml")
    assert exp.model.image.backbone == "resnet50" and exp.model.text.name == "bert-base-uncased"
    assert (exp.data.image_size, exp.train.batch_size, exp.optim.lr) == (224, 32, 1e-5)
    assert (exp.optim.weight_decay, exp.loss.lambda_mscma, exp.loss.lambda_csmmc) == (0.1, 15, 10)
    assert (exp.loss.csmmc_temperature, exp.loss.margin) == (2.0, 0.5)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"name": "x", "modle": {}}, "unknown section 'modle'"),
        ({"name": "x", "model": {"image": {"num_scale": 2}}}, "unknown key model.image.num_scale"),
        ({"name": "x", "loss": {"margin": "big"}}, "loss.margin: expected a number"),
        ({"name": "x", "train": {"epochs": 0}}, "train.epochs: must be >= 1"),
        ({"name": "x", "loss": {"csmmc_temperature": 0}}, "loss.csmmc_temperature: must be > 0"),
        ({"name": "x", "optim": {"amp": "fp8"}}, "optim.amp: 'fp8' is not one of"),
        (
            {"name": "x", "model": {"image": {"pretrained": "yes"}}},
            "model.image.pretrained: expected true/false",
        ),
        ({"model": {}}, "name: missing"),
        ({"name": "a/b"}, "name: must be"),
        (
            {"name": "x", "search": {"metric": "test_mr"}},
            "search.metric: 'test_mr' must be a validation",
        ),
        (
            {"name": "x", "search": {"space": {"loss.lambda": {"uniform": [1, 2]}}}},
            "search.space.loss.lambda: unknown key",
        ),
        ({"name": "x", "search": {"space": {"loss.margin": {"uniform": [2, 1]}}}}, "empty range"),
        (
            {"name": "x", "search": {"space": {"loss.margin": {"gauss": [0, 1]}}}},
            "unknown distribution 'gauss'",
        ),
        (
            {"name": "x", "search": {"space": {"optim.lr": {"loguniform": [0, 1]}}}},
            "positive lower bound",
        ),
        (
            {"name": "x", "search": {"space": {"loss.margin": {"uniform": [-1, 1]}}}},
            "value -1 is invalid: loss.margin: must be >= 0",
        ),
        (
            {"name": "x", "search": {"space": {"model.image.num_scales": {"choice": [1, "two"]}}}},
            "value 'two' is invalid",
        ),
        ({"name": "x", "search": {"space": {"loss": {"uniform": [0, 1]}}}}, "is a section"),
        (
            {"name": "x", "search": {"space": {"search.num_samples": {"choice": [1]}}}},
            "cannot be searched",
        ),
        (
            {"name": "x", "search": {"space": {"train.num_workers": {"choice": [1, 2]}}}},
            "search.space.train.num_workers: cannot be searched, every trial gets the same",
        ),
        (
            {"name": "x", "train": {"trial_launcher": "inline"}},
            "train.trial_launcher",
        ),
    ],
)
def test_bad_experiments_name_file_and_key(tmp_path: Path, data: dict, message: str) -> None:
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nloss:\n  margin: [0.5\n")
    with pytest.raises(ConfigError, match=r"broken.yaml: line \d+ invalid YAML"):
        load_experiment(path)


def test_overrides_parse_yaml_values() -> None:
    raw = apply_overrides(
        {"name": "x"}, ["loss.margin=0.3", "model.image.stage_indices=[1, 3]", "optim.amp=bf16"]
    )
    exp = parse_experiment(raw)
    assert (
        exp.loss.margin == 0.3
        and exp.model.image.stage_indices == [1, 3]
        and exp.optim.amp == "bf16"
    )
    with pytest.raises(ConfigError, match="expected key=value"):
        apply_overrides({}, ["loss.margin"])


def test_space_to_tune_and_config_point() -> None:
    exp = load_experiment(SEARCH_SPACES / "demo.yaml")
    base = exp.to_dict(with_search=False)
    dists = parse_space(exp.search.space, base, exp.with_params)
    assert config_point(dists, base) == {
        "model.image.num_scales": 4,
        "loss.lambda_mscma": 15.0,
        "loss.lambda_csmmc": 10.0,
        "loss.csmmc_temperature": 2.0,
        "loss.mscma_temperature": 1.0,
    }
    domains = to_tune(dists)
    assert domains["model.image.num_scales"].categories == [1, 2, 3, 4]
    assert (domains["loss.lambda_mscma"].lower, domains["loss.lambda_mscma"].upper) == (1.0, 30.0)


def test_to_dict_round_trip(tmp_path: Path) -> None:
    exp = load_experiment(SEARCH_SPACES / "demo.yaml")
    again = parse_experiment(yaml.safe_load(yaml.safe_dump(exp.to_dict())))
    assert again == exp


def test_with_params_sets_dotted_values_and_validates() -> None:
    exp = load_experiment(SEARCH_SPACES / "demo.yaml")
    trial = exp.with_params({"loss.margin": 0.35, "model.image.num_scales": 2, "name": "t"})
    assert (trial.loss.margin, trial.model.image.num_scales, trial.name) == (0.35, 2, "t")
    assert trial.search is None and exp.loss.margin != 0.35  # a new run; exp unchanged
    with pytest.raises(ConfigError, match=r"^trial 7: .*loss\.margin"):
        exp.with_params({"loss.margin": "wide"}, source="trial 7")


def test_require_search_types_the_search_and_names_the_file(tmp_path: Path) -> None:
    searched = load_experiment(SEARCH_SPACES / "demo.yaml").require_search()
    assert searched.search.metric == "val_mr" and searched.space  # typed: never None
    assert searched.require_search() is searched
    path = _write(tmp_path, {"name": "plain"})
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: no `search` section; use"):
        load_experiment(path).require_search()
