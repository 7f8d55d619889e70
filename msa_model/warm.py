"""Fill the frozen towers' memo files once, before any run reads them.

A search's trials and the final stage's seeds all read the memo of the same frozen bottoms
(:mod:`msa_model.frozen`). Left to themselves, the first trials would each compute it at the same
time in their first epoch; :func:`warm_memo` computes it once: every training image in every
variant its augmentations can make (RSICD's flips and quarter turns: 8), every validation image,
and every caption of both splits, then writes the memo files.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

import torch

from msa_model.data import ImageStore, build_transform
from msa_model.engine import seed_everything
from msa_model.pipeline import build_model, load_splits
from msa_model.spec import RunSpec

__all__ = ["warm_memo"]


@torch.no_grad()
def warm_memo(
    spec: RunSpec,
    log: Callable[[str], None] = print,
    batch_size: int = 64,
    towers: Collection[str] = ("image", "text"),
) -> dict[str, int]:
    """Compute and save the memo of ``spec``'s frozen bottoms; the entries of each tower.

    Does nothing for a tower not in ``towers``, without ``cache_frozen``, or when
    ``model.frozen_cache_dir`` is unset (a memo in memory only is not shared). Captions are
    memoised only with ``padding: max_length`` (with ``longest`` a caption's tokens depend on
    its batch).
    """
    model_cfg = spec.model
    image_on = "image" in towers and model_cfg.image.cache_frozen
    text_on = "text" in towers and model_cfg.text.cache_frozen
    if model_cfg.frozen_cache_dir is None or not (image_on or text_on):
        return {}
    seed_everything(spec.seed)  # as the run seeds it: random-init frozen weights are the same
    splits = load_splits(spec.data, spec.train_on_val)
    model = build_model(model_cfg, splits["train"]).eval()
    counts: dict[str, int] = {}
    began = time.perf_counter()
    if image_on:
        store = ImageStore.from_config(spec.data)
        augmented = build_transform(spec.data, train=True)
        plain = build_transform(spec.data, train=False)
        records = [(r, augmented) for r in splits["train"]] + [(r, plain) for r in splits["val"]]
        batch: list[torch.Tensor] = []
        for i, (record, transform) in enumerate(records, 1):
            batch.extend(transform.variants(store.load(record.filename)))
            if len(batch) >= batch_size or i == len(records):
                model.image.pooled(torch.stack(batch))
                batch = []
            if i % max(1, len(records) // 10) == 0 or i == len(records):
                log(
                    f"image memo: {i}/{len(records)} images, {len(model.image._memo)} entries, "
                    f"{time.perf_counter() - began:.0f} s"
                )
        counts["image"] = len(model.image._memo)
    if text_on and model_cfg.text.padding == "max_length":
        records = splits["train"] + splits["val"]
        captions = sorted({caption for record in records for caption in record.captions})
        for start in range(0, len(captions), 4 * batch_size):
            model.text(**model.tokenize(captions[start : start + 4 * batch_size]))
        counts["text"] = len(model.text._memo)
        log(f"text memo: {len(captions)} captions, {time.perf_counter() - began:.0f} s")
    model.train().eval()  # leaving training mode writes the memo files
    return counts
