"""`msa data import`: COCO-style and UCM/Sydney Karpathy JSONs -> our Karpathy JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msa_model.data import DatasetError, read_karpathy
from msa_model.data.importers import coco_to_karpathy, normalise_karpathy, write_dataset


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def _coco(images: list[tuple[int, str]], captions: list[tuple[int, object]], **extra) -> dict:
    return {
        "info": {"description": "RSICD"},
        **extra,
        "images": [{"id": i, "file_name": f, "height": 224, "width": 224} for i, f in images],
        "annotations": [
            {"id": k, "image_id": i, "caption": c} for k, (i, c) in enumerate(captions)
        ],
    }


def test_coco_files_per_split(tmp_path: Path) -> None:
    train = _write(
        tmp_path / "train.json",
        _coco(
            [(7, "airport_1.jpg"), (3, "beach_2.jpg"), (9, "empty.jpg")],
            [
                (3, "  Waves on a   sandy beach . "),
                (7, "many planes ."),
                (3, "a beach"),
                (9, ""),
                (7, "   "),
            ],
        ),
    )
    test = _write(tmp_path / "test.json", _coco([(7, "bridge_1.jpg")], [(7, "a bridge .")]))
    data, summary = coco_to_karpathy([(train, "train"), (test, "test")], name="rsicd")
    out = write_dataset(data, tmp_path / "out" / "dataset.json")

    records = read_karpathy(out)
    assert [(r.filename, r.split, r.captions) for r in records] == [
        ("airport_1.jpg", "train", ("many planes .",)),
        ("beach_2.jpg", "train", ("Waves on a sandy beach .", "a beach")),
        ("bridge_1.jpg", "test", ("a bridge .",)),
    ]
    assert summary.images == {"train": 2, "val": 0, "test": 1}
    assert (summary.captions, summary.empty_captions, summary.images_without_captions) == (4, 2, 1)
    assert "3 images (train 2, val 0, test 1), 4 captions" in summary.describe()
    written = json.loads(out.read_text())
    assert written["dataset"] == "rsicd"
    assert written["images"][1]["sentences"][0]["tokens"] == ["waves", "on", "a", "sandy", "beach"]
    assert written["images"][1]["sentids"] == [1, 2]


def test_coco_split_per_image_and_errors(tmp_path: Path) -> None:
    one = _coco([(1, "a.tif"), (2, "b.tif")], [(1, "x"), (2, "y")])
    one["images"][0]["split"], one["images"][1]["split"] = "restval", "val"
    path = _write(tmp_path / "all.json", one)
    data, _ = coco_to_karpathy([(path, None)])
    assert [e["split"] for e in data["images"]] == ["train", "val"]

    del one["images"][1]["split"]
    _write(path, one)
    with pytest.raises(DatasetError, match=r"all.json: images\[1\]: no 'split' key"):
        coco_to_karpathy([(path, None)])
    bad_ref = _write(tmp_path / "ref.json", _coco([(1, "a.tif")], [(1, "x"), (5, "y")]))
    with pytest.raises(DatasetError, match=r"ref.json: annotations\[1\]: image_id 5 is not in"):
        coco_to_karpathy([(bad_ref, "train")])
    twice = _write(tmp_path / "twice.json", _coco([(1, "a.tif")], [(1, "x")]))
    with pytest.raises(DatasetError, match=r"twice.json: images\[0\] \(a.tif\): already listed"):
        coco_to_karpathy([(twice, "train"), (twice, "test")])
    with pytest.raises(DatasetError, match="unknown split 'dev'"):
        coco_to_karpathy([(twice, "dev")])
    no_images = _write(tmp_path / "x.json", {"annotations": []})
    with pytest.raises(
        DatasetError, match="x.json: expected a top-level object with a list 'images'"
    ):
        coco_to_karpathy([(no_images, "train")])


def test_ucm_style_karpathy_json(tmp_path: Path) -> None:
    ucm = {
        "dataset": "ucm",
        "images": [
            {
                "filename": "1.tif",
                "imgid": 0,
                "split": "train",
                "sentids": [0, 1],
                "sentences": [
                    {
                        "tokens": ["there", "is", "a", "piece", "of", "farmland"],
                        "raw": "There is a piece of farmland .  ",
                        "imgid": 0,
                        "sentid": 0,
                    },
                    {"tokens": ["green", "farmland"], "imgid": 0, "sentid": 1},
                ],
            },
            {
                "filename": "2.tif",
                "filepath": "imgs",
                "split": "restval",
                "sentences": [{"raw": "a beach ."}],
            },
            {"filename": "3.tif", "split": "test", "sentences": [{"raw": " "}]},
        ],
    }
    data, summary = normalise_karpathy(_write(tmp_path / "dataset_ucm.json", ucm))
    out = write_dataset(data, tmp_path / "dataset.json")
    assert [(r.filename, r.split, r.captions) for r in read_karpathy(out)] == [
        ("1.tif", "train", ("There is a piece of farmland .", "green farmland")),
        ("imgs/2.tif", "train", ("a beach .",)),
    ]
    assert json.loads(out.read_text())["dataset"] == "ucm"
    assert summary.images_without_captions == 1

    unsafe = {"images": [{"filename": "../x.tif", "split": "train", "sentences": [{"raw": "a"}]}]}
    data, _ = normalise_karpathy(_write(tmp_path / "unsafe.json", unsafe))
    with pytest.raises(DatasetError, match=r"bad.json: not written: .*filename contains '..'"):
        write_dataset(data, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


def test_write_dataset_never_replaces_other_files(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.json", _coco([(1, "a.tif")], [(1, "x")]))
    data, _ = coco_to_karpathy([(path, "train")])
    foreign = tmp_path / "dataset.json"
    foreign.write_text('{"images": []}')
    with pytest.raises(DatasetError, match="was not written by msa data import"):
        write_dataset(data, foreign, overwrite=True)
    assert foreign.read_text() == '{"images": []}'
    out = write_dataset(data, tmp_path / "new.json")
    with pytest.raises(DatasetError, match="exists already; .* pass overwrite"):
        write_dataset(data, out)
    assert write_dataset(data, out, overwrite=True) == out
