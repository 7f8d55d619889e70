"""Typed records of what a search writes: a ``trials.csv`` row, the final stage's candidates and
runs, and ``final/metrics.json``.

Each is a frozen dataclass converted once, at the file's boundary (``to_json``/``from_json``,
``to_row``/``from_row``); code reads attributes, so a renamed field fails in the tests, not in
the report after the search. ``final/metrics.json`` carries ``schema_version``: a file without it
(written before it existed, the same layout) reads as version 1; a newer one is refused with a
message naming the file and the version.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from msa_model.constants import score_key
from workflows.errors import ResultsFolderError

__all__ = [
    "SCHEMA_VERSION",
    "SPLITS",
    "Split",
    "Summary",
    "TrialRow",
    "Candidate",
    "FinalRun",
    "CandidateResult",
    "SplitComparison",
    "Comparison",
    "Gallery",
    "FinalSummary",
    "read_final",
    "write_final",
]

SCHEMA_VERSION = 1  # of final/metrics.json
Split = Literal["val", "test"]
SPLITS: tuple[Split, ...] = ("val", "test")


def _opt_float(value: Any) -> float | None:
    """A float, None for None or NaN (pandas' empty cell)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return float(value)


@dataclass(frozen=True)
class Summary:
    """A metric over seeds (:func:`~workflows.results.stats.summarize`): ``std`` and ``ci95``
    are None for one seed."""

    n: int
    mean: float
    std: float | None
    ci95: tuple[float, float] | None

    def to_json(self) -> dict[str, Any]:
        ci = None if self.ci95 is None else list(self.ci95)
        return {"n": self.n, "mean": self.mean, "std": self.std, "ci95": ci}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Summary:
        ci = data["ci95"]
        return cls(
            n=int(data["n"]),
            mean=float(data["mean"]),
            std=_opt_float(data["std"]),
            ci95=None if ci is None else (float(ci[0]), float(ci[1])),
        )


def _summaries_json(metrics: dict[str, Summary] | None) -> dict[str, Any] | None:
    return None if metrics is None else {k: s.to_json() for k, s in metrics.items()}


def _summaries(data: Mapping[str, Any] | None) -> dict[str, Summary] | None:
    return None if not data else {k: Summary.from_json(v) for k, v in data.items()}


@dataclass(frozen=True)
class TrialRow:
    """One row of ``trials.csv``: a search trial's params, best and last metrics, time.

    Columns: ``trial_id``, ``status``, ``param.<key>``..., ``params`` (JSON), ``best_<metric>``,
    ``best_epoch``, ``best_checkpoint``, ``last.<metric>``... (these four only once the trial
    reported the metric), ``epochs``, ``train_s``, ``time_s``, ``collapsed``, ``error``.
    """

    trial_id: str
    status: str  # COMPLETE, PRUNED (stopped early) or FAIL: workflows.results.status
    params: dict[str, Any]
    best: float | None = None  # the best epoch's search metric (``best_<metric>``)
    best_epoch: int | None = None
    best_checkpoint: str | None = None  # relative to the results folder once written
    last: dict[str, Any] = field(default_factory=dict)  # the last epoch's val_*/train_* values
    epochs: int = 0  # epochs trained
    train_s: float = 0.0  # time inside the epochs
    time_s: float = 0.0  # the trial's wall time
    collapsed: bool = False  # the loop's collapse verdict in any epoch
    error: str | None = None

    def to_row(self, metric: str) -> dict[str, Any]:
        """The CSV row (column -> value)."""
        row: dict[str, Any] = {"trial_id": self.trial_id, "status": self.status}
        row.update({f"param.{k}": v for k, v in self.params.items()})
        row["params"] = json.dumps(self.params, sort_keys=True)
        if self.best is not None:
            row[f"best_{metric}"] = self.best
            row["best_epoch"] = self.best_epoch
            row["best_checkpoint"] = self.best_checkpoint
            row.update({f"last.{k}": v for k, v in self.last.items()})
        row.update(epochs=self.epochs, train_s=self.train_s, time_s=self.time_s)
        row.update(collapsed=self.collapsed, error=self.error)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any], metric: str) -> TrialRow:
        """A row as read back (:func:`~workflows.results.trials.read_table`): empty cells None."""
        text = lambda key: row[key] if isinstance(row.get(key), str) else None  # noqa: E731
        epoch = _opt_float(row.get("best_epoch"))
        return cls(
            trial_id=str(row["trial_id"]),
            status=str(row["status"]),
            params=json.loads(row["params"]),
            best=_opt_float(row.get(f"best_{metric}")),
            best_epoch=None if epoch is None else int(epoch),
            best_checkpoint=text("best_checkpoint"),
            last={
                k.removeprefix("last."): v
                for k, v in row.items()
                if k.startswith("last.") and not (isinstance(v, float) and math.isnan(v))
            },
            epochs=int(_opt_float(row.get("epochs")) or 0),
            train_s=_opt_float(row.get("train_s")) or 0.0,
            time_s=_opt_float(row.get("time_s")) or 0.0,
            collapsed=row.get("collapsed") in (True, "True"),
            error=text("error"),
        )


@dataclass(frozen=True)
class Candidate:
    """A config the final stage retrains: ``rank<r>`` of the search's distinct configs, or the
    ``baseline`` (the experiment's own values; ``rank`` None when it never reported)."""

    label: str
    rank: int | None
    baseline: bool
    trial_id: str | None  # its search trial
    search_score: float | None  # that trial's best validation value
    params: dict[str, Any]

    def to_json(self) -> dict[str, Any]:  # a candidate's own fields (not a subclass's)
        return {f.name: getattr(self, f.name) for f in fields(Candidate)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Candidate:
        return cls(**_candidate_fields(data))


def _candidate_fields(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "label": str(data["label"]),
        "rank": data["rank"],
        "baseline": bool(data["baseline"]),
        "trial_id": data["trial_id"],
        "search_score": _opt_float(data["search_score"]),
        "params": dict(data["params"]),
    }


@dataclass(frozen=True)
class FinalRun:
    """One retraining of a candidate with one seed, tested once at its best validation epoch."""

    label: str  # its candidate's
    seed: int
    run: str  # its stable name (and folder under final_runs/)
    checkpoint: str  # the tested one, relative to the results folder
    epoch: int  # the tested epoch
    val: dict[str, float] | None  # percent; None when trained on train+val
    test: dict[str, float] | None
    examples: dict[str, Any] = field(default_factory=dict)  # a few test queries and their hits

    def metrics(self, split: Split) -> dict[str, float] | None:
        return self.val if split == "val" else self.test

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FinalRun:
        return cls(
            label=str(data["label"]),
            seed=int(data["seed"]),
            run=str(data["run"]),
            checkpoint=str(data["checkpoint"]),
            epoch=int(data["epoch"]),
            val=data["val"] or None,
            test=data["test"] or None,
            examples=data.get("examples") or {},  # runs before the examples had none
        )


@dataclass(frozen=True)
class CandidateResult(Candidate):
    """A candidate with its runs (by seed) and each metric's :class:`Summary` over them per
    split (None when no run has the split)."""

    runs: tuple[FinalRun, ...] = ()
    val: dict[str, Summary] | None = None
    test: dict[str, Summary] | None = None

    def summaries(self, split: Split) -> dict[str, Summary] | None:
        return self.val if split == "val" else self.test

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "seeds": [r.to_json() for r in self.runs],
            "val": _summaries_json(self.val),
            "test": _summaries_json(self.test),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CandidateResult:
        return cls(
            **_candidate_fields(data),
            runs=tuple(FinalRun.from_json(r) for r in data["seeds"]),
            val=_summaries(data["val"]),
            test=_summaries(data["test"]),
        )


@dataclass(frozen=True)
class SplitComparison:
    """Winner - baseline on one split, paired by seed: each metric's difference summarised."""

    seeds: tuple[int, ...]  # the paired seeds
    metrics: dict[str, Summary]
    verdict: str  # the plain sentence on the search metric

    def to_json(self) -> dict[str, Any]:
        return {
            "seeds": list(self.seeds),
            **{k: s.to_json() for k, s in self.metrics.items()},
            "verdict": self.verdict,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SplitComparison:
        metrics = {k: v for k, v in data.items() if k not in ("seeds", "verdict")}
        return cls(
            seeds=tuple(int(s) for s in data["seeds"]),
            metrics={k: Summary.from_json(v) for k, v in metrics.items()},
            verdict=str(data["verdict"]),
        )


@dataclass(frozen=True)
class Comparison:
    """The winner against the baseline (labels), per split; None where no seed pairs."""

    winner: str
    baseline: str
    val: SplitComparison | None
    test: SplitComparison | None

    def split(self, split: Split) -> SplitComparison | None:
        return self.val if split == "val" else self.test

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"winner": self.winner, "baseline": self.baseline}
        for split in SPLITS:
            diff = self.split(split)
            out[split] = None if diff is None else diff.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Comparison:
        val, test = (data.get(s) for s in SPLITS)
        return cls(
            winner=str(data["winner"]),
            baseline=str(data["baseline"]),
            val=None if val is None else SplitComparison.from_json(val),
            test=None if test is None else SplitComparison.from_json(test),
        )


@dataclass(frozen=True)
class Gallery:
    """A split's images, captions and the chance-level metrics of a random ranking."""

    images: int
    captions: int
    chance: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return {"images": self.images, "captions": self.captions, "chance": self.chance}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Gallery:
        return cls(int(data["images"]), int(data["captions"]), dict(data["chance"]))


@dataclass(frozen=True)
class FinalSummary:
    """``final/metrics.json``: every candidate retrained over seeds, the winner (the best mean
    validation score), the baseline and their paired comparison.

    The file's top-level ``trial_id``, ``params`` and ``checkpoint`` are the winner's (the
    checkpoint of :attr:`best_run`): what ``msa evaluate RESULTS_DIR`` and ``msa export`` read.
    """

    metric: str  # the search metric (val_*)
    mode: str
    epochs: int
    seeds: tuple[int, ...]
    retrained: bool  # trained on train+val (no validation)
    search_trials: int  # trials of the search when the final stage ran
    gallery: dict[str, Gallery]  # by split
    candidates: tuple[CandidateResult, ...]
    winner: CandidateResult
    baseline: CandidateResult
    comparison: Comparison

    @property
    def key(self) -> str:
        """The search metric without its split: ``mr`` for ``val_mr``."""
        return self.metric.removeprefix("val_")

    @property
    def trial_id(self) -> str | None:
        return self.winner.trial_id

    @property
    def params(self) -> dict[str, Any]:
        return self.winner.params

    @property
    def best_run(self) -> FinalRun | None:
        """The winner's run with the best validation score (ties: the earlier seed); its first
        run when trained on train+val (no validation); None without runs."""
        runs = self.winner.runs
        if not any(r.val for r in runs):
            return runs[0] if runs else None
        return max(reversed(runs), key=lambda r: score_key((r.val or {}).get(self.key), self.mode))

    @property
    def checkpoint(self) -> str | None:
        return None if self.best_run is None else self.best_run.checkpoint

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "metric": self.metric,
            "mode": self.mode,
            "epochs": self.epochs,
            "seeds": list(self.seeds),
            "retrained": self.retrained,
            "search_trials": self.search_trials,
            "gallery": {split: g.to_json() for split, g in self.gallery.items()},
            "candidates": [c.to_json() for c in self.candidates],
            "winner": self.winner.to_json(),
            "baseline": self.baseline.to_json(),
            "comparison": self.comparison.to_json(),
            "trial_id": self.trial_id,
            "params": self.params,
            "checkpoint": self.checkpoint,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "final/metrics.json") -> FinalSummary:
        """Read a parsed ``metrics.json``; ``source`` names it in errors.

        Raises:
            ResultsFolderError: A newer or unknown ``schema_version``, or a missing or malformed
                field (one line naming ``source``).
        """
        if not isinstance(data, Mapping):
            raise ResultsFolderError(f"{source}: not a final summary (a JSON object expected)")
        version = data.get("schema_version", 1)  # before versions: the layout of version 1
        if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
            raise ResultsFolderError(
                f"{source}: schema_version {version!r} is not one this msa reads (up to "
                f"{SCHEMA_VERSION}); read it with the msa-tune that wrote it, or a newer one"
            )
        try:
            return cls(
                metric=str(data["metric"]),
                mode=str(data["mode"]),
                epochs=int(data["epochs"]),
                seeds=tuple(int(s) for s in data["seeds"]),
                retrained=bool(data["retrained"]),
                search_trials=int(data["search_trials"]),
                gallery={s: Gallery.from_json(g) for s, g in data["gallery"].items()},
                candidates=tuple(CandidateResult.from_json(c) for c in data["candidates"]),
                winner=CandidateResult.from_json(data["winner"]),
                baseline=CandidateResult.from_json(data["baseline"]),
                comparison=Comparison.from_json(data["comparison"]),
            )
        except KeyError as exc:
            raise ResultsFolderError(f"{source}: not a final summary (no key {exc})") from None
        except (TypeError, ValueError, AttributeError, IndexError) as exc:
            raise ResultsFolderError(f"{source}: not a final summary ({exc})") from None


def read_final(path: str | Path) -> FinalSummary:
    """Read ``final/metrics.json``.

    Raises:
        ResultsFolderError: Unreadable JSON, or see :meth:`FinalSummary.from_json`.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsFolderError(f"{path}: unreadable final summary ({exc})") from None
    return FinalSummary.from_json(data, source=str(path))


def write_final(path: str | Path, summary: FinalSummary) -> Path:
    """Write ``summary`` as ``final/metrics.json`` (indented JSON)."""
    path = Path(path)
    path.write_text(json.dumps(summary.to_json(), indent=2, default=str), encoding="utf-8")
    return path
