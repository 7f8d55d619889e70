"""The embedded synthetic remote-sensing caption dataset (``msa data synth``).

Writes ``images/synth_00000.png ...`` and a Karpathy-style ``dataset.json`` with train/val/test
splits and five captions per image, into a new or empty folder (or, with ``overwrite``, over a
synthetic dataset written before, never over anything else). Image ``i`` of a seed is the same
whatever ``num_images`` (each image draws from its own generator seeded by ``(seed, i)``), and
the same arguments give byte-identical files. Each JSON entry also carries the ``scene`` it was
drawn from.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from msa_model.data.karpathy import DatasetError
from msa_model.data.synth_captions import describe
from msa_model.data.synth_scene import CoverRegion, SceneDescription, generate_scene

__all__ = [
    "CoverRegion",
    "SceneDescription",
    "describe",
    "generate_scene",
    "split_counts",
    "write_synthetic_dataset",
]


def split_counts(num_images: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Images per split (train, val, test): largest remainders, at least one per non-zero share.

    Raises:
        ValueError: Fractions that are not three non-negative numbers summing to 1 with a
            positive train share, or fewer images than non-zero shares.
    """
    if (
        len(fractions) != 3
        or any(f < 0 for f in fractions)
        or fractions[0] <= 0
        or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6)
    ):
        raise ValueError(
            f"split_fractions must be 3 non-negative numbers (train > 0) summing "
            f"to 1, got {tuple(fractions)}"
        )
    wanted = sum(1 for f in fractions if f > 0)
    if num_images < wanted:
        raise ValueError(f"num_images={num_images} is fewer than the {wanted} non-empty splits")
    exact = [f * num_images for f in fractions]
    counts = [math.floor(x) for x in exact]
    for i in sorted(range(3), key=lambda k: counts[k] - exact[k])[: num_images - sum(counts)]:
        counts[i] += 1
    for i in range(3):
        if fractions[i] > 0 and counts[i] == 0:
            counts[max(range(3), key=lambda k: counts[k])] -= 1
            counts[i] = 1
    return counts[0], counts[1], counts[2]


_MARKER = "msa-synth"


def _only_synth_images(out_dir: Path) -> bool:
    entries = list(out_dir.iterdir())
    if [e.name for e in entries] != ["images"] or not entries[0].is_dir():
        return False
    return all(re.fullmatch(r"synth_\d{5}\.png", f.name) for f in entries[0].iterdir())


def _clear_previous(out_dir: Path, overwrite: bool) -> None:
    """Make ``out_dir`` ready: absent or empty, or (``overwrite``) a former synthetic dataset."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DatasetError(f"{out_dir}: exists and is not a folder")
    if not out_dir.exists() or not any(out_dir.iterdir()):
        return
    json_path = out_dir / "dataset.json"
    if not json_path.exists() and _only_synth_images(out_dir):
        return  # an interrupted write (the JSON comes last): its images are rewritten
    try:
        previous = json.loads(json_path.read_text(encoding="utf-8"))
        ours = previous.get("dataset") == _MARKER
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise DatasetError(
            f"{out_dir}: folder is not empty and holds no synthetic dataset "
            f"written by msa; choose a new or empty folder"
        )
    if not overwrite:
        raise DatasetError(
            f"{out_dir}: holds a synthetic dataset already; pass overwrite=True "
            f"(msa data synth --overwrite) to replace it"
        )
    for entry in previous.get("images", []):
        name = str(entry.get("filename", "")) if isinstance(entry, dict) else ""
        if re.fullmatch(r"synth_\d{5}\.png", name):
            (out_dir / "images" / name).unlink(missing_ok=True)
    json_path.unlink()


def write_synthetic_dataset(
    out_dir: str | Path,
    num_images: int = 1000,
    size: int = 64,
    seed: int = 0,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    overwrite: bool = False,
) -> Path:
    """Write the synthetic dataset: ``out_dir/images/*.png`` and ``out_dir/dataset.json``.

    Args:
        out_dir: Output folder: new or empty, or a synthetic dataset to replace.
        num_images: Number of images.
        size: Image side length in pixels (at least 32).
        seed: Seed of the scenes, captions and split assignment.
        split_fractions: Shares of train, val and test (val may be 0).
        overwrite: Replace the synthetic dataset ``out_dir`` holds (its listed images and JSON;
            other files stay). A folder with anything else is never written into.

    Returns:
        Path of the dataset JSON.

    Raises:
        ValueError: Fewer than 1 image, a size under 32, bad split fractions.
        DatasetError: ``out_dir`` is not empty and holds no synthetic dataset, or holds one and
            ``overwrite`` is false.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if size < 32:
        raise ValueError(f"size must be >= 32, got {size}")
    n_train, n_val, _ = split_counts(num_images, split_fractions)
    out_dir = Path(out_dir)
    _clear_previous(out_dir, overwrite)
    order = np.random.default_rng([seed, 1]).permutation(num_images)
    split_of = np.empty(num_images, dtype=object)
    split_of[order[:n_train]] = "train"
    split_of[order[n_train : n_train + n_val]] = "val"
    split_of[order[n_train + n_val :]] = "test"

    image_dir = out_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(num_images):
        rng = np.random.default_rng([seed, 0, i])
        image, scene = generate_scene(rng, size)
        captions = describe(scene, rng)
        filename = f"synth_{i:05d}.png"
        image.save(image_dir / filename, format="PNG")
        entries.append(
            {
                "filename": filename,
                "imgid": i,
                "split": str(split_of[i]),
                "sentids": [5 * i + j for j in range(len(captions))],
                "sentences": [
                    {"raw": c, "tokens": re.findall(r"[a-z]+", c), "imgid": i, "sentid": 5 * i + j}
                    for j, c in enumerate(captions)
                ],
                "scene": dataclasses.asdict(scene),
            }
        )
    json_path = out_dir / "dataset.json"
    meta = {
        "num_images": num_images,
        "size": size,
        "seed": seed,
        "split_fractions": list(split_fractions),
    }
    json_path.write_text(
        json.dumps(
            {"dataset": _MARKER, "generator": meta, "images": entries}, separators=(",", ":")
        )
        + "\n"
    )
    return json_path
