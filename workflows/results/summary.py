"""``final/metrics.json``: each candidate's retrained runs summarised, the winner, the comparison.

A candidate is a config the final stage retrained (``label``: ``baseline`` or ``rank<r>``, its
search ``rank``, ``baseline`` flag, search ``trial_id`` and ``search_score``, ``params``). A run
is one of its retrainings: ``label``, ``seed``, ``run`` (its name), ``checkpoint``, ``epoch``
(the tested one) and ``val``/``test`` metrics (percent; ``val`` None when trained on train+val).
"""

from __future__ import annotations

from typing import Any

from msa_model.constants import METRIC_KEYS, score_key
from workflows.results.stats import paired_difference, summarize, verdict

__all__ = ["candidate_summary", "compare", "final_summary", "pick_winner"]

SPLITS = ("val", "test")


def candidate_summary(candidate: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The candidate with its runs (``seeds``, by seed) and ``val``/``test`` summaries per metric.

    A summary is :func:`~workflows.results.stats.summarize` over the runs that have the split;
    None when none has it.
    """
    runs = sorted(runs, key=lambda r: r["seed"])
    out = {**candidate, "seeds": runs}
    for split in SPLITS:
        done = [r[split] for r in runs if r.get(split)]
        out[split] = {k: summarize([d[k] for d in done]) for k in METRIC_KEYS} if done else None
    return out


def pick_winner(candidates: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any]:
    """The candidate with the best mean validation ``metric`` (ties: the better search rank).

    Without validation (trained on train+val) the best search rank wins.
    """
    key = metric.removeprefix("val_")
    by_rank = sorted(candidates, key=lambda c: (c["rank"] is None, c["rank"] or 0))
    if not any(c["val"] for c in candidates):
        return by_rank[0]
    return max(
        reversed(by_rank),  # max keeps the last of equals: the better rank
        key=lambda c: score_key(c["val"][key]["mean"] if c["val"] else None, mode),
    )


def compare(
    winner: dict[str, Any], baseline: dict[str, Any], metric: str, mode: str
) -> dict[str, Any]:
    """Winner - baseline per metric and split, paired by seed, with the plain sentence."""
    key = metric.removeprefix("val_")
    out: dict[str, Any] = {"winner": winner["label"], "baseline": baseline["label"]}
    theirs = {r["seed"]: r for r in baseline["seeds"]}
    for split in SPLITS:
        pairs = [
            (r[split], theirs[r["seed"]][split])
            for r in winner["seeds"]
            if r.get(split) and theirs.get(r["seed"], {}).get(split)
        ]
        if not pairs:
            out[split] = None
            continue
        out[split] = {
            "seeds": [r["seed"] for r in winner["seeds"] if r.get(split)],
            **{
                k: paired_difference([w[k] for w, _ in pairs], [b[k] for _, b in pairs])
                for k in METRIC_KEYS
            },
        }
        out[split]["verdict"] = (
            "the winner is the baseline"
            if winner["label"] == baseline["label"]
            else verdict(out[split][key], mode)
        )
    return out


def final_summary(
    candidates: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    *,
    metric: str,
    mode: str,
    epochs: int,
    seeds: list[int],
    retrained: bool,
    gallery: dict[str, Any],
    search_trials: int,
) -> dict[str, Any]:
    """The whole ``final/metrics.json``.

    Top-level ``checkpoint``, ``params`` and ``trial_id`` are the winner's (its first seed's
    checkpoint): what ``msa evaluate RESULTS_DIR`` and ``msa export`` read.
    """
    summaries = [
        candidate_summary(c, [r for r in runs if r["label"] == c["label"]]) for c in candidates
    ]
    winner = pick_winner(summaries, metric, mode)
    baseline = next(c for c in summaries if c["baseline"])
    return {
        "metric": metric,
        "mode": mode,
        "epochs": epochs,
        "seeds": seeds,
        "retrained": retrained,
        "search_trials": search_trials,
        "gallery": gallery,
        "candidates": summaries,
        "winner": winner,
        "baseline": baseline,
        "comparison": compare(winner, baseline, metric, mode),
        "trial_id": winner["trial_id"],
        "params": winner["params"],
        "checkpoint": winner["seeds"][0]["checkpoint"] if winner["seeds"] else None,
    }
