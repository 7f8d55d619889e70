"""The ``msa`` command line (also ``python -m workflows``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from msa_model.config import ConfigError

__all__ = ["main", "build_parser"]


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", help="join this Ray cluster (default: RAY_ADDRESS, else local)")
    p.add_argument("--storage", help="shared storage for Ray state/checkpoints (dir, s3://, gs://)")
    p.add_argument(
        "--results", type=Path, default=Path("results"), help="results root (default: results)"
    )
    p.add_argument("--num-cpus", type=int, help="CPUs of a local cluster (default: all)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="msa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="datasets: synthesise or check").add_subparsers(
        dest="data_command", required=True
    )
    synth = data.add_parser("synth", help="write the embedded synthetic remote-sensing dataset")
    synth.add_argument("out", type=Path)
    synth.add_argument("--images", type=int, default=1000)
    synth.add_argument("--size", type=int, default=64)
    synth.add_argument("--seed", type=int, default=0)
    check = data.add_parser("check", help="validate a Karpathy-style dataset")
    check.add_argument("json", type=Path)
    check.add_argument("--images", type=Path, required=True, help="the image folder")

    train = sub.add_parser("train", help="one Ray Train run of an experiment")
    train.add_argument("config", type=Path)
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _add_cluster_args(train)

    tune = sub.add_parser("tune", help="search with Ray Tune + Optuna, then the final stage")
    tune.add_argument("config", type=Path)
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    tune.add_argument("--resume", action="store_true", help="continue an interrupted search")
    tune.add_argument("--no-final", action="store_true", help="skip the final evaluation stage")
    _add_cluster_args(tune)

    ev = sub.add_parser("evaluate", help="retrieval metrics of a checkpoint or a results dir")
    ev.add_argument("target", type=Path, help="checkpoint folder, or results/<name>")
    ev.add_argument("--split", default="val", choices=["train", "val", "test"])
    ev.add_argument("--json", type=Path, help="evaluate on this dataset JSON instead")
    ev.add_argument("--images", type=Path, help="image folder of --json")

    ex = sub.add_parser("export", help="best config(s) of a search as YAML")
    ex.add_argument("results_dir", type=Path)
    ex.add_argument("--top", type=int, default=1)
    ex.add_argument(
        "--out", type=Path, help="output file (default: <results_dir>/best_config.yaml)"
    )

    from workflows.submit import add_submit_args

    submit = sub.add_parser(
        "submit",
        help="run `msa tune CONFIG` as a Ray job on a cluster",
        description="Submit `msa tune CONFIG` as a Ray job: msa submit CONFIG [options] "
        "[-- msa tune options, e.g. --results DIR --storage DIR]",
    )
    submit.add_argument("config", type=Path, help="experiment YAML inside --working-dir")
    add_submit_args(submit)
    submit.add_argument("tune_args", nargs=argparse.REMAINDER, help="[options] -- tune options")

    demo = sub.add_parser("demo", help="the whole pipeline on the embedded default, offline")
    demo.add_argument("--smoke-test", action="store_true", help="tiny sizes, about a minute")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _add_cluster_args(demo)
    return parser


def _cmd_data(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        from msa_model.data import write_synthetic_dataset

        path = write_synthetic_dataset(args.out, args.images, args.size, args.seed)
        print(f"wrote {args.images} images and {path}")
        return 0
    from msa_model.data import check_dataset, format_report

    print(format_report(check_dataset(args.json, args.images)))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from workflows.experiment import load_experiment
    from workflows.train_cmd import run_train

    exp = load_experiment(args.config, args.set)
    summary = run_train(exp, args.results, args.address, args.storage, args.num_cpus)
    best = summary["best"]
    print(
        f"[msa] best epoch {summary['best_epoch']}: val mR {best.get('val_mr', float('nan')):.2f}"
    )
    print(f"[msa] results in {args.results / exp.name}; checkpoint {summary['checkpoint']}")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from workflows.experiment import load_experiment
    from workflows.tune_cmd import run_tune

    exp = load_experiment(args.config, args.set)
    run_tune(
        exp,
        results_root=args.results,
        address=args.address,
        storage=args.storage,
        resume=args.resume,
        final=not args.no_final,
        num_cpus=args.num_cpus,
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from workflows.evaluate_cmd import run_evaluate

    metrics = run_evaluate(args.target, args.split, args.json, args.images)
    for key, value in metrics.items():
        print(f"{key:>8s} {value:6.2f}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from workflows.export import export_best

    for path in export_best(args.results_dir, args.top, args.out):
        print(path)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from workflows.demo import run_demo

    run_demo(args.results, args.address, args.storage, args.num_cpus, args.smoke_test, args.set)
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    from workflows.submit import run_submit

    return run_submit(args)


COMMANDS = {
    "data": _cmd_data,
    "train": _cmd_train,
    "tune": _cmd_tune,
    "evaluate": _cmd_evaluate,
    "export": _cmd_export,
    "demo": _cmd_demo,
    "submit": _cmd_submit,
}


def main(argv: list[str] | None = None) -> int:
    """Run ``msa``; returns the exit status (2: bad config or arguments, 1: other failure)."""
    args = build_parser().parse_args(argv)
    # every trial's per-epoch line matters: Ray's log deduplication would fold them together
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from msa_model.data import DatasetError

    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"msa: config error: {exc}", file=sys.stderr)
        return 2
    except (DatasetError, FileNotFoundError) as exc:
        print(f"msa: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
