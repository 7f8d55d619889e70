"""Live TensorBoard event files (tensorboardX), one run per trial, written on the driver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray.train import UserCallback
from ray.tune.logger import TBXLoggerCallback
from tensorboardX import SummaryWriter
from tensorboardX.summary import hparams

from workflows.runtime.trainable import trial_run_name

__all__ = ["scalar_tag", "log_scalars", "TuneTensorBoard", "TrainTensorBoard"]

SESSION_END_TAG = "_hparams_/session_end_info"


def scalar_tag(key: str) -> str:
    """The TensorBoard tag of a reported key: grouped by its prefix (``val/val_mr``)."""
    return f"{key.split('_', 1)[0] if '_' in key else 'misc'}/{key}"


def log_scalars(writer: SummaryWriter, metrics: dict[str, Any], step: int) -> None:
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

    Each trial's run starts with its searched values as HParams (the HParams tab compares
    trials by ``metrics``, e.g. ``val/val_mr_best``), then gets every report's scalars, and
    ends marked done or failed. Being a ``TBXLoggerCallback``, it replaces the one Ray would add,
    which would write a second set of event files into each Tune trial folder.
    """

    def __init__(self, log_dir: Path, name: str, metrics: list[str] | None = None) -> None:
        super().__init__()
        self.log_dir, self.name = Path(log_dir), name
        self.metrics = [scalar_tag(m) for m in metrics or []]

    def log_trial_start(self, trial: Any) -> None:
        if trial in self._trial_writer:
            self._trial_writer[trial].close()
        writer = SummaryWriter(str(self.log_dir / trial_run_name(self.name, trial.trial_id)))
        experiment, start, _ = hparams(_hparam_values(trial.config), dict.fromkeys(self.metrics))
        writer.file_writer.add_summary(experiment)
        writer.file_writer.add_summary(start)
        self._trial_writer[trial] = writer

    def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
        if trial not in self._trial_writer:
            self.log_trial_start(trial)
        log_scalars(self._trial_writer[trial], result, int(result.get("epoch", iteration)))

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        writer = self._trial_writer.pop(trial, None)
        if writer is not None:
            writer.file_writer.add_summary(_session_end(failed))
            writer.close()


def _hparam_values(config: dict[str, Any]) -> dict[str, Any]:
    """The searched values as HParams take them (numbers, text, booleans; others as JSON)."""
    return {
        key: value if isinstance(value, (str, bool, int, float)) else json.dumps(value)
        for key, value in config.items()
    }


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
