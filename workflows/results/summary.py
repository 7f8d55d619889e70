"""``final/metrics.json``: each candidate's retrained runs summarised, the winner, the comparison.

The records are :mod:`workflows.results.schema`'s: a :class:`Candidate` is a config the final
stage retrained, a :class:`FinalRun` one of its retrainings, :class:`FinalSummary` the file.
"""

from __future__ import annotations

import dataclasses

from msa_model.constants import METRIC_KEYS, score_key
from workflows.results.schema import (
    SPLITS,
    Candidate,
    CandidateResult,
    Comparison,
    FinalRun,
    FinalSummary,
    Gallery,
    SplitComparison,
    Summary,
)
from workflows.results.stats import paired_difference, summarize, verdict

__all__ = ["candidate_summary", "compare", "final_summary", "pick_winner"]


def candidate_summary(candidate: Candidate, runs: list[FinalRun]) -> CandidateResult:
    """The candidate with its runs (by seed) and per split each metric's summary over them.

    A summary is :func:`~workflows.results.stats.summarize` over the runs that have the split;
    None when none has it.
    """
    runs = sorted(runs, key=lambda r: r.seed)
    splits = {}
    for split in SPLITS:
        done = [m for r in runs if (m := r.metrics(split))]
        splits[split] = (
            {k: Summary.from_json(summarize([d[k] for d in done])) for k in METRIC_KEYS}
            if done
            else None
        )
    fields = {f.name: getattr(candidate, f.name) for f in dataclasses.fields(Candidate)}
    return CandidateResult(**fields, runs=tuple(runs), **splits)


def pick_winner(candidates: list[CandidateResult], metric: str, mode: str) -> CandidateResult:
    """The candidate with the best mean validation ``metric`` (ties: the better search rank).

    Without validation (trained on train+val) the best search rank wins.
    """
    key = metric.removeprefix("val_")
    by_rank = sorted(candidates, key=lambda c: (c.rank is None, c.rank or 0))
    if not any(c.val for c in candidates):
        return by_rank[0]
    return max(
        reversed(by_rank),  # max keeps the last of equals: the better rank
        key=lambda c: score_key(c.val[key].mean if c.val else None, mode),
    )


def compare(
    winner: CandidateResult, baseline: CandidateResult, metric: str, mode: str
) -> Comparison:
    """Winner - baseline per metric and split, paired by seed, with the plain sentence."""
    key = metric.removeprefix("val_")
    theirs = {r.seed: r for r in baseline.runs}
    splits: dict[str, SplitComparison | None] = {}
    for split in SPLITS:
        pairs = [
            (mine, other)
            for r in winner.runs
            if (mine := r.metrics(split))
            and r.seed in theirs
            and (other := theirs[r.seed].metrics(split))
        ]
        if not pairs:
            splits[split] = None
            continue
        metrics = {
            k: Summary.from_json(
                paired_difference([w[k] for w, _ in pairs], [b[k] for _, b in pairs])
            )
            for k in METRIC_KEYS
        }
        splits[split] = SplitComparison(
            seeds=tuple(r.seed for r in winner.runs if r.metrics(split)),
            metrics=metrics,
            verdict=(
                "the winner is the baseline"
                if winner.label == baseline.label
                else verdict(metrics[key].to_json(), mode)
            ),
        )
    return Comparison(winner=winner.label, baseline=baseline.label, **splits)


def final_summary(
    candidates: list[Candidate],
    runs: list[FinalRun],
    *,
    metric: str,
    mode: str,
    epochs: int,
    seeds: list[int],
    retrained: bool,
    gallery: dict[str, Gallery],
    search_trials: int,
) -> FinalSummary:
    """The whole ``final/metrics.json``: every candidate summarised, the winner, the baseline."""
    summaries = [candidate_summary(c, [r for r in runs if r.label == c.label]) for c in candidates]
    winner = pick_winner(summaries, metric, mode)
    baseline = next(c for c in summaries if c.baseline)
    return FinalSummary(
        metric=metric,
        mode=mode,
        epochs=epochs,
        seeds=tuple(seeds),
        retrained=retrained,
        search_trials=search_trials,
        gallery=gallery,
        candidates=tuple(summaries),
        winner=winner,
        baseline=baseline,
        comparison=compare(winner, baseline, metric, mode),
    )
