"""``final/report.md``: tables of the trials and the final metrics, with PNG plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

from msa_model.constants import METRIC_KEYS  # noqa: E402

__all__ = ["markdown_table", "plot_curves", "plot_params", "write_report"]



def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        return (
            f"{value:.4g}"
            if abs(value) < 1e-2 or abs(value) >= 1e4
            else f"{value:.3f}".rstrip("0").rstrip(".")
        )
    return str(value)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of ``frame``."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return "\n".join(lines)


def plot_curves(history: pd.DataFrame, metric: str, path: Path, highlight: dict[str, str]) -> Path:
    """``metric`` per epoch, one line per trial; ``highlight`` maps trial ids to labels."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for trial_id, group in history.groupby("trial_id", sort=False):
        if metric not in group or group[metric].isna().all():
            continue
        label = highlight.get(trial_id)
        ax.plot(
            group["epoch"],
            group[metric],
            marker="o",
            ms=3,
            lw=2.2 if label else 1.0,
            alpha=1.0 if label else 0.55,
            label=f"{trial_id} ({label})" if label else trial_id,
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch, every trial (validation split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_params(
    table: pd.DataFrame, metric: str, keys: list[str], log_keys: set[str], path: Path
) -> Path:
    """Each trial's best ``metric`` against each searched parameter (one panel per key)."""
    n = max(1, len(keys))
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    best_col = f"best_{metric}"
    for ax, key in zip(axes.flat, keys, strict=False):
        col = f"param.{key}"
        done = table[table[best_col].notna()] if best_col in table else table.iloc[0:0]
        ax.scatter(
            done[col],
            done[best_col],
            c=done["status"].map({"STOPPED": "tab:orange"}).fillna("tab:blue"),
        )
        if key in log_keys:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel(key)
        ax.set_ylabel(best_col)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    fig.suptitle(
        f"best {metric} of each trial vs searched parameters (orange: stopped by ASHA)", fontsize=9
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    final_dir: Path,
    *,
    name: str,
    metric: str,
    table: pd.DataFrame,
    history: pd.DataFrame,
    final: dict[str, Any],
    paper_trial: str | None,
    paper_values: dict[str, Any],
    searched: list[str],
    log_keys: set[str],
) -> Path:
    """Write ``report.md`` and its PNGs into ``final_dir``; returns the report's path."""
    final_dir.mkdir(parents=True, exist_ok=True)
    best_id = final["trial_id"]
    highlight = {best_id: "best"}
    if paper_trial is not None:
        highlight[paper_trial] = (
            "paper settings" if paper_trial != best_id else "best = paper settings"
        )
    plot_curves(history, metric, final_dir / "val_curves.png", highlight)
    if searched:
        plot_params(table, metric, searched, log_keys, final_dir / "params.png")

    best_params = final["params"]
    compare = pd.DataFrame(
        {
            "parameter": searched,
            "paper settings": [paper_values.get(k) for k in searched],
            "best trial": [best_params.get(k) for k in searched],
        }
    )
    best_col = f"best_{metric}"
    by_id = table.set_index("trial_id")
    paper_score = by_id[best_col].get(paper_trial) if paper_trial in by_id.index else None
    metrics_rows = [
        {"split": split, **{k: final[split][k] for k in METRIC_KEYS}}
        for split in ("val", "test")
        if split in final
    ]
    shown = [
        "trial_id",
        "status",
        *[f"param.{k}" for k in searched],
        best_col,
        "best_epoch",
        "epochs",
        "time_s",
    ]
    trials = table[[c for c in shown if c in table]].rename(
        columns=lambda c: c.removeprefix("param.")
    )
    failed = table[table["status"] == "ERROR"]
    lines = [
        f"# {name}: final report",
        "",
        f"Search metric: `{metric}` on the validation split; the test split was read once, here.",
        f"Trials: {len(table)} ({len(failed)} failed). Best trial: `{best_id}` "
        f"(epoch {final['epoch']}, checkpoint `{final['checkpoint']}`)"
        + (", retrained on train+val before the test" if final.get("retrained") else "")
        + ".",
        "",
        "## Best trial, final metrics (percent)",
        "",
        markdown_table(pd.DataFrame(metrics_rows)),
        "",
        "## Best configuration vs the paper's settings",
        "",
        "The paper's settings are the experiment's own values, run as the first trial.",
        "",
        markdown_table(compare),
        "",
        f"Validation {metric}: paper settings "
        + (f"{paper_score:.2f}" if paper_score is not None and not pd.isna(paper_score) else "n/a")
        + f", tuned best {by_id[best_col].get(best_id):.2f}.",
        "",
        "## All trials",
        "",
        markdown_table(trials),
        "",
        "![validation curves](val_curves.png)",
        "",
    ]
    if searched:
        lines += ["![parameters](params.png)", ""]
    if not failed.empty:
        lines += ["## Failed trials", ""]
        lines += [f"- `{r.trial_id}`: {r.error}" for r in failed.itertuples()]
        lines.append("")
    path = final_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
