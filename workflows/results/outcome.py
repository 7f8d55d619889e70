"""What a finished search prints at its end: the final stage in a few lines and where to look."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from workflows.results.schema import SPLITS, FinalSummary, read_final

__all__ = ["print_outcome", "print_final", "tensorboard_hint"]


def print_outcome(out: Path) -> None:
    """The final stage's summary (when it ran), the report, the best config and TensorBoard."""
    metrics = out / "final" / "metrics.json"
    if metrics.is_file():
        print_final(read_final(metrics))
        print(f"\n[msa] report: {out / 'final' / 'report.md'}")
    print(f"[msa] best config: {out / 'best_config.yaml'}")
    print(f"[msa] TensorBoard: {tensorboard_hint(out / 'tensorboard')}")


def tensorboard_hint(logdir: Path, installed: bool | None = None) -> str:
    """How to open the runs: ``tensorboard --logdir``, after installing it when it is missing."""
    if installed is None:
        installed = importlib.util.find_spec("tensorboard") is not None
    command = f"tensorboard --logdir {logdir}"
    return command if installed else f'pip install -e ".[tensorboard]" (once), then {command}'


def print_final(final: FinalSummary) -> None:
    """The final stage in a few lines: each candidate's mR over seeds, winner vs baseline."""
    from workflows.results.report import summary_cell  # here: the report imports matplotlib

    key, winner = final.key, final.winner
    print(f"\n[msa] winner {winner.label} (search trial {winner.trial_id}): {winner.params}")
    print(
        f"[msa] {key}, mean ± std [95% CI] over seeds {list(final.seeds)}, {final.epochs} epochs:"
    )
    for cand in final.candidates:
        cells = [f"{s} {summary_cell((cand.summaries(s) or {}).get(key))}" for s in SPLITS]
        print(f"  {cand.label:9s} " + "   ".join(cells))
    for split in SPLITS:
        diff = final.comparison.split(split)
        if diff:
            cell = summary_cell(diff.metrics[key])
            print(f"[msa] {split}: winner - baseline {cell}: {diff.verdict}")
