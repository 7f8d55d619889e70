"""Experiments that inherit (``base: other.yaml``): merged values, errors naming the file, cycles
refused; the shipped presets written on it; exported configs self-contained."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from msa_model.config import ConfigError
from tests.conftest import write_yaml
from workflows.experiment import SEARCH_SPACES, dump_experiment, load_experiment
from workflows.experiment.inherit import deep_merge, load_with_bases

BASE = {
    "name": "parent",
    "data": {"image_size": 32, "augment": ["hflip", "vflip"], "val_fraction": 0.2},
    "model": {"embed_dim": 32, "image": {"backbone": "resnet10t", "num_scales": 2}},
    "optim": {"lr": 1e-3, "head_lr": 1e-2},
}


def test_deep_merge_merges_mappings_and_replaces_the_rest() -> None:
    child = {
        "data": {"augment": ["rot90"], "val_fraction": 0.1},  # a list replaces, never appends
        "model": {"image": {"num_scales": 4}},  # nested mappings merge key by key
        "optim": {"head_lr": None},  # null replaces too
        "loss": {"margin": 0.3},  # a new section
    }
    merged = deep_merge(BASE, child)
    assert merged == {
        "name": "parent",
        "data": {"image_size": 32, "augment": ["rot90"], "val_fraction": 0.1},
        "model": {"embed_dim": 32, "image": {"backbone": "resnet10t", "num_scales": 4}},
        "optim": {"lr": 1e-3, "head_lr": None},
        "loss": {"margin": 0.3},
    }
    assert BASE["model"]["image"]["num_scales"] == 2  # inputs untouched
    merged["data"]["augment"].append("vflip")
    assert child["data"]["augment"] == ["rot90"]  # the result shares nothing with them


def test_a_chain_of_bases_resolves_relative_to_each_file(tmp_path: Path) -> None:
    (tmp_path / "common").mkdir()
    write_yaml(tmp_path / "common" / "parent.yaml", BASE)
    write_yaml(tmp_path / "common" / "middle.yaml", {"base": "parent.yaml", "optim": {"lr": 0.01}})
    (tmp_path / "runs").mkdir()
    child = write_yaml(
        tmp_path / "runs" / "child.yaml",
        {"base": "../common/middle.yaml", "name": "child", "model": {"embed_dim": 64}},
    )
    raw, chain = load_with_bases(child)
    assert chain == [child, (tmp_path / "common/middle.yaml"), (tmp_path / "common/parent.yaml")]
    assert "base" not in raw
    exp = load_experiment(child, ["optim.head_lr=0.5"])  # --set applies over the merged file
    assert (exp.name, exp.model.embed_dim, exp.model.image.num_scales) == ("child", 64, 2)
    assert (exp.optim.lr, exp.optim.head_lr, exp.data.augment) == (0.01, 0.5, ["hflip", "vflip"])


def test_a_bare_base_name_falls_back_to_the_shipped_presets(tmp_path: Path) -> None:
    mine = write_yaml(
        tmp_path / "mine.yaml", {"base": "demo.yaml", "name": "mine", "train": {"epochs": 1}}
    )
    exp, demo = load_experiment(mine), load_experiment(SEARCH_SPACES / "demo.yaml")
    assert (exp.name, exp.train.epochs) == ("mine", 1)
    assert exp.to_dict() == {
        **demo.to_dict(),
        "name": "mine",
        "train": {**demo.to_dict()["train"], "epochs": 1},
    }


def test_errors_name_the_file(tmp_path: Path) -> None:
    missing = write_yaml(tmp_path / "missing.yaml", {"base": "nowhere.yaml", "name": "x"})
    with pytest.raises(ConfigError) as err:
        load_experiment(missing)
    message = str(err.value)
    assert message.startswith(f"{missing}: base: 'nowhere.yaml' not found (looked for ")
    assert str(tmp_path / "nowhere.yaml") in message
    assert str(SEARCH_SPACES / "nowhere.yaml") in message

    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    child = write_yaml(tmp_path / "child.yaml", {"base": "list.yaml", "name": "x"})
    with pytest.raises(ConfigError, match=rf"^{listed}: expected a mapping at the top level$"):
        load_experiment(child)

    number = write_yaml(tmp_path / "number.yaml", {"base": 3, "name": "x"})
    with pytest.raises(ConfigError, match=rf"^{number}: base: expected a file name .* got 3$"):
        load_experiment(number)

    write_yaml(tmp_path / "typo.yaml", {**BASE, "loss": {"margn": 0.2}})
    child = write_yaml(tmp_path / "uses_typo.yaml", {"base": "typo.yaml", "name": "x"})
    with pytest.raises(ConfigError) as err:
        load_experiment(child)
    assert str(err.value) == (
        f"{child} (base: {tmp_path / 'typo.yaml'}): unknown key loss.margn (allowed: "
        + str(err.value).split("(allowed: ", 1)[1]
    )


def test_cycles_are_refused_naming_the_chain(tmp_path: Path) -> None:
    a = write_yaml(tmp_path / "a.yaml", {"base": "b.yaml", "name": "a"})
    write_yaml(tmp_path / "b.yaml", {"base": "./a.yaml"})
    with pytest.raises(ConfigError) as err:
        load_experiment(a)
    assert str(err.value) == (
        f"{a}: base: a cycle of bases ({a} -> {tmp_path / 'b.yaml'} -> {tmp_path / 'a.yaml'})"
    )
    itself = write_yaml(tmp_path / "self.yaml", {"base": "self.yaml", "name": "s"})
    with pytest.raises(ConfigError, match="a cycle of bases"):
        load_experiment(itself)


PAIRS = [
    ("rsitmd.yaml", "rsicd.yaml"),
    ("rsitmd_reference.yaml", "rsicd_reference.yaml"),
    ("rsitmd_lite.yaml", "rsicd_lite.yaml"),
]


@pytest.mark.parametrize(("child", "base"), PAIRS)
def test_shipped_presets_differ_from_their_base_in_name_and_data(child: str, base: str) -> None:
    ours, theirs = load_experiment(SEARCH_SPACES / child), load_experiment(SEARCH_SPACES / base)
    assert yaml.safe_load((SEARCH_SPACES / child).read_text())["base"] == base
    a, b = ours.to_dict(), theirs.to_dict()
    assert {k for k in a if a[k] != b[k]} == {"name", "data"}
    changed = {k for k in a["data"] if a["data"][k] != b["data"][k]}
    assert changed == (
        {"json", "images", "test_fraction"} if "lite" in child else {"json", "images"}
    )
    assert list(a["search"]["space"]) == list(b["search"]["space"])  # same order: same trials


def test_an_exported_preset_is_self_contained(tmp_path: Path) -> None:
    exp = load_experiment(SEARCH_SPACES / "rsitmd_reference.yaml")  # two bases deep
    path = dump_experiment(exp, tmp_path / "elsewhere" / "best_config.yaml", with_search=False)
    text = path.read_text()
    assert "base:" not in text and "paper settings" not in text
    again = load_experiment(path)
    assert again.to_dict() == exp.to_dict(with_search=False)
    assert again.model.mscmat.init == "reference"
    assert again.data.json.endswith("dataset_rsitmd.json")
