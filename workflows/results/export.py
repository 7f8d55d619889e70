"""``msa export``: the best trial(s) of a search as runnable experiment YAML files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msa_model.config import ConfigError
from msa_model.constants import DEFAULT_METRIC, score_key
from workflows.errors import ResultsFolderError
from workflows.experiment import Experiment, dump_experiment, load_experiment
from workflows.results.schema import CandidateResult, TrialRow, read_final
from workflows.results.trials import read_table, trial_rows

__all__ = ["trial_experiment", "export_best", "export_trial", "HEADER"]

HEADER = "# exported from "  # every file msa export writes starts so; only those are replaced


def _check_replaceable(path: Path) -> None:
    """Refuse to overwrite ``path`` unless it is a file an earlier ``msa export`` wrote."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise ResultsFolderError(f"{path}: not a plain file; refusing to write over it")
    if not path.exists():
        return
    try:
        with path.open(encoding="utf-8") as f:
            ours = f.read(len(HEADER)) == HEADER
    except (OSError, UnicodeDecodeError):
        ours = False
    if not ours:
        raise ResultsFolderError(
            f"{path} exists and msa export did not write it: refusing to overwrite it; give "
            "another --out"
        )


def _write(exp: Experiment, path: Path, header: str) -> None:
    _check_replaceable(path)
    dump_experiment(exp, path, with_search=False)
    path.write_text(header + path.read_text())


def trial_experiment(exp: Experiment, params: dict[str, Any], name: str) -> Experiment:
    """``exp`` with a trial's searched values (dotted keys) filled in, named ``name``, no search."""
    return exp.with_params({**params, "name": name}, source=f"trial config {name}")


def _final_ranking(results_dir: Path, trials: int) -> list[CandidateResult]:
    """The final stage's candidates, winner first, then by mean validation score.

    Empty when there is no final stage, or when it predates trials added since (``--more``).
    """
    path = results_dir / "final" / "metrics.json"
    if not path.is_file():
        return []
    final = read_final(path)
    if final.search_trials != trials:
        return []
    others = [c for c in final.candidates if c.label != final.winner.label]
    others.sort(
        key=lambda c: score_key(c.val[final.key].mean if c.val else None, final.mode), reverse=True
    )
    return [final.winner, *others]


def _header(results_dir: Path, source: CandidateResult | TrialRow, metric: str) -> str:
    if isinstance(source, CandidateResult):  # a final-stage candidate
        summary = (source.val or {}).get(metric.removeprefix("val_"))
        score = "" if summary is None else f": mean {metric} {summary.mean:.4f}"
        return (
            f"{HEADER}{results_dir} final stage, {source.label} (search trial "
            f"{source.trial_id}){score} over {len(source.runs)} retrained seeds\n"
        )
    return (
        f"{HEADER}{results_dir} trial {source.trial_id}: "
        f"best {metric} {source.best:.4f} at epoch {source.best_epoch}\n"
    )


def export_best(results_dir: Path, top: int = 1, out: Path | None = None) -> list[Path]:
    """Write the ``top`` best configs; returns the files written.

    ``top=1`` writes ``best_config.yaml`` (or ``out``); more write ``top_configs/rank<k>.yaml``
    (or into the folder ``out``). After the final stage the ranking is its own (the winner: the
    best mean validation score over seeds); before it, the search's (each trial's best epoch).
    """
    results_dir = Path(results_dir)
    table_path = results_dir / "trials.csv"
    if not table_path.is_file():
        raise FileNotFoundError(f"{results_dir}: no trials.csv (is this a `msa tune` results dir?)")
    if top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    exp = load_experiment(results_dir / "experiment.yaml")
    metric = exp.search.metric if exp.search else DEFAULT_METRIC
    table = read_table(table_path)
    ranked = [row for row in trial_rows(table, metric) if row.best is not None]
    if not ranked:
        raise ValueError(f"{table_path}: no trial reported {metric}; nothing to export")
    final = _final_ranking(results_dir, len(table))
    sources: list[CandidateResult] | list[TrialRow] = final or ranked
    if top > len(sources):
        ranking = "the final stage ranked" if final else "the search has"
        what = "candidates" if final else f"trials that reported {metric}"
        raise ConfigError(
            f"--top {top}: {ranking} only {len(sources)} {what} in {results_dir}; ask for at "
            f"most {len(sources)} (or one trial with --trial ID)"
        )
    written = []
    for rank, source in enumerate(sources[:top], start=1):
        params = source.params
        if top == 1:
            path = out or results_dir / "best_config.yaml"
            name = f"{exp.name}_best"
        else:
            path = (out or results_dir / "top_configs") / f"rank{rank}.yaml"
            name = f"{exp.name}_rank{rank}"
        _write(trial_experiment(exp, params, name), path, _header(results_dir, source, metric))
        written.append(path)
    return written


def export_trial(results_dir: Path, trial_id: str, out: Path | None = None) -> Path:
    """Write the config of search trial ``trial_id`` (or an unambiguous prefix); returns the file.

    Default ``out``: ``<results_dir>/trial_<id>.yaml``; the experiment is named ``<name>_<id>``.
    """
    from workflows.results.locate import find_trial

    results_dir = Path(results_dir)
    exp = load_experiment(results_dir / "experiment.yaml")
    metric = exp.search.metric if exp.search else DEFAULT_METRIC
    row = find_trial(results_dir, trial_id, metric)
    if row.best is None:
        raise ConfigError(
            f"--trial {trial_id}: trial {row.trial_id} never reported {metric} (status "
            f"{row.status}); nothing to export"
        )
    path = out or results_dir / f"trial_{row.trial_id}.yaml"
    experiment = trial_experiment(exp, row.params, f"{exp.name}_{row.trial_id}")
    _write(experiment, path, _header(results_dir, row, metric))
    return path
