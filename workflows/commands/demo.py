"""``msa demo``: the whole pipeline on the embedded default, offline, on CPU."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from workflows.commands.options import add_cluster, add_set
from workflows.errors import ResultsFolderError
from workflows.experiment import SEARCH_SPACES, load_experiment
from workflows.results.folders import check_ownership, created_by, prepare_results_dir
from workflows.results.outcome import print_outcome

__all__ = ["HELP", "add_arguments", "run", "run_demo", "SMOKE_OVERRIDES"]

HELP = "the whole pipeline on the embedded default, offline"
DEMO_IMAGES = 1000
SMOKE_OVERRIDES = [
    "name=demo_smoke",
    "data.json=data/synth_smoke/dataset.json",
    "data.images=data/synth_smoke/images",
    "train.epochs=2",
    "search.num_samples=2",
    "search.scheduler.grace_period=1",
    "final.top_k=1",
    "final.seeds=2",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``--smoke-test``, ``--set`` and the cluster options."""
    p.add_argument(
        "--smoke-test",
        action="store_true",
        help="tiny sizes (300 images, 2 trials of 2 epochs): a quick check that it all runs",
    )
    add_set(p)
    add_cluster(p)


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    run_demo(args.results, args.address, args.storage, args.num_cpus, args.smoke_test, args.set)
    return 0


def run_demo(
    results_root: Path = Path("results"),
    address: str | None = None,
    storage: str | None = None,
    num_cpus: int | None = None,
    smoke_test: bool = False,
    overrides: list[str] | None = None,
) -> Path:
    """Generate the synthetic data if absent, search, run the final stage, print the result."""
    from msa_model.data import write_synthetic_dataset
    from workflows.runtime.search import run_tune

    began = time.perf_counter()
    exp = load_experiment(
        SEARCH_SPACES / "demo.yaml", (SMOKE_OVERRIDES if smoke_test else []) + (overrides or [])
    )
    out = results_root / exp.name
    check_ownership(out)  # the demo replaces its own earlier results, never another folder
    if created_by(out) not in (None, "msa demo"):
        raise ResultsFolderError(
            f"{out} holds the results of {created_by(out)}, not of msa demo: refusing to replace "
            "them; pass another --results folder"
        )
    if created_by(out) is not None:
        print(f"[msa] replacing the previous demo results in {out}")
    prepare_results_dir(out, "msa demo", resume=False, overwrite=True)
    if not Path(exp.data.json).is_file():
        images = 300 if smoke_test else DEMO_IMAGES
        print(
            f"[msa] writing the synthetic dataset ({images} images) to {Path(exp.data.json).parent}"
        )
        write_synthetic_dataset(Path(exp.data.json).parent, images, exp.data.image_size, 0)
    run_tune(exp, results_root=results_root, address=address, storage=storage, num_cpus=num_cpus)
    print_outcome(out)
    print(f"[msa] demo finished in {time.perf_counter() - began:.0f} s")
    return out
