"""The synthetic remote-sensing generator: determinism, captions that match the drawing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from msa_model.data import (
    DatasetError,
    check_dataset,
    describe,
    generate_scene,
    make_splits,
    read_karpathy,
    write_synthetic_dataset,
)
from msa_model.data.synth import split_counts
from msa_model.data.synth_captions import (
    COUNT_WORDS,
    COVER_PHRASES,
    LOCATION_PHRASES,
    MAX_TOKENS,
    OBJECT_NOUNS,
)
from msa_model.data.synth_scene import COLORS, COVERS, LOCATIONS, OBJECTS


def _has(caption: str, phrase: str) -> bool:
    return re.search(rf"\b{re.escape(phrase)}\b", caption) is not None


def test_dataset_is_deterministic(tmp_path: Path) -> None:
    a = write_synthetic_dataset(tmp_path / "a", num_images=30, size=64, seed=0)
    b = write_synthetic_dataset(tmp_path / "b", num_images=30, size=64, seed=0)
    c = write_synthetic_dataset(tmp_path / "c", num_images=30, size=64, seed=1)
    small = write_synthetic_dataset(tmp_path / "d", num_images=5, size=64, seed=0)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    for i in (0, 7, 29):
        name = f"images/synth_{i:05d}.png"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a/images/synth_00000.png").read_bytes() != (
        tmp_path / "c/images/synth_00000.png"
    ).read_bytes()
    # image i of a seed does not depend on how many images are written
    assert (tmp_path / "a/images/synth_00004.png").read_bytes() == (
        small.parent / "images/synth_00004.png"
    ).read_bytes()


def test_dataset_layout_and_splits(tmp_path: Path) -> None:
    path = write_synthetic_dataset(tmp_path, num_images=30, size=64, seed=3)
    assert path == tmp_path / "dataset.json"
    report = check_dataset(path, tmp_path / "images")
    counts = {name: s.images for name, s in report.splits.items()}
    assert counts == {"train": 24, "val": 3, "test": 3}
    assert all(s.captions_per_image == (5, 5) for s in report.splits.values())
    assert report.splits["train"].words[2] <= MAX_TOKENS
    records = read_karpathy(path)
    assert all(len(set(r.captions)) == 5 for r in records)
    assert make_splits(records, 0.1, 0)["val"] == [r for r in records if r.split == "val"]
    entry = json.loads(path.read_text())["images"][0]
    assert entry["sentences"][0]["tokens"] == re.findall(r"[a-z]+", entry["sentences"][0]["raw"])
    assert set(entry["scene"]) >= {"covers", "objects", "count", "positions"}


def test_no_val_split_and_bad_arguments(tmp_path: Path) -> None:
    path = write_synthetic_dataset(tmp_path, num_images=6, seed=0, split_fractions=(0.5, 0, 0.5))
    assert {r.split for r in read_karpathy(path)} == {"train", "test"}
    assert split_counts(10, (0.8, 0.1, 0.1)) == (8, 1, 1)
    assert split_counts(3, (0.8, 0.1, 0.1)) == (1, 1, 1)
    assert split_counts(7, (0.5, 0.25, 0.25)) == (3, 2, 2)
    with pytest.raises(ValueError, match="split_fractions"):
        split_counts(10, (0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="size"):
        write_synthetic_dataset(tmp_path, num_images=3, size=16)


@pytest.mark.parametrize("size", [32, 64, 96])
def test_captions_mention_what_was_drawn(size: int) -> None:
    seen: dict[str, set] = {
        "covers": set(),
        "objects": set(),
        "structures": set(),
        "counts": set(),
        "locations": set(),
    }
    for i in range(60 if size == 64 else 15):
        rng = np.random.default_rng([5, i])
        image, scene = generate_scene(rng, size)
        captions = describe(scene, rng)
        assert image.size == (size, size) and image.mode == "RGB"
        assert len(captions) == 5 and len(set(captions)) == 5
        nouns = [pair[0 if scene.count == 1 else 1] for pair in OBJECT_NOUNS[scene.objects]]
        for caption in captions:
            for cover in [region.cover for region in scene.covers]:
                assert any(_has(caption, p) for p in COVER_PHRASES[cover]), (cover, caption)
            assert any(_has(caption, n) for n in nouns), (nouns, caption)
            assert any(_has(caption, w) for w in COUNT_WORDS[scene.count]), caption
        text = " ".join(captions)
        assert _has(text, scene.color)
        if scene.structure is not None:
            word = {"buildings": "building"}.get(scene.structure, scene.structure)
            assert _has(text, word) or _has(text, word + "s"), (scene.structure, text)
        if scene.relation is None:
            assert all(any(_has(c, p) for p in LOCATION_PHRASES[scene.location]) for c in captions)
        # every object is drawn where the description says, in its colour
        pixels = np.asarray(image)
        assert len(scene.positions) == scene.count
        for x, y in scene.positions:
            assert tuple(pixels[y, x]) == COLORS[scene.color], (i, scene)
            near = {
                "upper": y < 0.42 * size,
                "lower": y >= 0.58 * size,
                "left": x < 0.42 * size,
                "right": x >= 0.58 * size,
            }
            if scene.location == "center":
                assert 0.3 * size <= x < 0.7 * size and 0.3 * size <= y < 0.7 * size
            else:
                assert all(near[word] for word in scene.location.split())
        seen["covers"].update(region.cover for region in scene.covers)
        seen["objects"].add(scene.objects)
        seen["structures"].add(scene.structure)
        seen["counts"].add(scene.count)
        seen["locations"].add(scene.location)
    if size == 64:  # the generator covers its whole design space
        assert seen["covers"] == set(COVERS) and seen["objects"] == set(OBJECTS)
        assert seen["structures"] == {None, "road", "river", "bridge", "buildings"}
        assert seen["counts"] == {1, 2, 3, 4} and seen["locations"] == set(LOCATIONS)


def test_scene_is_deterministic() -> None:
    a_img, a = generate_scene(np.random.default_rng(11), 64)
    b_img, b = generate_scene(np.random.default_rng(11), 64)
    assert a == b and a_img.tobytes() == b_img.tobytes()
    assert describe(a, np.random.default_rng(1)) == describe(b, np.random.default_rng(1))


def test_refuses_existing_folders_unless_overwriting_its_own(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="holds no synthetic dataset written by msa"):
        write_synthetic_dataset(other, num_images=3, size=32)
    with pytest.raises(DatasetError, match="holds no synthetic dataset written by msa"):
        write_synthetic_dataset(other, num_images=3, size=32, overwrite=True)
    assert sorted(p.name for p in other.iterdir()) == ["notes.txt"]

    out = tmp_path / "synth"
    write_synthetic_dataset(out, num_images=6, size=32, seed=0)
    before = (out / "dataset.json").read_bytes()
    with pytest.raises(DatasetError, match=r"holds a synthetic dataset already; pass overwrite"):
        write_synthetic_dataset(out, num_images=3, size=32, seed=1)
    assert (out / "dataset.json").read_bytes() == before
    (out / "README.txt").write_text("kept")
    write_synthetic_dataset(out, num_images=3, size=32, seed=1, overwrite=True)
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        f"synth_{i:05d}.png" for i in range(3)
    ]  # the 3 images of the old run beyond 3 removed
    assert json.loads((out / "dataset.json").read_text())["generator"]["seed"] == 1
    assert (out / "README.txt").read_text() == "kept"


def test_interrupted_write_is_completed_and_zero_images_refused(tmp_path: Path) -> None:
    write_synthetic_dataset(tmp_path / "a", num_images=4, size=32)
    (tmp_path / "a" / "dataset.json").unlink()  # as if stopped before the JSON
    write_synthetic_dataset(tmp_path / "a", num_images=4, size=32)
    assert len(read_karpathy(tmp_path / "a" / "dataset.json")) == 4
    with pytest.raises(ValueError, match="num_images must be >= 1, got 0"):
        write_synthetic_dataset(tmp_path / "b", num_images=0)
    assert not (tmp_path / "b").exists()
