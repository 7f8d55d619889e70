"""``msa data import``: caption datasets as RS users have them -> our Karpathy-style JSON.

Two inputs:

- COCO-style caption JSON (``{"images": [{"id", "file_name"}], "annotations": [{"image_id",
  "caption"}]}``), one file per split (the split given for each file) or one file whose images
  carry a ``split`` key; the RSICD captions of public mirrors come this way.
- Karpathy-style JSON as UCM-Captions and Sydney-Captions ship it (``sentences[].raw`` or only
  ``tokens``, ``restval``, ``filepath``): normalised so that :func:`read_karpathy` accepts it.

Captions are stripped and whitespace-collapsed; empty captions and images left without any are
dropped and counted. The written file is read back with :func:`read_karpathy` before returning.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msa_model.data.karpathy import SPLITS, DatasetError, read_karpathy

__all__ = ["ImportSummary", "coco_to_karpathy", "normalise_karpathy", "write_dataset"]

_SPLIT_ALIASES = {"train": "train", "val": "val", "test": "test", "restval": "train"}
_TOKEN = re.compile(r"[a-z0-9]+")
_MARKER = "msa data import"


@dataclass(frozen=True)
class ImportSummary:
    """What an import kept and dropped.

    Attributes:
        images: Images written, per split (``train``, ``val``, ``test``).
        captions: Captions written.
        empty_captions: Empty or non-string captions dropped.
        images_without_captions: Images dropped because no caption remained.
    """

    images: dict[str, int]
    captions: int
    empty_captions: int
    images_without_captions: int

    def describe(self) -> str:
        """One line: counts per split and what was dropped."""
        splits = ", ".join(f"{name} {n}" for name, n in self.images.items())
        return (
            f"{sum(self.images.values())} images ({splits}), {self.captions} captions; "
            f"dropped {self.empty_captions} empty caption(s) and "
            f"{self.images_without_captions} image(s) without a caption"
        )


def _is_id(value: Any) -> bool:
    """An image id COCO files use: an integer or a string (never a list, a mapping or a bool)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DatasetError(f"{path}: file not found") from exc
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror})") from exc


def _list(data: Any, key: str, path: Path) -> list:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise DatasetError(f"{path}: expected a top-level object with a list '{key}'")
    return data[key]


def _clean(caption: Any) -> str:
    return " ".join(caption.split()) if isinstance(caption, str) else ""


def _split(value: Any, where: str) -> str:
    if value not in _SPLIT_ALIASES:
        raise DatasetError(
            f"{where}: unknown split {value!r} (expected train, val, test or restval)"
        )
    return _SPLIT_ALIASES[value]


class _Builder:
    """Accumulates images in file order, refusing a filename listed twice."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.seen: dict[str, str] = {}
        self.empty = 0
        self.uncaptioned = 0

    def add(self, filename: str, split: str, captions: list[Any], where: str) -> None:
        if filename in self.seen:
            raise DatasetError(f"{where} ({filename}): already listed in {self.seen[filename]}")
        self.seen[filename] = where
        kept = [c for c in (_clean(c) for c in captions) if c]
        self.empty += len(captions) - len(kept)
        if not kept:
            self.uncaptioned += 1
            return
        i, first = len(self.entries), sum(len(e["sentences"]) for e in self.entries)
        self.entries.append(
            {
                "filename": filename,
                "imgid": i,
                "split": split,
                "sentids": list(range(first, first + len(kept))),
                "sentences": [
                    {"raw": c, "tokens": _TOKEN.findall(c.lower()), "imgid": i, "sentid": first + j}
                    for j, c in enumerate(kept)
                ],
            }
        )

    def result(self, name: str) -> tuple[dict[str, Any], ImportSummary]:
        if not self.entries:
            raise DatasetError("no image with a caption to import")
        summary = ImportSummary(
            images={s: sum(e["split"] == s for e in self.entries) for s in SPLITS},
            captions=sum(len(e["sentences"]) for e in self.entries),
            empty_captions=self.empty,
            images_without_captions=self.uncaptioned,
        )
        return {"dataset": name, "converted_by": _MARKER, "images": self.entries}, summary


def coco_to_karpathy(
    sources: Sequence[tuple[str | Path, str | None]], name: str = "imported"
) -> tuple[dict[str, Any], ImportSummary]:
    """Convert COCO-style caption files to one Karpathy-style dataset.

    Args:
        sources: ``(json_path, split)`` pairs; a split of None takes each image's ``split`` key.
        name: The ``dataset`` name written into the JSON.

    Returns:
        The dataset (write it with :func:`write_dataset`) and what was kept and dropped.

    Raises:
        DatasetError: Malformed JSON, an image without ``id``/``file_name``, a repeated id or
            filename, an annotation of an unknown image, or a missing or unknown split; the
            message names the file and the item.
    """
    builder = _Builder()
    for source, split in sources:
        path = Path(source)
        data = _load(path)
        images, annotations = _list(data, "images", path), _list(data, "annotations", path)
        captions: dict[Any, list[Any]] = {}
        order: list[tuple[Any, str, str]] = []
        for index, image in enumerate(images):
            where = f"{path}: images[{index}]"
            if not isinstance(image, dict) or "id" not in image or "file_name" not in image:
                raise DatasetError(f"{where}: expected an object with 'id' and 'file_name'")
            if not _is_id(image["id"]):
                raise DatasetError(
                    f"{where}: 'id' must be an integer or a string, got {image['id']!r:.60}"
                )
            if not isinstance(image["file_name"], str) or not image["file_name"].strip():
                raise DatasetError(f"{where}: 'file_name' must be a non-empty string")
            if image["id"] in captions:
                raise DatasetError(f"{where}: id {image['id']!r} repeats an earlier image")
            if split is None and "split" not in image:
                raise DatasetError(f"{where}: no 'split' key; give the split of the whole file")
            captions[image["id"]] = []
            order.append(
                (
                    image["id"],
                    image["file_name"],
                    _split(split if split is not None else image["split"], where),
                )
            )
        for index, annotation in enumerate(annotations):
            where = f"{path}: annotations[{index}]"
            if not isinstance(annotation, dict) or "image_id" not in annotation:
                raise DatasetError(f"{where}: expected an object with 'image_id' and 'caption'")
            if not _is_id(annotation["image_id"]) or annotation["image_id"] not in captions:
                raise DatasetError(
                    f"{where}: image_id {annotation['image_id']!r} is not in 'images'"
                )
            captions[annotation["image_id"]].append(annotation.get("caption"))
        for index, (image_id, filename, image_split) in enumerate(order):
            builder.add(filename, image_split, captions[image_id], f"{path}: images[{index}]")
    return builder.result(name)


def normalise_karpathy(
    source: str | Path, name: str | None = None
) -> tuple[dict[str, Any], ImportSummary]:
    """Normalise a Karpathy-style JSON as UCM-/Sydney-Captions ship it.

    A sentence without ``raw`` is its ``tokens`` joined by spaces; ``filepath`` is prepended to
    the filename; ``restval`` becomes ``train``.

    Args:
        source: The JSON file.
        name: The ``dataset`` name written (default: the file's own ``dataset`` or its stem).

    Raises:
        DatasetError: Malformed JSON, an image without ``filename``/``split``/``sentences``,
            an unknown split or a repeated filename; the message names the file and the item.
    """
    path = Path(source)
    data = _load(path)
    builder = _Builder()
    for index, image in enumerate(_list(data, "images", path)):
        where = f"{path}: images[{index}]"
        if (
            not isinstance(image, dict)
            or not isinstance(image.get("filename"), str)
            or not isinstance(image.get("sentences"), list)
            or "split" not in image
        ):
            raise DatasetError(
                f"{where}: expected an object with 'filename', 'split' and a list 'sentences'"
            )
        filename = image["filename"]
        if isinstance(image.get("filepath"), str) and image["filepath"]:
            filename = f"{image['filepath'].rstrip('/')}/{filename}"
        captions = []
        for sentence in image["sentences"]:
            if isinstance(sentence, dict) and isinstance(sentence.get("raw"), str):
                captions.append(sentence["raw"])
            elif isinstance(sentence, dict) and isinstance(sentence.get("tokens"), list):
                captions.append(" ".join(str(t) for t in sentence["tokens"]))
            else:
                captions.append(None)
        builder.add(filename, _split(image["split"], where), captions, where)
    default = data.get("dataset") if isinstance(data.get("dataset"), str) else path.stem
    return builder.result(name or default)


def write_dataset(data: dict[str, Any], out: str | Path, overwrite: bool = False) -> Path:
    """Write an imported dataset to ``out`` (atomically) and validate it with read_karpathy.

    Args:
        data: From :func:`coco_to_karpathy` or :func:`normalise_karpathy`.
        out: The JSON to write.
        overwrite: Replace ``out`` when it is an earlier import (never another file).

    Raises:
        DatasetError: ``out`` exists and ``overwrite`` is false or it is not an earlier import,
            or the result does not read back (an unsafe filename, for example).
    """
    out = Path(out)
    if out.exists():
        try:
            ours = json.loads(out.read_text(encoding="utf-8")).get("converted_by") == _MARKER
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise DatasetError(
                f"{out}: exists and was not written by msa data import; choose another output"
            )
        if not overwrite:
            raise DatasetError(
                f"{out}: exists already; choose another output or pass overwrite (--overwrite)"
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    try:
        read_karpathy(partial)
    except DatasetError as exc:
        partial.unlink()
        raise DatasetError(f"{out}: not written: {exc}") from exc
    os.replace(partial, out)
    return out
