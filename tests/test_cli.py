"""The `msa` CLI without a Ray cluster: data commands and error exits (called via main())."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workflows.cli import main


def test_data_synth_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "synth", str(tmp_path / "ds"), "--images", "30", "--size", "32"]) == 0
    assert (
        main(
            [
                "data",
                "check",
                str(tmp_path / "ds" / "dataset.json"),
                "--images",
                str(tmp_path / "ds" / "images"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    data = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    counts = {s: sum(im["split"] == s for im in data["images"]) for s in ("train", "val", "test")}
    for split, n in counts.items():
        assert any(line.split()[:2] == [split, str(n)] for line in out.splitlines()), out


def test_data_check_failure_exits_1_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "images").mkdir()
    bad = tmp_path / "bad.json"
    images = [
        {"filename": name, "split": split, "sentences": [{"raw": "a plane"}]}
        for name, split in (("a.png", "train"), ("c.png", "train"), ("b.png", "test"))
    ]
    bad.write_text(json.dumps({"images": images}))
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "b.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "c.png")
    assert main(["data", "check", str(bad), "--images", str(tmp_path / "images")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("msa: error:") and "a.png" in err and "b.png" not in err


def test_export_and_evaluate_name_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["export", str(tmp_path)]) == 1
    assert "no trials.csv" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 1
    assert "neither a checkpoint" in capsys.readouterr().err


def test_train_rejects_bad_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "x.yaml"
    cfg.write_text("name: x\n")
    assert main(["train", str(cfg), "--set", "optim.lr=-1"]) == 2
    assert "x.yaml: optim.lr: must be > 0" in capsys.readouterr().err
