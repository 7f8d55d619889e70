"""`msa data` synth/check/import through main(): flags, exit codes and messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from workflows.cli import main


def test_synth_refuses_zero_images_and_existing_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "synth", str(tmp_path / "ds"), "--images", "0"])
    assert exit_info.value.code == 2
    assert "--images: must be >= 1, got 0" in capsys.readouterr().err
    args = ["data", "synth", str(tmp_path / "ds"), "--images", "4", "--size", "32"]
    assert main(args) == 0
    assert main(args) == 1
    assert (
        "holds a synthetic dataset already; pass overwrite=True (msa data synth "
        "--overwrite)" in capsys.readouterr().err
    )
    assert main([*args, "--overwrite"]) == 0


def test_check_split_options_and_required_test(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "images").mkdir()
    entries = [
        {"filename": f"{i}.png", "split": "train", "sentences": [{"raw": f"c {i}"}]}
        for i in range(10)
    ]
    for entry in entries:
        Image.new("RGB", (8, 8)).save(tmp_path / "images" / entry["filename"])
    (tmp_path / "d.json").write_text(json.dumps({"images": entries}))
    base = ["data", "check", str(tmp_path / "d.json"), "--images", str(tmp_path / "images")]
    assert main([*base, "--val-fraction", "0.4"]) == 0
    rows = {
        line.split()[0]: line.split()[1]
        for line in capsys.readouterr().out.splitlines()
        if line.split() and line.split()[0] in ("train", "val")
    }
    assert rows == {"train": "6", "val": "4"}
    assert main([*base, "--require-test"]) == 1
    assert "split 'test' has no images (train=9, val=1, test=0)" in capsys.readouterr().err


def test_import_coco_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "images").mkdir()
    files = {}
    for split, names in (("train", ["a.jpg", "b.jpg", "c.jpg"]), ("test", ["d.jpg"])):
        images = [{"id": i, "file_name": n} for i, n in enumerate(names)]
        notes = [{"image_id": i, "caption": f"scene {n}"} for i, n in enumerate(names)]
        files[split] = tmp_path / f"{split}.json"
        files[split].write_text(json.dumps({"images": images, "annotations": notes}))
        for n in names:
            Image.new("RGB", (8, 8), (40, 80, 120)).save(tmp_path / "images" / n)
    out = tmp_path / "dataset.json"
    command = [
        "data",
        "import",
        "coco",
        "--train",
        str(files["train"]),
        "--test",
        str(files["test"]),
        "--out",
        str(out),
        "--name",
        "rsicd",
    ]
    assert main(command) == 0
    assert "4 images (train 3, val 0, test 1), 4 captions" in capsys.readouterr().out
    assert main(command) == 1
    assert "exists already" in capsys.readouterr().err
    assert (
        main(["data", "check", str(out), "--images", str(tmp_path / "images"), "--require-test"])
        == 0
    )
    assert main(["data", "import", "karpathy", "--out", str(tmp_path / "x.json")]) == 1
    assert "give exactly one JSON file" in capsys.readouterr().err
