"""TensorBoard event files (tensorboardX): one run per search trial, written live on the
driver, and one per final-stage run (candidate and seed) with its test metrics.

Every run's HParams carry its values (integers as text: TensorBoard prints any number with five
digits, ``3.0000``), ``status`` (:mod:`workflows.results.status`), ``baseline`` and ``stage``
(``search``: with its ``trial`` id; ``final``: with its ``candidate`` label and ``seed``). One
HParams experiment at the log dir's root names those columns and the metrics for all runs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ray.train import UserCallback
from ray.tune.logger import TBXLoggerCallback
from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams

from workflows.results.status import COMPLETE, FAIL, trial_status
from workflows.runtime.trainable import trial_run_name

__all__ = [
    "FINAL_DIR",
    "scalar_tag",
    "log_scalars",
    "log_final_runs",
    "TuneTensorBoard",
    "TrainTensorBoard",
]

SESSION_END_TAG = "_hparams_/session_end_info"
FINAL_DIR = "final"  # under the log dir: the final stage's runs, <label>_seed<seed>
# the HParams every run has besides its searched values (an example value gives each its type)
RUN_HPARAMS = {"status": COMPLETE, "baseline": False, "stage": "search", "trial": "",
               "candidate": "", "seed": 0}  # fmt: skip


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a reported key: grouped by its prefix (``val/val_mr``)."""
    return f"{key.split('_', 1)[0] if '_' in key else 'misc'}/{key}"


def log_scalars(writer: SummaryWriter, metrics: Mapping[str, Any], step: int) -> None:
    """Write every numeric ``train_*``/``val_*``/``test_*``/``lr`` entry at ``step``."""
    for key, value in metrics.items():
        if (
            key.startswith(("train_", "val_", "test_", "lr", "epoch_time"))
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        ):
            writer.add_scalar(scalar_tag(key), value, step)
    writer.flush()


class TuneTensorBoard(TBXLoggerCallback):
    """TensorBoard for a search: ``<log_dir>/<name>_<trial id>`` per trial, scalars and HParams.

    Each trial's run gets every report's scalars; when it ends, its HParams (the HParams tab
    compares trials by ``metrics``, e.g. ``val/val_mr_best``, and their test counterparts for
    the final stage) with its status (``PRUNED`` when it trained fewer than ``epochs``) and
    baseline flag (its values are ``baseline``), and its end marked done or failed. Being a
    ``TBXLoggerCallback``, it replaces the one Ray would add, which would write a second set of
    event files into each Tune trial folder.
    """

    def __init__(
        self,
        log_dir: Path,
        name: str,
        metrics: list[str] | None = None,
        epochs: int | None = None,
        baseline: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.log_dir, self.name = Path(log_dir), name
        self.metrics, self.epochs, self.baseline = list(metrics or []), epochs, baseline
        self._trained: dict[Any, int] = {}

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._trial_writer:
            self._trial_writer[trial].close()
        _write_experiment(self.log_dir, _hparam_values(trial.config), self.metrics)
        writer = SummaryWriter(str(self.log_dir / trial_run_name(self.name, trial.trial_id)))
        self._trial_writer[trial] = writer

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        epoch = int(result.get("epoch", iteration))
        self._trained[trial] = max(self._trained.get(trial, 0), epoch)
        log_scalars(self._trial_writer[trial], result, epoch)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        writer = self._trial_writer.pop(trial, None)
        if writer is None:
            return
        trained = self._trained.pop(trial, int((trial.last_result or {}).get("epoch", 0)))
        status = trial_status(failed, trained, self.epochs)
        values = {
            **_hparam_values(trial.config),
            "status": status,
            "baseline": self.baseline is not None and trial.config == self.baseline,
            "stage": "search",
            "trial": str(trial.trial_id),
        }
        _write_session(writer, values, status)
        writer.close()


def log_final_runs(log_dir: Path, runs: Iterable[Mapping[str, Any]], metric: str) -> list[Path]:
    """Write the final stage's runs: ``<log_dir>/final/<label>_seed<seed>`` each.

    Args:
        log_dir: The search's TensorBoard folder.
        runs: One mapping per run: ``label``, ``seed``, ``params`` (its candidate's searched
            values), ``baseline``, ``epoch`` (the tested one), ``val`` and ``test`` (metric ->
            percent, ``mr``, ``i2t_r1``...; None when the split was not read).
        metric: The search's metric (``val_mr``): the HParams tab's metric columns.

    Each run holds its val and test metrics as scalars at the tested epoch (``val/val_mr``,
    ``test/test_mr``...) and HParams: its values, ``status`` COMPLETE, ``baseline``, ``stage``
    final, ``candidate`` and ``seed``. A run written before (a resumed final stage) is replaced.
    Returns the runs' folders.
    """
    runs = list(runs)
    if runs:
        searched = _hparam_values(runs[0]["params"])
        _write_experiment(Path(log_dir), searched, [metric, f"{metric}_best"])
    folders = []
    for run in runs:
        folder = Path(log_dir) / FINAL_DIR / f"{run['label']}_seed{run['seed']}"
        shutil.rmtree(folder, ignore_errors=True)
        values = {
            **_hparam_values(run["params"]),
            "status": COMPLETE,
            "baseline": bool(run["baseline"]),
            "stage": "final",
            "candidate": str(run["label"]),
            "seed": int(run["seed"]),
        }
        writer = SummaryWriter(str(folder))
        for split in ("val", "test"):
            scores = run.get(split) or {}
            log_scalars(writer, {f"{split}_{k}": v for k, v in scores.items()}, int(run["epoch"]))
        _write_session(writer, values, COMPLETE)
        writer.close()
        folders.append(folder)
    return folders


def _write_experiment(log_dir: Path, searched: dict[str, Any], metrics: list[str]) -> None:
    """The HParams experiment at ``log_dir``'s root, once: the searched keys (typed by the
    example values ``searched``) and :data:`RUN_HPARAMS` as columns; ``metrics`` (``val_*``)
    and their ``test_*`` counterparts as metrics."""
    if any(Path(log_dir).glob("events.out.tfevents.*")):
        return
    tags = [scalar_tag(m) for m in metrics]
    tags += [
        scalar_tag(f"test_{m.removeprefix('val_')}")
        for m in metrics
        if m.startswith("val_") and not m.endswith("_best")
    ]
    experiment, _, _ = hparams({**searched, **RUN_HPARAMS}, dict.fromkeys(tags))
    with SummaryWriter(str(log_dir)) as writer:
        writer.file_writer.add_summary(experiment)


def _hparam_values(config: Mapping[str, Any]) -> dict[str, Any]:
    """The searched values as HParams shows them: integers as text (not ``3.0000``), floats,
    text and booleans as they are, others as JSON."""
    return {key: _hparam(value) for key, value in config.items()}


def _hparam(value: Any) -> str | bool | float:
    if isinstance(value, bool) or isinstance(value, (str, float)):
        return value
    return str(value) if isinstance(value, int) else json.dumps(value)


def _write_session(writer: SummaryWriter, values: dict[str, Any], status: str) -> None:
    """A run's HParams (session start) and its end, failed when ``status`` is FAIL."""
    _, start, _ = hparams(values, {})
    writer.file_writer.add_summary(start)
    writer.file_writer.add_summary(_session_end(status == FAIL))


def _session_end(failed: bool) -> Any:
    """The HParams plugin's end-of-session summary: the trial finished or failed."""
    from tensorboardX.proto.api_pb2 import Status
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData, SessionEndInfo
    from tensorboardX.proto.summary_pb2 import Summary, SummaryMetadata

    status = Status.Value("STATUS_FAILURE" if failed else "STATUS_SUCCESS")
    content = HParamsPluginData(session_end_info=SessionEndInfo(status=status), version=0)
    plugin = SummaryMetadata.PluginData(plugin_name="hparams", content=content.SerializeToString())
    return Summary(
        value=[Summary.Value(tag=SESSION_END_TAG, metadata=SummaryMetadata(plugin_data=plugin))]
    )


class TrainTensorBoard(UserCallback):
    """A Ray Train callback writing the rank-0 reports of one run to ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = str(log_dir)
        self._writer: SummaryWriter | None = None  # opened where the callback runs

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        if self._writer is None:
            self._writer = SummaryWriter(self.log_dir)
        log_scalars(self._writer, metrics[0], int(metrics[0].get("epoch", 0)))
