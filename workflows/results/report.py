"""``final/report.md``: the final stage's comparison with confidence intervals, and the search.

Tables of every candidate's mean, std and 95% CI over seeds on val and test, the paired
difference winner - baseline with its plain sentence, chance level and gallery sizes; plots:
validation curves of every trial (baseline highlighted, chance line), the final runs, and
Optuna's importances, parallel coordinates, history and slices.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from msa_model.constants import METRIC_KEYS  # noqa: E402
from workflows.experiment.space import Distribution  # noqa: E402
from workflows.results.schema import (  # noqa: E402
    SPLITS,
    CandidateResult,
    FinalRun,
    FinalSummary,
    Summary,
)
from workflows.results.status import FAIL  # noqa: E402
from workflows.results.study_plots import (  # noqa: E402
    plot_study,
    study_from_table,
    trial_order,
)

__all__ = ["markdown_table", "summary_cell", "plot_curves", "plot_final", "write_report"]

SPLIT_NAMES = {"val": "validation", "test": "test"}


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


def summary_cell(summary: Summary | None) -> str:
    """``mean ± std [low, high]`` (2 decimals), the mean alone for one seed, blank for none."""
    if summary is None:
        return ""
    if summary.ci95 is None or summary.std is None:
        return _num(summary.mean)
    low, high = summary.ci95
    return f"{_num(summary.mean)} ± {_num(summary.std)} [{_num(low)}, {_num(high)}]"


def _num(value: float) -> str:
    """Two decimals, never ``-0.00``."""
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def plot_curves(
    history: pd.DataFrame,
    metric: str,
    path: Path,
    highlight: dict[str, str],
    chance: float | None = None,
) -> Path:
    """``metric`` per epoch, one line per trial; ``highlight`` (id -> label) drawn on top."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    groups = list(history.groupby("trial_id", sort=False))
    groups.sort(key=lambda item: item[0] in highlight)  # highlighted trials last, on top
    for trial_id, group in groups:
        if metric not in group or group[metric].isna().all():
            continue
        label = highlight.get(trial_id)
        ax.plot(
            group["epoch"],
            group[metric],
            marker="o",
            ms=3,
            lw=2.4 if label else 1.0,
            alpha=1.0 if label else 0.5,
            label=f"{trial_id} ({label})" if label else trial_id,
            zorder=3 if label else 2,
        )
    if chance is not None:
        ax.axhline(chance, color="black", ls="--", lw=1, label=f"chance ({chance:.2f})")
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch, every trial of the search (validation split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _chance(final: FinalSummary, split: str) -> float | None:
    gallery = final.gallery.get(split)
    return None if gallery is None else gallery.chance.get(final.key)


def plot_final(final: FinalSummary, path: Path) -> Path:
    """Each candidate's mean ``metric`` with its 95% CI on val and test, and chance level."""
    key = final.key
    fig, ax = plt.subplots(figsize=(7, 3.8))
    labels = [c.label for c in final.candidates]
    for offset, split in zip((-0.12, 0.12), SPLITS, strict=True):
        xs, means, errs = [], [], [[], []]
        for i, cand in enumerate(final.candidates):
            summary = (cand.summaries(split) or {}).get(key)
            if summary is None:
                continue
            low, high = summary.ci95 or (summary.mean, summary.mean)
            xs.append(i + offset)
            means.append(summary.mean)
            errs[0].append(summary.mean - low)
            errs[1].append(high - summary.mean)
        if xs:
            ax.errorbar(xs, means, yerr=errs, fmt="o", capsize=4, label=SPLIT_NAMES[split])
        chance = _chance(final, split)
        if chance is not None:
            ax.axhline(chance, ls="--", lw=1, color="gray")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_ylabel(f"{key}, mean and 95% CI over seeds")
    ax.set_title("final stage: retrained candidates (dashed: chance level)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _comparison_lines(final: FinalSummary) -> list[str]:
    key, comp, lines = final.key, final.comparison, []
    for split in SPLITS:
        diff = comp.split(split)
        if diff is None:
            continue
        d = diff.metrics[key]
        interval = f"95% CI [{d.ci95[0]:.2f}, {d.ci95[1]:.2f}]" if d.ci95 else "no interval"
        lines.append(
            f"- {SPLIT_NAMES[split]}: `{comp.winner}` - `{comp.baseline}` = "
            f"{d.mean:+.2f} {key} points ({interval}, {d.n} seeds paired): **{diff.verdict}**."
        )
    rows = [
        {
            "split": split,
            "metric": k,
            "winner": summary_cell(mine[k]),
            "baseline": summary_cell(theirs[k]),
            "difference": summary_cell(diff.metrics[k]),
        }
        for split in SPLITS
        if (diff := comp.split(split))
        and (mine := final.winner.summaries(split))
        and (theirs := final.baseline.summaries(split))
        for k in METRIC_KEYS
    ]
    return [*lines, "", markdown_table(pd.DataFrame(rows))] if rows else lines


def _candidate_tables(final: FinalSummary) -> list[str]:
    lines = []
    for split in SPLITS:
        rows = [
            {
                "candidate": c.label,
                "runs": sum(1 for r in c.runs if r.metrics(split)),
                **{k: summary_cell(summaries[k]) for k in METRIC_KEYS},
            }
            for c in final.candidates
            if (summaries := c.summaries(split))
        ]
        if rows:
            lines += [f"### {SPLIT_NAMES[split]}", "", markdown_table(pd.DataFrame(rows)), ""]
    return lines


def _params_table(final: FinalSummary, searched: list[str]) -> str:
    cands = final.candidates
    rows = [
        {"": "search rank", **{c.label: c.rank or "" for c in cands}},
        {"": "search trial", **{c.label: c.trial_id or "" for c in cands}},
        {
            "": f"search best {final.metric}",
            **{c.label: "" if c.search_score is None else c.search_score for c in cands},
        },
        *({"": key, **{c.label: c.params.get(key) for c in cands}} for key in searched),
    ]
    return markdown_table(pd.DataFrame(rows))


def _runs_table(final: FinalSummary) -> str:
    key = final.key
    rows = [
        {
            "candidate": c.label,
            "seed": r.seed,
            "tested epoch": r.epoch,
            f"val {key}": (r.val or {}).get(key, float("nan")),
            f"test {key}": (r.test or {}).get(key, float("nan")),
            "checkpoint": f"`{r.checkpoint}`",
        }
        for c in final.candidates
        for r in c.runs
    ]
    return markdown_table(pd.DataFrame(rows))


def _exported_line(final: FinalSummary) -> list[str]:
    """Which run ``msa evaluate RESULTS_DIR`` and ``msa export --model`` read."""
    run = final.best_run
    if run is None:
        return []
    why = (
        f"its best validation {final.key}"
        if run.val
        else "its first seed: trained on train+val, no validation to pick by"
    )
    return [
        f"`msa evaluate` and `msa export --model` read `{final.winner.label}` seed {run.seed} "
        f"({why}): `{run.checkpoint}`.",
        "",
    ]


def _gallery_line(final: FinalSummary) -> str:
    key = final.key
    parts = [
        f"{SPLIT_NAMES[split]} {g.images} images / {g.captions} captions "
        f"(chance {key} {g.chance[key]:.2f})"
        for split, g in final.gallery.items()
        if key in g.chance
    ]
    return (
        "Galleries: " + "; ".join(parts) + ". Chance is the exact expected value of a random "
        "ranking of the gallery."
    )


def _example_lines(winner: CandidateResult, best: FinalRun | None) -> list[str]:
    """The test queries of the winner's run that ``msa export`` takes (``best``; else its first
    run with examples): top-5 captions per image, top-5 images per caption, each marked right
    (a pair of the split) or wrong."""
    runs = ([best] if best is not None else []) + list(winner.runs)
    run = next((r for r in runs if r.examples), None)
    if run is None:
        return []
    mark = {True: "✓", False: "✗"}
    lines = [
        f"## Example queries on the test split (winner, seed {run.seed})",
        "",
        "✓: a pair of the split; ✗: another image's caption or image. Scores are cosines.",
        "",
    ]
    for query in run.examples["image_to_text"]:
        lines += [f"**Image `{query['image']}`**, its best captions:", ""]
        lines += [f"{n}. {mark[h['right']]} {h['caption']} ({h['score']:.3f})"
                  for n, h in enumerate(query["hits"], 1)]  # fmt: skip
        lines.append("")
    for query in run.examples["text_to_image"]:
        lines += [f'**Caption** "{query["caption"]}" (of `{query["image"]}`), its best images:']
        lines += [""] + [f"{n}. {mark[h['right']]} `{h['image']}` ({h['score']:.3f})"
                         for n, h in enumerate(query["hits"], 1)]  # fmt: skip
        lines.append("")
    return lines


def _collapsed_cell(value: Any) -> str:
    """``yes`` for a trial the collapse verdict flagged (True or ``"True"`` as read back)."""
    return "yes" if value is True or str(value) == "True" else ""


def write_report(
    final_dir: Path,
    *,
    name: str,
    table: pd.DataFrame,
    history: pd.DataFrame,
    final: FinalSummary,
    space: list[Distribution],
    study: tuple[str, str] | None = None,
) -> Path:
    """Write ``report.md`` and its PNGs into ``final_dir``; returns the report's path.

    ``study``: the persisted Optuna study (storage URL, name), named for optuna-dashboard.
    """
    final_dir.mkdir(parents=True, exist_ok=True)
    metric, mode, key = final.metric, final.mode, final.key
    searched = [d.key for d in space]
    winner, baseline = final.winner, final.baseline
    highlight = {}
    if baseline.trial_id:
        highlight[baseline.trial_id] = "baseline"
    if winner.trial_id and winner.label != "baseline":
        highlight[winner.trial_id] = f"winner, {winner.label}"
    plot_curves(history, metric, final_dir / "val_curves.png", highlight, _chance(final, "val"))
    plot_final(final, final_dir / "final.png")
    plots = {}
    if searched:
        order = trial_order(history, study)  # the search's order, as optuna-dashboard's
        plots = plot_study(study_from_table(table, metric, mode, space, order), space, final_dir)

    failed = table[table["status"] == FAIL]
    cands = ", ".join(f"`{c.label}`" for c in final.candidates)
    lines = [
        f"# {name}: final report",
        "",
        f"**Search**: {len(table)} trials ({len(failed)} failed), each ranked by its best "
        f"epoch's `{metric}` on the validation split (the value Optuna and ASHA were given); "
        "the baseline (the experiment's own values, the first trial) is never stopped early.",
        "",
        f"**Final stage**: {cands} retrained with seeds {list(final.seeds)} for all "
        f"{final.epochs} epochs"
        + (" on train+val (no validation: the last epoch tested)" if final.retrained else "")
        + ", each run tested once at its best validation epoch. Winner: "
        f"`{winner.label}`, the best mean validation {key}"
        + (" (the best search rank: no validation)" if final.retrained else "")
        + ".",
        "",
        _gallery_line(final),
        "",
        "## Winner vs baseline, paired by seed (percent)",
        "",
        *_comparison_lines(final),
        "",
        "## Every candidate: mean ± std [95% CI] over seeds (percent)",
        "",
        *_candidate_tables(final),
        "![final stage](final.png)",
        "",
        "## Candidates",
        "",
        _params_table(final, searched),
        "",
        "## Runs",
        "",
        _runs_table(final),
        "",
        *_exported_line(final),
        *_example_lines(winner, final.best_run),
        "## The search",
        "",
        "![validation curves](val_curves.png)",
        "",
    ]
    if study is not None:
        lines += [f"Optuna study `{study[1]}`: `optuna-dashboard {study[0]}`.", ""]
    for file, caption in plots.items():
        drawn = not caption.startswith("not drawn")
        lines += [f"![{caption}]({file})" if drawn else f"`{file}` {caption}", ""]
    shown = ["trial_id", "status", *[f"param.{k}" for k in searched]]
    shown += [f"best_{metric}", "best_epoch", "epochs", "time_s", "collapsed"]
    trials = table[[c for c in shown if c in table]].rename(
        columns=lambda c: c.removeprefix("param.")
    )
    if "collapsed" in trials:  # the loop's verdict in any epoch (msa_model.collapse)
        trials = trials.assign(collapsed=trials["collapsed"].map(_collapsed_cell))
    lines += ["### All trials", ""]
    if "collapsed" in trials:
        lines += ["collapsed: the loop's collapse verdict fired in some epoch.", ""]
    lines += [markdown_table(trials), ""]
    if not failed.empty:
        lines += ["### Failed trials", ""]
        lines += [f"- `{r.trial_id}`: {r.error}" for r in failed.itertuples()]
        lines.append("")
    path = final_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
