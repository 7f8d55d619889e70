"""The final stage's schedule: its wall time against the ideal schedule of its K x N runs.

A small search with the demo's model (``search_spaces/demo.yaml`` on the demo's 1,000-image
synthetic dataset, 3 trials, 4 epochs; ``--quick``: 300 images, 2 epochs) runs without its
final stage; then the final stage alone (:func:`workflows.runtime.final.run_final`) retrains
all 3 configs (``final.top_k: 3``, the baseline among them) with 2 new seeds each: 6 runs as
concurrent Tune trials on the local cluster's 2 CPUs (one per run), like the demo's.

The ideal schedule of runs lasting ``d_i`` on ``C`` slots takes ``max(sum(d) / C, max(d))``;
``d_i`` is each run's own time (Tune's ``time_total_s``: training, validation and its one test
read). The measured wall time is the whole stage as ``msa tune`` runs it: choosing the
candidates, starting every run's process, waiting for slots, the summary, and the report with
its plots. ``python -m benchmarks.bench_final [--quick]`` prints the result as JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["ideal_makespan", "run", "main"]


def ideal_makespan(durations: list[float], slots: int) -> float:
    """The shortest possible wall time of ``durations`` on ``slots`` parallel slots (bound)."""
    return max(sum(durations) / slots, max(durations))


def _experiment(data: Path, quick: bool) -> Any:
    from msa_model.config import load_yaml
    from workflows.experiment import SEARCH_SPACES, apply_overrides, parse_experiment

    raw = apply_overrides(
        load_yaml(SEARCH_SPACES / "demo.yaml"),
        [
            "name=bench_final",
            f"data.json={data / 'dataset.json'}",
            f"data.images={data / 'images'}",
            f"train.epochs={2 if quick else 4}",
            "search.num_samples=3",
            "search.scheduler.type=fifo",
            "final.top_k=3",  # every trial: 3 configs (the baseline among them), whatever ranks
            "final.seeds=2",
        ],
    )
    return parse_experiment(raw, source="bench_final")


def run(quick: bool = False, num_cpus: int = 2) -> dict[str, Any]:
    """Search, then time the final stage; rows and :class:`~benchmarks.runner.Check` lines."""
    import ray
    from ray.tune import ExperimentAnalysis

    from benchmarks.runner import Check
    from msa_model.data import write_synthetic_dataset
    from workflows.runtime.final import run_final
    from workflows.runtime.launch import storage_root
    from workflows.runtime.search import run_tune
    from workflows.runtime.trainable import concurrent_trials

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_synthetic_dataset(data, 300 if quick else 1000, 64, 0)
        exp = _experiment(data, quick)
        try:
            out = run_tune(exp, results_root=Path(tmp) / "results", final=False, num_cpus=num_cpus)
            root = storage_root(out, None, exp.name)
            began = time.perf_counter()
            final = run_final(out, exp, storage=root)
            wall = time.perf_counter() - began
            runs = [r for c in final.candidates for r in c.runs]
            (state,) = Path(root).glob("final_tune_*")
            durations = [
                float(t.last_result["time_total_s"]) for t in ExperimentAnalysis(str(state)).trials
            ]
            slots = concurrent_trials(exp, ray.cluster_resources(), runs=len(durations))
        finally:
            ray.shutdown()
    assert len(durations) == len(runs), "every final run must have finished"
    ideal = ideal_makespan(durations, slots)
    row = {
        "configs": len(final.candidates),
        "seeds": len(final.seeds),
        "runs": len(durations),
        "slots": slots,
        "epochs": exp.train.epochs,
        "run_s": durations,
        "ideal_s": ideal,
        "wall_s": wall,
        "ratio": wall / ideal,
    }
    case = f"{row['configs']} configs x {row['seeds']} seeds on {slots} CPUs"
    checks = [
        Check(
            "final",
            f"{case}: wall vs ideal schedule",
            wall,
            "s",
            ideal,
            wall / ideal,
            None if quick else "<= 1.2",
        ),
        Check("final", f"{case}: mean run time", sum(durations) / len(durations), "s"),
    ]
    return {"rows": [row], "checks": checks}


def main(argv: list[str] | None = None) -> int:
    """Run and print the row as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_final", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, no target")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.quick)["rows"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
