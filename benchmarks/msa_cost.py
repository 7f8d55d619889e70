"""The cost of the MSA terms on CPU: an S=4 training epoch with MSA on vs off, same batches.

``python -m benchmarks.msa_cost`` builds the ``rsicd_lite`` preset's model (frozen, memoised
EfficientNet-Lite0 + all-MiniLM-L6-v2 from the ``pretrained`` extra, embed_dim 384, 6 heads,
S = 4, batch 32, 32 padded tokens) and times, in one process and interleaved round by round,
the same batches through :func:`msa_model.engine.train_step` in four arms:

- ``off``: lambda_mscma = lambda_csmmc = 0 (the model skips MSCMAT), the optimizer of
  :func:`~msa_model.engine.build_optimizer`;
- ``on``: the preset's (the paper's) loss, MSCMA 15, CSMMC 10 (T 2), MSCMA T 1;
- ``off_before`` / ``on_before``: the same with MSCMAT's per-head ``projected`` path and
  PyTorch's default (per-tensor, unfused) AdamW: the code before the change of issue 19.

Each arm has its own copy of the heads (the frozen towers' memo is shared) and starts from the
same weights. The data are the preset's train split of ``../shared/data/rsicd_dev`` (one epoch,
loaded beforehand, the memo warmed by an untimed pass; its folder is the preset's
``frozen_cache_dir``, so a warm memo of a search is reused) or, when the folder is absent or with
``--synthetic``, random 224 px images and random-word captions of RSICD's lengths (the memo and
towers see the same shapes). Prints each arm's median seconds per epoch (or per ``--steps``
steps) and the ratios on / off; ``--parts`` adds a per-step breakdown (memo lookups, heads,
MSCMAT, loss, backward, optimizer).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import yaml

from msa_model.config import DataConfig, LossConfig, ModelConfig, OptimConfig, from_dict
from msa_model.engine import build_optimizer, build_scheduler, train_step
from msa_model.frozen import FeatureMemo
from msa_model.losses import MSALoss, caption_ids

__all__ = ["ARMS", "load_batches", "build_arms", "time_arms", "parts", "run", "main"]

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "search_spaces" / "rsicd_lite.yaml"
ARMS = ("off_before", "on_before", "off", "on")
WORDS = (
    "many buildings green trees are around a playground parking lot with cars some white "
    "storage tanks near the river bridge over dense residential area airport runway planes "
    "baseball field pond church square farmland beside road port ships viaduct"
).split()


def _preset() -> dict[str, Any]:
    return yaml.safe_load(PRESET.read_text())


def _synthetic_batches(steps: int, batch: int, size: int, seed: int = 0) -> list[dict]:
    """Random normalised images and captions of 8-20 words (RSICD: 13 tokens on average)."""
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    out = []
    for step in range(steps):
        captions = [" ".join(rng.choices(WORDS, k=rng.randint(8, 20))) for _ in range(batch)]
        out.append(
            {
                "images": torch.randn(batch, 3, size, size, generator=gen),
                "image_ids": torch.arange(step * batch, (step + 1) * batch),
                "captions": captions,
            }
        )
    return out


def load_batches(
    preset: dict[str, Any], steps: int | None, synthetic: bool
) -> tuple[list[dict], list, dict[str, Any]]:
    """Batches of one training epoch (epoch 1's order), the train records and a description."""
    batch = preset["train"]["batch_size"]
    size = preset["data"]["image_size"]
    data_json = ROOT / preset["data"]["json"]
    if synthetic or not data_json.is_file():
        batches = _synthetic_batches(steps or 10, batch, size)
        return batches, [], {"data": "synthetic", "steps": len(batches)}
    from msa_model.data import ImageStore
    from msa_model.pipeline import load_splits, train_loader

    cfg = from_dict(
        DataConfig,
        {**preset["data"], "json": str(data_json), "images": str(ROOT / preset["data"]["images"])},
        "data",
    )
    records = load_splits(cfg)["train"]
    store = ImageStore.from_config(cfg)
    began = time.perf_counter()
    list(train_loader(records, cfg, store, batch, seed=0, epoch=0))  # decode and cache
    decode_s = time.perf_counter() - began
    began = time.perf_counter()
    batches = list(train_loader(records, cfg, store, batch, seed=0, epoch=1))
    cached_s = time.perf_counter() - began
    info = {
        "data": str(data_json.parent),
        "train_images": len(records),
        "loader_decode_epoch_s": decode_s,
        "loader_cached_epoch_s": cached_s,
    }
    if steps:
        batches = batches[:steps]
    info["steps"] = len(batches)
    return batches, records, info


def _unfused(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same AdamW with PyTorch's default CPU implementation (a loop over tensors)."""
    groups = [{**g, "fused": None, "foreach": None} for g in optimizer.param_groups]
    return type(optimizer)(groups)


def build_arms(
    preset: dict[str, Any], records: list, cache_dir: str | None
) -> tuple[dict[str, tuple], torch.nn.Module]:
    """The four arms (model, loss, optimizer, scheduler, optim config) and the shared model."""
    from msa_model.pipeline import build_model

    model_cfg = copy.deepcopy(preset["model"])
    model_cfg["frozen_cache_dir"] = cache_dir
    torch.manual_seed(0)
    model = build_model(from_dict(ModelConfig, model_cfg, "model"), records)
    memos = {
        id(v): v for m in model.modules() for v in vars(m).values() if isinstance(v, FeatureMemo)
    }
    optim_cfg = from_dict(OptimConfig, preset["optim"], "optim")
    arms = {}
    for name in ARMS:
        loss = dict(preset["loss"])
        if name.startswith("off"):
            loss["lambda_mscma"] = loss["lambda_csmmc"] = 0.0
        loss_fn = MSALoss(from_dict(LossConfig, loss, "loss"))
        arm_model = copy.deepcopy(model, dict(memos))  # the memo objects are shared, not copied
        optimizer = build_optimizer(arm_model, optim_cfg, loss_fn)
        if name.endswith("before"):
            arm_model.mscmat.path = "projected"
            optimizer = _unfused(optimizer)
        scheduler = build_scheduler(optimizer, optim_cfg, 10_000)
        arms[name] = (arm_model, loss_fn, optimizer, scheduler, optim_cfg)
    return arms, model


@torch.no_grad()
def warm_memo(model: torch.nn.Module, batches: list[dict]) -> float:
    """One untimed pass of the frozen towers over every batch (fills and saves the memo)."""
    began = time.perf_counter()
    model.train()
    for b in batches:
        model(b["images"], **model.tokenize(b["captions"]), with_scores=False)
    model.train(False)  # the towers write new memo entries to their folder, if any
    return time.perf_counter() - began


def _epoch(arm: tuple, batches: list[dict]) -> float:
    model, loss_fn, optimizer, scheduler, cfg = arm
    began = time.perf_counter()
    for b in batches:
        train_step(
            model,
            loss_fn,
            b,
            optimizer,
            device=torch.device("cpu"),
            grad_clip_norm=cfg.grad_clip_norm,
            scheduler=scheduler,
        )
    return time.perf_counter() - began


def time_arms(
    arms: dict[str, tuple], batches: list[dict], rounds: int, names: tuple[str, ...] = ARMS
) -> dict[str, list[float]]:
    """Seconds of each arm over ``batches``, ``rounds`` times, interleaved (after one warm-up
    step per arm)."""
    for name in names:
        _epoch(arms[name], batches[:1])
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names:
            times[name].append(_epoch(arms[name], batches))
        print(
            f"  round {r + 1}/{rounds}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names),
            flush=True,
        )
    return times


def parts(arm: tuple, batches: list[dict]) -> dict[str, float]:
    """Milliseconds per step of each part of :func:`~msa_model.engine.train_step`."""
    model, loss_fn, optimizer, scheduler, cfg = arm
    acc: dict[str, float] = defaultdict(float)
    model.train()

    def tick(key: str, since: float) -> float:
        now = time.perf_counter()
        acc[key] += now - since
        return now

    for b in batches:
        t = time.perf_counter()
        tokens = model.tokenize(b["captions"])
        same_caption = caption_ids(b["captions"])
        t = tick("tokenize", t)
        pooled = model.image.pooled(b["images"])
        t = tick("image memo", t)
        text = model.text(**tokens)
        t = tick("text memo", t)
        out = model.heads(pooled, text, with_scores=False)
        t = tick("image heads", t)
        if loss_fn.needs_scores:
            out["scores"] = model.scores(pooled, out)
        t = tick("mscmat forward", t)
        loss_parts = loss_fn(out, b["image_ids"], caption_ids=same_caption)
        bool(torch.isfinite(loss_parts["loss"]))
        t = tick("loss forward", t)
        optimizer.zero_grad(set_to_none=True)
        loss_parts["loss"].backward()
        t = tick("backward", t)
        optimizer.step()
        scheduler.step()
        t = tick("optimizer", t)
        {k: float(v.detach()) for k, v in loss_parts.items()}
        tick("other", t)
    return {key: 1000 * value / len(batches) for key, value in acc.items()}


def run(
    steps: int | None = None,
    rounds: int = 3,
    synthetic: bool = False,
    threads: int | None = 1,
    with_parts: bool = False,
    cache_dir: str | None = "preset",
) -> dict[str, Any]:
    """Build, warm, time; returns a JSON-serialisable row (medians and ratios)."""
    if threads:
        torch.set_num_threads(threads)
    preset = _preset()
    batches, records, info = load_batches(preset, steps, synthetic)
    if cache_dir == "preset":
        cache_dir = None if info["data"] == "synthetic" else preset["model"]["frozen_cache_dir"]
    arms, model = build_arms(preset, records, cache_dir)
    info["memo_warm_s"] = warm_memo(model, batches)
    print(
        f"[msa_cost] {info['steps']} steps of batch {preset['train']['batch_size']} "
        f"({info['data']}), memo warmed in {info['memo_warm_s']:.1f} s, "
        f"{torch.get_num_threads()} torch thread(s)",
        flush=True,
    )
    times = time_arms(arms, batches, rounds)
    median = {name: statistics.median(v) for name, v in times.items()}
    paired = {
        "after": statistics.median(a / b for a, b in zip(times["on"], times["off"], strict=True)),
        "before": statistics.median(
            a / b for a, b in zip(times["on_before"], times["off_before"], strict=True)
        ),
    }
    row = {
        **info,
        "threads": torch.get_num_threads(),
        "rounds": rounds,
        "times_s": times,
        "median_s": median,
        "ratio_after": median["on"] / median["off"],
        "ratio_before": median["on_before"] / median["off_before"],
        "paired_ratio_median": paired,
        "on_speedup": median["on_before"] / median["on"],
    }
    if with_parts:
        row["parts_ms_per_step"] = {name: parts(arms[name], batches) for name in ARMS}
    return row


def _print(row: dict[str, Any]) -> None:
    med = row["median_s"]
    unit = "epoch" if row.get("train_images") and row["steps"] > 1 else f"{row['steps']} steps"
    print(f"\nmedian seconds per {unit} ({row['rounds']} interleaved rounds):")
    for name in ARMS:
        print(f"  {name:<10} {med[name]:8.3f} s  ({1000 * med[name] / row['steps']:.1f} ms/step)")
    print(
        f"MSA on / off, before: {row['ratio_before']:.2f}x   after: {row['ratio_after']:.2f}x "
        f"(target <= 1.5; paired per-round medians {row['paired_ratio_median']['before']:.2f}x"
        f" / {row['paired_ratio_median']['after']:.2f}x); MSA-on epoch "
        f"{row['on_speedup']:.2f}x faster"
    )
    if "parts_ms_per_step" in row:
        keys = list(next(iter(row["parts_ms_per_step"].values())))
        print("\nms per step " + " ".join(f"{k:>10}" for k in ARMS))
        for key in keys:
            print(
                f"{key:<15}"
                + " ".join(f"{row['parts_ms_per_step'][a].get(key, 0):10.1f}" for a in ARMS)
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--steps",
        type=int,
        help="steps per round (default: one epoch of rsicd_dev, or 10 synthetic batches)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--synthetic", action="store_true", help="random images and captions")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    parser.add_argument("--parts", action="store_true", help="also a per-step breakdown")
    parser.add_argument(
        "--cache-dir",
        default="preset",
        help="frozen memo folder (default: the preset's; 'none': memory only)",
    )
    parser.add_argument("--json", type=Path, help="also write the row here")
    args = parser.parse_args(argv)
    cache_dir = None if args.cache_dir == "none" else args.cache_dir
    row = run(args.steps, args.rounds, args.synthetic, args.threads or None, args.parts, cache_dir)
    _print(row)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(row, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
