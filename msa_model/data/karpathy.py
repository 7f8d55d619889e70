"""Karpathy-style caption JSON: reading, structural validation and train/val/test splits.

The format used by RSITMD, RSICD, UCM-Captions and Sydney-Captions::

    {"images": [{"filename": "x.tif", "split": "train",
                 "sentences": [{"raw": "a caption .", "tokens": [...]}, ...]}, ...]}

Only ``filename``, ``split`` and ``sentences[].raw`` are read; other keys (``tokens``, ``imgid``,
``sentids``, ...) are ignored. An optional ``filepath`` (COCO style) is prepended to the filename.
The split ``restval`` (COCO's "rest of val", used as training data) is read as ``train``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

__all__ = [
    "SPLITS",
    "DatasetError",
    "ImageRecord",
    "make_splits",
    "read_karpathy",
    "unsafe_filename_reason",
]

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "val": "val", "test": "test", "restval": "train"}


class DatasetError(ValueError):
    """A dataset file or image is malformed or missing; the message names the file and item."""


@dataclass(frozen=True)
class ImageRecord:
    """One image of a caption dataset.

    Attributes:
        filename: Path of the image relative to the image folder.
        split: ``"train"``, ``"val"`` or ``"test"`` (``restval`` is read as ``train``).
        captions: The image's captions (``sentences[].raw``, stripped), in file order.
    """

    filename: str
    split: str
    captions: tuple[str, ...]


def unsafe_filename_reason(filename: str) -> str | None:
    """Why ``filename`` could point outside the image folder, or None when it is safe.

    Absolute paths (POSIX or Windows, drive letters included) and any ``..`` component are unsafe.
    """
    if PurePosixPath(filename).is_absolute() or PureWindowsPath(filename).is_absolute():
        return "is an absolute path"
    if filename.startswith(("/", "\\")) or PureWindowsPath(filename).drive:
        return "is an absolute path"
    if ".." in filename.replace("\\", "/").split("/"):
        return "contains '..'"
    return None


def _load_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: file not found") from exc
    except IsADirectoryError as exc:
        raise DatasetError(f"{path}: is a directory, expected a JSON file") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc


def _read_image(path: Path, index: int, item: Any) -> ImageRecord:
    where = f"{path}: images[{index}]"
    if not isinstance(item, dict):
        raise DatasetError(f"{where}: expected an object, got {type(item).__name__}")
    if "filename" not in item:
        raise DatasetError(f"{where}: missing key 'filename'")
    filename = item["filename"]
    if not isinstance(filename, str) or not filename.strip():
        raise DatasetError(f"{where}: 'filename' must be a non-empty string, got {filename!r}")
    filepath = item.get("filepath")
    if isinstance(filepath, str) and filepath:
        filename = f"{filepath.rstrip('/')}/{filename}"
    where = f"{where} ({filename})"
    reason = unsafe_filename_reason(filename)
    if reason is not None:
        raise DatasetError(f"{where}: filename {reason}; it must be relative to the image folder")
    for key in ("split", "sentences"):
        if key not in item:
            raise DatasetError(f"{where}: missing key '{key}'")
    split = item["split"]
    if split not in _SPLIT_ALIASES:
        raise DatasetError(
            f"{where}: unknown split {split!r} (expected train, val, test or restval)"
        )
    sentences = item["sentences"]
    if not isinstance(sentences, list):
        raise DatasetError(f"{where}: 'sentences' must be a list, got {type(sentences).__name__}")
    if not sentences:
        raise DatasetError(f"{where}: 'sentences' is empty (the image has no caption)")
    captions = []
    for j, sentence in enumerate(sentences):
        if not isinstance(sentence, dict):
            raise DatasetError(f"{where}: sentences[{j}] must be an object")
        if "raw" not in sentence:
            raise DatasetError(f"{where}: sentences[{j}]: missing key 'raw'")
        raw = sentence["raw"]
        if not isinstance(raw, str):
            raise DatasetError(f"{where}: sentences[{j}].raw must be a string, got {raw!r}")
        if not raw.strip():
            raise DatasetError(f"{where}: sentences[{j}].raw is an empty caption")
        captions.append(raw.strip())
    return ImageRecord(filename=filename, split=_SPLIT_ALIASES[split], captions=tuple(captions))


def read_karpathy(json_path: str | Path) -> list[ImageRecord]:
    """Read and structurally validate a Karpathy-style caption JSON.

    Args:
        json_path: The dataset JSON.

    Returns:
        One record per listed image, in file order.

    Raises:
        DatasetError: Unreadable or malformed JSON (with line and column), a missing key, an
            unknown split, an empty caption, an unsafe or repeated filename; the message names
            the file, the image index and its filename.
    """
    path = Path(json_path)
    data = _load_json(path)
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: expected an object at the top level, got {type(data).__name__}"
        )
    if "images" not in data:
        raise DatasetError(f"{path}: missing key 'images' at the top level")
    images = data["images"]
    if not isinstance(images, list):
        raise DatasetError(f"{path}: 'images' must be a list, got {type(images).__name__}")
    records: list[ImageRecord] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(images):
        record = _read_image(path, index, item)
        if record.filename in seen:
            raise DatasetError(
                f"{path}: images[{index}] ({record.filename}): filename already "
                f"listed as images[{seen[record.filename]}]"
            )
        seen[record.filename] = index
        records.append(record)
    return records


def make_splits(
    records: list[ImageRecord], val_fraction: float, seed: int, test_fraction: float = 0.0
) -> dict[str, list[ImageRecord]]:
    """Group records by split, carving validation (and test) splits out of train when absent.

    When no record has split ``val``, ``round(val_fraction * n_train)`` (at least one) training
    images are drawn, seeded by ``seed``, and moved to ``val``; a caption never crosses splits
    because whole images move. Then, when ``test_fraction`` > 0 and no record has split
    ``test``, ``round(test_fraction * n_train)`` of the remaining training images move to
    ``test`` (seeded by ``seed + 1``; the val carve is the same with or without it). A test
    split the file has is never touched; a file with only a test split (a set to evaluate on)
    carves nothing. Records keep their file order.

    Args:
        records: Output of :func:`read_karpathy`.
        val_fraction: Fraction of training images to carve out as val, in (0, 1).
        seed: Seed of the carve-outs.
        test_fraction: Fraction of training images to carve out as test, in [0, 1).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}`` (a split may be empty, except train).

    Raises:
        DatasetError: No training image, or too few to carve a validation split from.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    splits: dict[str, list[ImageRecord]] = {name: [] for name in SPLITS}
    for record in records:
        splits[record.split].append(record)
    if splits["val"] and not splits["train"]:
        raise DatasetError("the dataset has no training images")
    n_train = len(splits["train"])
    if not splits["val"] and (splits["train"] or not splits["test"]):  # test only: evaluation
        splits["train"], splits["val"] = _carve(splits["train"], val_fraction, seed, "validation")
    if test_fraction > 0 and not splits["test"]:
        share = test_fraction * n_train / max(1, len(splits["train"]))  # of the images before
        splits["train"], splits["test"] = _carve(splits["train"], share, seed + 1, "test")
    return splits


def _carve(
    train: list[ImageRecord], fraction: float, seed: int, name: str
) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """``round(fraction * len(train))`` images (at least one, never all) drawn out of train."""
    if len(train) < 2:
        raise DatasetError(
            f"cannot carve a {name} split from {len(train)} training image(s); need at least 2"
        )
    n_out = min(max(1, round(fraction * len(train))), len(train) - 1)
    chosen = set(random.Random(seed).sample(range(len(train)), n_out))
    return (
        [r for i, r in enumerate(train) if i not in chosen],
        [r for i, r in enumerate(train) if i in chosen],
    )
