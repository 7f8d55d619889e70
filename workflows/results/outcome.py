"""What a finished search prints at its end: the final stage in a few lines and where to look."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

__all__ = ["print_outcome", "print_final", "tensorboard_hint"]


def print_outcome(out: Path) -> None:
    """The final stage's summary (when it ran), the report, the best config and TensorBoard."""
    metrics = out / "final" / "metrics.json"
    if metrics.is_file():
        print_final(json.loads(metrics.read_text()))
        print(f"\n[msa] report: {out / 'final' / 'report.md'}")
    print(f"[msa] best config: {out / 'best_config.yaml'}")
    print(f"[msa] TensorBoard: {tensorboard_hint(out / 'tensorboard')}")


def tensorboard_hint(logdir: Path, installed: bool | None = None) -> str:
    """How to open the runs: ``tensorboard --logdir``, after installing it when it is missing."""
    if installed is None:
        installed = importlib.util.find_spec("tensorboard") is not None
    command = f"tensorboard --logdir {logdir}"
    return command if installed else f'pip install -e ".[tensorboard]" (once), then {command}'


def print_final(final: dict) -> None:
    """The final stage in a few lines: each candidate's mR over seeds, winner vs baseline."""
    from workflows.results.report import summary_cell  # here: the report imports matplotlib

    key, winner = final["metric"].removeprefix("val_"), final["winner"]
    print(
        f"\n[msa] winner {winner['label']} (search trial {winner['trial_id']}): {winner['params']}"
    )
    print(
        f"[msa] {key}, mean ± std [95% CI] over seeds {final['seeds']}, {final['epochs']} epochs:"
    )
    for cand in final["candidates"]:
        cells = [
            f"{split} {summary_cell((cand[split] or {}).get(key))}" for split in ("val", "test")
        ]
        print(f"  {cand['label']:9s} " + "   ".join(cells))
    for split in ("val", "test"):
        diff = final["comparison"].get(split)
        if diff:
            print(f"[msa] {split}: winner - baseline {summary_cell(diff[key])}: {diff['verdict']}")
