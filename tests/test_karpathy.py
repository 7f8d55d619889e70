"""Reading Karpathy-style JSON in the benchmarks' layouts, and the val carve-out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from msa_model.data import DatasetError, ImageRecord, make_splits, read_karpathy


def _sentences(texts: list[str], tokens: bool = True) -> list[dict]:
    out = []
    for i, text in enumerate(texts):
        sentence = {"raw": text, "imgid": 0, "sentid": i}
        if tokens:
            sentence["tokens"] = text.lower().rstrip(" .").split()
        out.append(sentence)
    return out


def _write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data, indent=2))
    return path


def rsitmd_like(n_train: int = 12, n_test: int = 4) -> dict:
    """RSITMD: tif names, train/test only, five sentences with raw and tokens."""
    images = []
    for i in range(n_train + n_test):
        captions = [f"There are {i} boats near the port number {j} ." for j in range(5)]
        images.append(
            {
                "filename": f"port_{i}.tif",
                "imgid": i,
                "split": "train" if i < n_train else "test",
                "sentences": _sentences(captions),
                "sentids": list(range(5 * i, 5 * i + 5)),
            }
        )
    return {"images": images, "dataset": "rsitmd"}


def test_rsitmd_layout(tmp_path: Path) -> None:
    records = read_karpathy(_write(tmp_path / "dataset_RSITMD.json", rsitmd_like()))
    assert len(records) == 16
    assert records[0] == ImageRecord(
        "port_0.tif",
        "train",
        tuple(f"There are 0 boats near the port number {j} ." for j in range(5)),
    )
    assert [r.split for r in records].count("test") == 4
    assert all(len(r.captions) == 5 for r in records)


def test_rsicd_layout_with_val_and_untokenized(tmp_path: Path) -> None:
    data = {
        "images": [
            {
                "filename": "airport_1.jpg",
                "split": "train",
                "sentences": _sentences(
                    ["many planes are parked .", "  a plane .  "], tokens=False
                ),
            },
            {"filename": "beach_2.jpg", "split": "val", "sentences": _sentences(["a beach ."])},
            {"filename": "river_3.jpg", "split": "test", "sentences": _sentences(["a river ."])},
        ]
    }
    records = read_karpathy(_write(tmp_path / "dataset_rsicd.json", data))
    assert [r.split for r in records] == ["train", "val", "test"]
    assert records[0].captions == ("many planes are parked .", "a plane .")  # stripped
    splits = make_splits(records, val_fraction=0.5, seed=0)
    assert [r.filename for r in splits["val"]] == ["beach_2.jpg"]  # existing val is kept


def test_ucm_layout_one_and_seven_captions_restval(tmp_path: Path) -> None:
    data = {
        "images": [
            {"filename": "agricultural00.tif", "split": "train", "sentences": _sentences(["a"])},
            {
                "filename": "agricultural01.tif",
                "split": "restval",
                "sentences": _sentences([f"field {j}" for j in range(7)]),
            },
            {"filename": "beach00.tif", "split": "test", "sentences": _sentences(["b"])},
            {
                "filepath": "sub",
                "filename": "beach01.tif",
                "split": "test",
                "sentences": _sentences(["c"]),
            },
        ]
    }
    records = read_karpathy(_write(tmp_path / "dataset.json", data))
    assert [len(r.captions) for r in records] == [1, 7, 1, 1]
    assert records[1].split == "train"  # restval is training data
    assert records[3].filename == "sub/beach01.tif"


def test_carve_out_is_seeded_disjoint_by_image_and_leaves_test(tmp_path: Path) -> None:
    records = read_karpathy(_write(tmp_path / "d.json", rsitmd_like(n_train=40, n_test=6)))
    a = make_splits(records, val_fraction=0.25, seed=3)
    b = make_splits(records, val_fraction=0.25, seed=3)
    c = make_splits(records, val_fraction=0.25, seed=4)
    assert a == b
    assert {r.filename for r in a["val"]} != {r.filename for r in c["val"]}
    assert len(a["val"]) == 10 and len(a["train"]) == 30
    train, val = {r.filename for r in a["train"]}, {r.filename for r in a["val"]}
    assert not train & val and len(train | val) == 40
    assert a["test"] == [r for r in records if r.split == "test"]
    assert all(r.split == "train" for r in a["val"])  # records themselves are unchanged


def test_carve_out_small_and_impossible(tmp_path: Path) -> None:
    records = read_karpathy(_write(tmp_path / "d.json", rsitmd_like(n_train=2, n_test=1)))
    splits = make_splits(records, val_fraction=0.01, seed=0)
    assert len(splits["val"]) == 1 and len(splits["train"]) == 1
    with pytest.raises(DatasetError, match="at least 2"):
        make_splits(records[1:], val_fraction=0.1, seed=0)  # one training image
    test_only = make_splits(records[2:], val_fraction=0.1, seed=0)  # evaluation of a test set
    assert [len(test_only[s]) for s in ("train", "val", "test")] == [0, 0, 1]
    with pytest.raises(ValueError, match="val_fraction"):
        make_splits(records, val_fraction=1.0, seed=0)


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ({"split": "train", "sentences": [{"raw": "x"}]}, "images[1]: missing key 'filename'"),
        (
            {"filename": "b.tif", "sentences": [{"raw": "x"}]},
            "images[1] (b.tif): missing key 'split'",
        ),
        ({"filename": "b.tif", "split": "train"}, "images[1] (b.tif): missing key 'sentences'"),
        (
            {"filename": "b.tif", "split": "train", "sentences": [{"raw": "x"}, {"tokens": []}]},
            "images[1] (b.tif): sentences[1]: missing key 'raw'",
        ),
        ({"filename": "b.tif", "split": "dev", "sentences": [{"raw": "x"}]}, "unknown split 'dev'"),
        (
            {"filename": "b.tif", "split": "train", "sentences": [{"raw": "  "}]},
            "sentences[0].raw is an empty caption",
        ),
        ({"filename": "b.tif", "split": "train", "sentences": []}, "'sentences' is empty"),
        ({"filename": "../b.tif", "split": "train", "sentences": [{"raw": "x"}]}, "contains '..'"),
        (
            {"filename": "/etc/b.tif", "split": "train", "sentences": [{"raw": "x"}]},
            "absolute path",
        ),
        (
            {"filename": "C:\\data\\b.tif", "split": "train", "sentences": [{"raw": "x"}]},
            "absolute path",
        ),
        (
            {"filename": "a.tif", "split": "train", "sentences": [{"raw": "x"}]},
            "images[1] (a.tif): filename already listed as images[0]",
        ),
        ("b.tif", "images[1]: expected an object"),
    ],
)
def test_structural_errors_name_file_index_and_key(
    tmp_path: Path, image: object, expected: str
) -> None:
    good = {"filename": "a.tif", "split": "train", "sentences": [{"raw": "x"}]}
    path = _write(tmp_path / "bad.json", {"images": [good, image]})
    with pytest.raises(DatasetError) as info:
        read_karpathy(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)


def test_malformed_json_has_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"images": [\n  {"filename": "a.tif",\n   "split": "train" oops}\n]}')
    with pytest.raises(DatasetError, match=r"broken.json: invalid JSON at line 3 column 21"):
        read_karpathy(path)


def test_top_level_problems(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="missing key 'images'"):
        read_karpathy(_write(tmp_path / "a.json", {"imgs": []}))
    with pytest.raises(DatasetError, match="expected an object at the top level"):
        read_karpathy(_write(tmp_path / "b.json", []))
    with pytest.raises(DatasetError, match="nope.json: file not found"):
        read_karpathy(tmp_path / "nope.json")


def test_test_split_carved_after_val_only_when_absent(tmp_path: Path) -> None:
    records = read_karpathy(_write(tmp_path / "d.json", rsitmd_like(n_train=40, n_test=0)))
    plain = make_splits(records, val_fraction=0.25, seed=3)
    carved = make_splits(records, val_fraction=0.25, seed=3, test_fraction=0.1)
    assert carved["val"] == plain["val"]  # the val carve does not depend on the test carve
    assert len(carved["test"]) == 4 and len(carved["train"]) == 26  # 10% of the 40
    names = [{r.filename for r in carved[s]} for s in ("train", "val", "test")]
    assert sum(map(len, names)) == 40 and not (names[0] & names[2] or names[1] & names[2])
    with_test = read_karpathy(_write(tmp_path / "t.json", rsitmd_like(n_train=40, n_test=6)))
    kept = make_splits(with_test, val_fraction=0.25, seed=3, test_fraction=0.1)
    assert kept["test"] == [r for r in with_test if r.split == "test"]  # the file's own test
