"""Image loading, transforms and the PyTorch datasets on real image files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from msa_model.config import DataConfig
from msa_model.data import (
    DatasetError,
    EvalImages,
    ImageRecord,
    ImageStore,
    TrainPairs,
    build_transform,
    collate,
    eval_captions,
)

SIZE = 16


def _image(seed: int, size: int = 24) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture
def folder(tmp_path: Path) -> tuple[Path, list[ImageRecord]]:
    """Three images (PNG, JPEG, TIFF) with 2, 3 and 1 captions."""
    records = []
    for i, (ext, n) in enumerate([("png", 2), ("jpg", 3), ("tif", 1)]):
        _image(i).save(tmp_path / f"img{i}.{ext}")
        records.append(
            ImageRecord(f"img{i}.{ext}", "train", tuple(f"image {i} caption {j}" for j in range(n)))
        )
    return tmp_path, records


def _cfg(**kwargs: object) -> DataConfig:
    return DataConfig(image_size=SIZE, **kwargs)


def test_store_loads_formats_resizes_and_caches(folder: tuple[Path, list[ImageRecord]]) -> None:
    root, records = folder
    store = ImageStore(root, image_size=SIZE, cache=True)
    for record in records:
        image = store.load(record.filename)
        assert image.mode == "RGB" and image.size == (SIZE, SIZE)
    assert store.cached == 3
    (root / "img0.png").unlink()  # served from the cache from now on
    assert store.load("img0.png").size == (SIZE, SIZE)
    nocache = ImageStore(root, image_size=None, cache=False)
    assert nocache.load("img1.jpg").size == (24, 24)
    assert nocache.cached == 0


def test_store_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    store = ImageStore(tmp_path, image_size=SIZE)
    with pytest.raises(DatasetError, match="missing.png: image not found"):
        store.load("missing.png")
    with pytest.raises(DatasetError, match="broken.png: not a readable image"):
        store.load("broken.png")
    with pytest.raises(DatasetError, match="contains '..'"):
        store.load("../outside.png")


def rgb16_png(pixels: np.ndarray) -> bytes:
    """A PNG of 16 bits per sample in three bands (Pillow cannot write one)."""
    height, width, _ = pixels.shape
    rows = pixels.astype(">u2")
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("name", ["g16.png", "g16.tif"])
def test_16_bit_images_are_rescaled_by_their_range(tmp_path: Path, name: str) -> None:
    pixels = np.array([[1000, 1000, 2020, 3040]] * 4, dtype=np.uint16)  # a 12-bit range
    Image.fromarray(pixels).save(tmp_path / name)
    with Image.open(tmp_path / name) as raw:
        assert raw.mode.startswith("I;16")
        assert np.asarray(raw.convert("RGB")).min() == 255  # Pillow alone: all white
    image = np.asarray(ImageStore(tmp_path, image_size=None).load(name))
    assert image.shape == (4, 4, 3)
    assert image[0, :, 0].tolist() == [0, 0, 128, 255]  # (v - 1000) / 2040 * 255, rounded
    assert (image == image[:, :, :1]).all()


def test_float_tiff_is_rescaled_and_nan_becomes_zero(tmp_path: Path) -> None:
    pixels = np.array([[-0.5, 0.0, 1.5, np.nan]] * 2, dtype=np.float32)
    Image.fromarray(pixels).save(tmp_path / "f.tif")
    image = np.asarray(ImageStore(tmp_path, image_size=None).load("f.tif"))
    assert image[0, :, 1].tolist() == [0, 64, 255, 0]  # 0.5 / 2 * 255 = 63.75


def test_multiband_16_bit_is_refused_with_file_and_mode(tmp_path: Path) -> None:
    (tmp_path / "rgb16.png").write_bytes(rgb16_png(np.full((4, 4, 3), 3000)))
    with pytest.raises(
        DatasetError,
        match=r"rgb16.png: 3 bands of 16 bits per sample "
        r"\(raw mode RGB;16B\)",
    ):
        ImageStore(tmp_path).load("rgb16.png")


def test_truncated_jpeg_bomb_and_symlink_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    _image(0, 64).save(folder / "cut.jpg", quality=95)
    data = (folder / "cut.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    store = ImageStore(folder, image_size=SIZE)
    with pytest.raises(DatasetError, match="cut.jpg: cannot decode .*truncated.*listed as"):
        store.load("cut.jpg")
    _image(1).save(tmp_path / "outside.png")
    (folder / "link.png").symlink_to(tmp_path / "outside.png")
    with pytest.raises(DatasetError, match="link.png: a symbolic link leading outside"):
        store.load("link.png")
    _image(2).save(folder / "real.png")
    (folder / "alias.png").symlink_to("real.png")
    assert store.load("alias.png").size == (SIZE, SIZE)  # a link within the folder is fine
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 24 x 24 = 576 > 2 x 100
    with pytest.raises(DatasetError, match="real.png: refused as a possible decompression bomb"):
        store.load("real.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 576 > 500: Pillow only warns
    with pytest.raises(DatasetError, match="decompression bomb"):
        ImageStore(folder).load("real.png")


def test_resize_filter(tmp_path: Path) -> None:
    _image(3).save(tmp_path / "x.png")
    bicubic = ImageStore(tmp_path, image_size=SIZE).load("x.png")
    bilinear = ImageStore(tmp_path, image_size=SIZE, resize="bilinear").load("x.png")
    with Image.open(tmp_path / "x.png") as source:
        expected = source.resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    assert np.array_equal(np.asarray(bilinear), np.asarray(expected))
    assert not np.array_equal(np.asarray(bicubic), np.asarray(bilinear))
    assert ImageStore.from_config(_cfg(resize="bilinear")).resize == "bilinear"
    transform = build_transform(_cfg(resize="bilinear"), train=False)
    assert transform.resize == "bilinear"


def test_store_preload(folder: tuple[Path, list[ImageRecord]]) -> None:
    root, records = folder
    store = ImageStore.from_config(_cfg(images=str(root)))
    store.preload(r.filename for r in records)
    assert store.cached == 3


def test_eval_transform_is_deterministic_and_normalised() -> None:
    cfg = _cfg(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    transform = build_transform(cfg, train=False)
    image = _image(0)
    a, b = transform(image), transform(image)
    assert a.shape == (3, SIZE, SIZE) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert a.min() >= -1.0 and a.max() <= 1.0
    resized = np.asarray(image.resize((SIZE, SIZE), Image.Resampling.BICUBIC), dtype=np.float32)
    expected = torch.from_numpy(resized).permute(2, 0, 1) / 127.5 - 1.0
    assert torch.allclose(a, expected, atol=1e-6)


def test_train_transform_flips_and_rotates_preserve_content() -> None:
    eval_t = build_transform(_cfg(), train=False)
    train_t = build_transform(_cfg(augment=["hflip", "vflip", "rot90"]), train=True)
    image = _image(1, size=SIZE)
    base = eval_t(image)
    variants = [
        base.rot90(k, dims=(1, 2)).flip(2) if flip else base.rot90(k, dims=(1, 2))
        for k in range(4)
        for flip in (False, True)
    ]  # the eight symmetries
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        out = train_t(image)
        assert out.shape == base.shape
        match = [i for i, v in enumerate(variants) if torch.equal(out, v)]
        assert match, "augmented image is not a flip/rotation of the original"
        seen.add(match[0])
    assert len(seen) > 4  # several of the eight symmetries occur
    assert torch.equal(build_transform(_cfg(augment=[]), train=True)(image), base)


def test_train_pairs_all_captions(folder: tuple[Path, list[ImageRecord]]) -> None:
    root, records = folder
    data = TrainPairs(
        records, ImageStore(root, SIZE), build_transform(_cfg(), False), "all_captions", seed=0
    )
    assert len(data) == 6
    items = [data[i] for i in range(len(data))]
    assert [it["caption"] for it in items] == [c for r in records for c in r.captions]
    for item in items:
        assert item["caption"].startswith(f"image {item['image_id']} ")
        assert item["image"].shape == (3, SIZE, SIZE)
    assert torch.equal(items[0]["image"], items[1]["image"])  # same image, two captions


def test_train_pairs_one_caption_per_epoch(folder: tuple[Path, list[ImageRecord]]) -> None:
    root, _ = folder
    records = [
        ImageRecord(
            f"img{i % 3}.{['png', 'jpg', 'tif'][i % 3]}",
            "train",
            tuple(f"image {i} caption {j}" for j in range(5)),
        )
        for i in range(12)
    ]
    store, transform = ImageStore(root, SIZE), build_transform(_cfg(), False)
    data = TrainPairs(records, store, transform, "one_caption", seed=7)
    assert len(data) == 12

    def captions(epoch: int, seed: int = 7) -> list[str]:
        d = TrainPairs(records, store, transform, "one_caption", seed=seed)
        d.set_epoch(epoch)
        return [d[i]["caption"] for i in range(len(d))]

    first = captions(0)
    assert [c.split()[1] for c in first] == [str(i) for i in range(12)]  # right image
    assert [data[i]["image_id"] for i in range(12)] == list(range(12))
    assert captions(0) == first  # deterministic
    assert captions(1) != first  # changes with the epoch
    assert captions(0, seed=8) != first
    data.set_epoch(1)
    assert [data[i]["caption"] for i in range(12)] == captions(1)


def test_eval_images_and_captions(folder: tuple[Path, list[ImageRecord]]) -> None:
    root, records = folder
    images = EvalImages(records, ImageStore(root, SIZE), build_transform(_cfg(), False))
    assert len(images) == 3
    assert [images[i]["image_id"] for i in range(3)] == [0, 1, 2]
    assert "caption" not in images[0]
    captions, owner = eval_captions(records)
    assert len(captions) == 6 and owner.dtype == torch.long
    assert owner.tolist() == [0, 0, 1, 1, 1, 2]
    assert all(c.startswith(f"image {i} ") for c, i in zip(captions, owner.tolist(), strict=True))


def test_collate_with_a_dataloader(folder: tuple[Path, list[ImageRecord]]) -> None:
    root, records = folder
    pairs = TrainPairs(
        records, ImageStore(root, SIZE), build_transform(_cfg(), True), "all_captions", seed=0
    )
    batch = next(iter(torch.utils.data.DataLoader(pairs, batch_size=4, collate_fn=collate)))
    assert batch["images"].shape == (4, 3, SIZE, SIZE)
    assert batch["image_ids"].dtype == torch.long and batch["image_ids"].tolist() == [0, 0, 1, 1]
    assert batch["captions"] == [
        "image 0 caption 0",
        "image 0 caption 1",
        "image 1 caption 0",
        "image 1 caption 1",
    ]
    evals = EvalImages(records, ImageStore(root, SIZE), build_transform(_cfg(), False))
    batch = collate([evals[0], evals[2]])
    assert set(batch) == {"images", "image_ids"} and batch["image_ids"].tolist() == [0, 2]
