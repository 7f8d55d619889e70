"""`check_dataset`: one precise message per kind of bad input, and the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from msa_model.config import DataConfig
from msa_model.data import DatasetError, check_data, check_dataset, format_report
from msa_model.data.karpathy import make_splits, read_karpathy
from tests.test_datasets import rgb16_png


def _entry(name: str, split: str, *captions: str) -> dict:
    return {
        "filename": name,
        "split": split,
        "sentences": [{"raw": c, "tokens": c.split()} for c in captions or ("a caption",)],
    }


def _dataset(tmp_path: Path, entries: list[dict], images: list[str] | None = None) -> Path:
    """Write dataset.json and one real image per entry (or per name in ``images``)."""
    image_dir = tmp_path / "images"
    image_dir.mkdir(exist_ok=True)
    names = images if images is not None else [e["filename"] for e in entries]
    for i, name in enumerate(names):
        (image_dir / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i * 20 % 256, 90, 160)).save(image_dir / name)
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"images": entries}))
    return path


def _good() -> list[dict]:
    return [
        _entry(
            "a.png",
            "train",
            "two planes are parked near the terminal .",
            "many planes .",
            "a runway .",
        ),
        _entry("b.jpg", "train", "a river .", "a river .", "green trees beside a river ."),
        _entry("c.tif", "val", "a runway .", "some buildings ."),
        _entry("d.png", "test", "a bridge over the river .", "a runway ."),
    ]


def test_valid_dataset_report(tmp_path: Path) -> None:
    path = _dataset(tmp_path, _good(), images=["a.png", "b.jpg", "c.tif", "d.png", "extra.png"])
    report = check_dataset(path, tmp_path / "images")
    assert list(report.splits) == ["train", "val", "test"]
    train = report.splits["train"]
    assert (train.images, train.captions, train.captions_per_image) == (2, 6, (3, 3))
    assert train.words == (2, 20 / 6, 7)
    assert report.duplicate_captions == 2  # "a runway ." x3 and "a river ." x2
    assert report.duplicate_examples[0] == ("a runway .", 3)
    assert report.images_repeating_a_caption == 1
    assert report.unlisted_files == 1
    text = format_report(report)
    for expected in (
        "train",
        "val",
        "test",
        "total",
        "2 / 3.3 / 7",
        "'a runway .'",
        "duplicate captions: 2",
        "not listed in the JSON: 1",
    ):
        assert expected in text, expected


def test_report_without_val_shows_the_split_training_carves(tmp_path: Path) -> None:
    entries = [e for e in _good() if e["split"] != "val"]
    report = check_dataset(_dataset(tmp_path, entries), tmp_path / "images")
    assert report.carved_val
    assert {name: s.images for name, s in report.splits.items()} == {
        "train": 1,
        "val": 1,
        "test": 1,
    }
    assert "val carved out of train by image" in format_report(report)


def test_check_data_carves_as_training_does(tmp_path: Path) -> None:
    entries = [_entry(f"t{i}.png", "train") for i in range(10)] + [_entry("x.png", "test")]
    path = _dataset(tmp_path, entries)
    cfg = DataConfig(
        json=str(path), images=str(tmp_path / "images"), val_fraction=0.3, split_seed=5
    )
    report = check_data(cfg)
    training = make_splits(read_karpathy(path), 0.3, 5)
    assert report.splits["train"].images == len(training["train"]) == 7
    assert report.splits["val"].images == len(training["val"]) == 3


def test_one_training_image_fails_as_in_training(tmp_path: Path) -> None:
    path = _dataset(tmp_path, [_entry("a.png", "train"), _entry("d.png", "test")])
    with pytest.raises(DatasetError, match="need at least 2"):
        make_splits(read_karpathy(path), 0.1, 0)  # what training does
    with pytest.raises(
        DatasetError,
        match=r"dataset.json: cannot carve a validation split "
        r"from 1 training image\(s\); need at least 2",
    ):
        check_dataset(path, tmp_path / "images")


def test_malformed_json(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    path.write_text('{"images": [\n  {"filename": "a.png",, }\n]}')
    with pytest.raises(DatasetError, match=r"dataset.json: invalid JSON at line 2 column 24"):
        check_dataset(path, tmp_path)


@pytest.mark.parametrize(
    ("index", "change", "expected"),
    [
        (1, {"sentences": None}, "images[1] (b.jpg): 'sentences' must be a list"),
        (2, {"split": "validation"}, "images[2] (c.tif): unknown split 'validation'"),
        (
            0,
            {"sentences": [{"raw": "ok"}, {"raw": ""}]},
            "images[0] (a.png): sentences[1].raw is an empty caption",
        ),
        (3, {"filename": "../d.png"}, "images[3] (../d.png): filename contains '..'"),
        (3, {"filename": "/abs/d.png"}, "images[3] (/abs/d.png): filename is an absolute path"),
    ],
)
def test_bad_entries(tmp_path: Path, index: int, change: dict, expected: str) -> None:
    entries = _good()
    path = _dataset(tmp_path, entries)
    entries[index].update(change)
    path.write_text(json.dumps({"images": entries}))
    with pytest.raises(DatasetError) as info:
        check_dataset(path, tmp_path / "images")
    assert expected in str(info.value)


def test_missing_key(tmp_path: Path) -> None:
    entries = _good()
    del entries[2]["split"]
    with pytest.raises(DatasetError, match=r"images\[2\] \(c.tif\): missing key 'split'"):
        check_dataset(_dataset(tmp_path, entries), tmp_path / "images")


def test_missing_and_unreadable_images(tmp_path: Path) -> None:
    path = _dataset(tmp_path, _good(), images=["a.png", "B.JPG", "d.png"])
    (tmp_path / "images" / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(DatasetError) as info:
        check_dataset(path, tmp_path / "images")
    message = str(info.value)
    assert "3 listed image(s) missing or unreadable" in message
    assert "images[1] b.jpg: missing (did you mean 'B.JPG'?)" in message
    assert "images[2] c.tif: missing" in message
    assert "images[3] d.png: unreadable" in message
    assert "images[0]" not in message


def test_empty_test_split_only_when_required(tmp_path: Path) -> None:
    entries = [e for e in _good() if e["split"] != "test"]
    path = _dataset(tmp_path, entries)
    report = check_dataset(path, tmp_path / "images")
    assert "test" not in report.splits
    assert "no test split: a run with final.enabled needs one" in format_report(report)
    expected = r"split 'test' has no images \(train=2, val=1, test=0\); the run evaluates on test"
    with pytest.raises(DatasetError, match=expected):
        check_dataset(path, tmp_path / "images", require_test=True)


def test_no_training_image(tmp_path: Path) -> None:
    path = _dataset(tmp_path, [_entry("c.png", "val"), _entry("d.png", "test")])
    with pytest.raises(DatasetError, match="dataset.json: the dataset has no training images"):
        check_dataset(path, tmp_path / "images")


def test_check_decodes_images_fully(tmp_path: Path) -> None:
    path = _dataset(tmp_path, _good())
    jpeg = tmp_path / "images" / "b.jpg"
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(jpeg, quality=95)
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])
    with Image.open(jpeg) as img:
        img.verify()  # what check did before: passes on the truncated file
    with pytest.raises(DatasetError) as info:
        check_dataset(path, tmp_path / "images")
    assert "images[1] b.jpg: unreadable (cannot decode (OSError: image file is truncated" in str(
        info.value
    )


def test_check_refuses_a_symlink_leaving_the_folder(tmp_path: Path) -> None:
    path = _dataset(tmp_path, _good())
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    (tmp_path / "images" / "a.png").unlink()
    (tmp_path / "images" / "a.png").symlink_to(outside)
    with pytest.raises(DatasetError) as info:
        check_dataset(path, tmp_path / "images")
    assert "images[0] a.png: a symbolic link leading outside the image folder" in str(info.value)
    assert "secret.png" in str(info.value)


def test_check_accepts_16_bit_and_rejects_16_bit_rgb(tmp_path: Path) -> None:
    path = _dataset(tmp_path, _good())
    gray16 = (np.arange(64).reshape(8, 8) * 60).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "images" / "a.png")
    check_dataset(path, tmp_path / "images")
    (tmp_path / "images" / "a.png").write_bytes(rgb16_png(np.full((4, 4, 3), 3000)))
    with pytest.raises(DatasetError, match=r"images\[0\] a.png: unreadable \(3 bands of 16 bits"):
        check_dataset(path, tmp_path / "images")


def test_missing_image_folder(tmp_path: Path) -> None:
    path = _dataset(tmp_path, _good())
    with pytest.raises(DatasetError, match="nowhere: image folder not found"):
        check_dataset(path, tmp_path / "nowhere")
