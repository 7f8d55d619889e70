"""Dataset validation for ``msa data check`` and for drivers before any training starts.

:func:`check_data` applies the rules training applies (the same reader, the same split carving
of :func:`~msa_model.data.karpathy.make_splits`, the same image decoding and path checks as
:class:`~msa_model.data.datasets.ImageStore`), so a dataset that passes it does not fail later.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from msa_model.config import DataConfig
from msa_model.data.datasets import ImageStore
from msa_model.data.images import ImageReadError, read_rgb
from msa_model.data.karpathy import DatasetError, ImageRecord, make_splits, read_karpathy

__all__ = ["DatasetReport", "SplitStats", "check_data", "check_dataset", "format_report"]

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
_MAX_LISTED = 5


@dataclass(frozen=True)
class SplitStats:
    """Counts of one split.

    Attributes:
        images: Number of images.
        captions: Number of captions.
        captions_per_image: (min, max) captions of one image.
        words: (min, mean, max) words per caption.
    """

    images: int
    captions: int
    captions_per_image: tuple[int, int]
    words: tuple[int, float, int]


@dataclass(frozen=True)
class DatasetReport:
    """What :func:`check_dataset` found in a valid dataset.

    Attributes:
        json_path: The dataset JSON.
        image_dir: The image folder.
        splits: Statistics of each non-empty split as training sees it (``train``, ``val``,
            ``test`` order), after a validation split is carved out of train.
        carved_val: The validation split was carved out of train (the file lists none).
        duplicate_captions: Caption texts (compared case- and space-insensitively) that occur
            more than once in the whole dataset.
        duplicate_examples: Up to five (caption, occurrences), most frequent first.
        images_repeating_a_caption: Images that list the same caption more than once.
        unlisted_files: Files in the image folder that the JSON does not list.
    """

    json_path: Path
    image_dir: Path
    splits: dict[str, SplitStats]
    carved_val: bool
    duplicate_captions: int
    duplicate_examples: tuple[tuple[str, int], ...]
    images_repeating_a_caption: int
    unlisted_files: int


def _normalise(caption: str) -> str:
    return " ".join(caption.lower().split())


def _split_stats(records: list[ImageRecord]) -> SplitStats:
    per_image = [len(r.captions) for r in records]
    words = [len(_WORD.findall(c)) for r in records for c in r.captions]
    return SplitStats(
        images=len(records),
        captions=len(words),
        captions_per_image=(min(per_image), max(per_image)),
        words=(min(words), sum(words) / len(words), max(words)),
    )


def _list_files(image_dir: Path) -> set[str]:
    return {p.relative_to(image_dir).as_posix() for p in image_dir.rglob("*") if p.is_file()}


def _image_problem(store: ImageStore, filename: str) -> str | None:
    try:
        path = store.path(filename)
    except DatasetError as exc:
        return str(exc).removeprefix(f"{store.image_dir / filename}: ")
    if not path.exists():
        return "missing"
    if not path.is_file():
        return "not a file"
    try:
        read_rgb(path)
    except ImageReadError as exc:
        return f"unreadable ({exc.reason})"
    return None


def _check_images(records: list[ImageRecord], image_dir: Path, files: set[str]) -> None:
    by_lower: dict[str, str] = {f.lower(): f for f in files}
    store = ImageStore(image_dir, cache=False)
    problems = []
    for index, record in enumerate(records):
        problem = _image_problem(store, record.filename)
        if problem is None:
            continue
        if problem == "missing" and record.filename.lower() in by_lower:
            problem += f" (did you mean {by_lower[record.filename.lower()]!r}?)"
        problems.append(f"images[{index}] {record.filename}: {problem}")
    if problems:
        shown = "\n  ".join(problems[:_MAX_LISTED])
        more = (
            f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        )
        raise DatasetError(
            f"{len(problems)} listed image(s) missing or unreadable in "
            f"{image_dir}:\n  {shown}{more}"
        )


def check_data(cfg: DataConfig, require_test: bool = False) -> DatasetReport:
    """Validate the dataset of a data config as training will read it.

    Args:
        cfg: The data section (``json``, ``images``, ``val_fraction``, ``split_seed``).
        require_test: Also require a non-empty test split (a run that evaluates on test).

    Returns:
        Per-split counts and caption statistics (see :func:`format_report`).

    Raises:
        DatasetError: Malformed JSON, a missing key, an unknown split, an empty caption, an
            unsafe or repeated filename (all from :func:`read_karpathy`), splits training
            rejects (:func:`make_splits`: no training image, too few to carve a validation
            split), an empty test split when required, or listed images that are missing, leave
            the folder by a symbolic link, or do not decode completely to 8-bit RGB.
    """
    json_path, image_dir = Path(cfg.json), Path(cfg.images)
    records = read_karpathy(json_path)
    try:
        by_split = make_splits(records, cfg.val_fraction, cfg.split_seed, cfg.test_fraction)
    except DatasetError as exc:
        raise DatasetError(f"{json_path}: {exc}") from exc
    if require_test and not by_split["test"]:
        counts = ", ".join(f"{name}={len(rs)}" for name, rs in by_split.items())
        raise DatasetError(
            f"{json_path}: split 'test' has no images ({counts}); the run "
            "evaluates on test (final.enabled)"
        )
    if not image_dir.is_dir():
        raise DatasetError(f"{image_dir}: image folder not found")
    files = _list_files(image_dir)
    _check_images(records, image_dir, files)

    occurrences = Counter(_normalise(c) for r in records for c in r.captions)
    duplicates = sorted(
        ((c, n) for c, n in occurrences.items() if n > 1), key=lambda item: (-item[1], item[0])
    )
    repeating = sum(len({_normalise(c) for c in r.captions}) < len(r.captions) for r in records)
    return DatasetReport(
        json_path=json_path,
        image_dir=image_dir,
        splits={name: _split_stats(rs) for name, rs in by_split.items() if rs},
        carved_val=not any(r.split == "val" for r in records),
        duplicate_captions=len(duplicates),
        duplicate_examples=tuple(duplicates[:_MAX_LISTED]),
        images_repeating_a_caption=repeating,
        unlisted_files=len(files - {r.filename for r in records}),
    )


def check_dataset(
    json_path: str | Path,
    image_dir: str | Path,
    require_test: bool = False,
    val_fraction: float = DataConfig.val_fraction,
    split_seed: int = DataConfig.split_seed,
) -> DatasetReport:
    """:func:`check_data` of a JSON and image folder, with training's default split settings."""
    cfg = DataConfig(
        json=str(json_path), images=str(image_dir), val_fraction=val_fraction, split_seed=split_seed
    )
    return check_data(cfg, require_test)


def format_report(report: DatasetReport) -> str:
    """A plain-text summary: per-split counts, caption lengths and duplicate captions."""
    lines = [f"dataset {report.json_path} (images in {report.image_dir})", ""]
    header = f"{'split':<6} {'images':>7} {'captions':>9} {'caps/img':>9}   words min/mean/max"
    lines.append(header)
    lines.append("-" * len(header))
    rows = list(report.splits.items())
    if len(rows) > 1:
        stats = list(report.splits.values())
        n_words = sum(s.words[1] * s.captions for s in stats)
        total = SplitStats(
            images=sum(s.images for s in stats),
            captions=sum(s.captions for s in stats),
            captions_per_image=(
                min(s.captions_per_image[0] for s in stats),
                max(s.captions_per_image[1] for s in stats),
            ),
            words=(
                min(s.words[0] for s in stats),
                n_words / sum(s.captions for s in stats),
                max(s.words[2] for s in stats),
            ),
        )
        rows.append(("total", total))
    for name, s in rows:
        lo, hi = s.captions_per_image
        per_image = str(lo) if lo == hi else f"{lo}-{hi}"
        lines.append(
            f"{name:<6} {s.images:>7} {s.captions:>9} {per_image:>9}   "
            f"{s.words[0]} / {s.words[1]:.1f} / {s.words[2]}"
        )
    if report.carved_val:
        lines.append("(val carved out of train by image, as training does: the file lists none)")
    if "test" not in report.splits:
        lines.append("(no test split: a run with final.enabled needs one)")
    lines.append("")
    if report.duplicate_captions:
        lines.append(
            f"duplicate captions: {report.duplicate_captions} caption texts occur more "
            "than once; most frequent:"
        )
        lines.extend(f"  {n:>4} x  {caption!r}" for caption, n in report.duplicate_examples)
    else:
        lines.append("duplicate captions: none")
    if report.images_repeating_a_caption:
        lines.append(f"images listing the same caption twice: {report.images_repeating_a_caption}")
    if report.unlisted_files:
        lines.append(f"files in the image folder not listed in the JSON: {report.unlisted_files}")
    return "\n".join(lines)
