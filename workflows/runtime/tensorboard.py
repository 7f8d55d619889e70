"""Live TensorBoard event files (tensorboardX), one run per trial, written on the driver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.train import UserCallback
from ray.tune import Callback
from tensorboardX import SummaryWriter

__all__ = ["log_scalars", "TuneTensorBoard", "TrainTensorBoard"]


def log_scalars(writer: SummaryWriter, metrics: dict[str, Any], step: int) -> None:
    """Write every numeric ``train_*``/``val_*``/``test_*``/``lr`` entry at ``step``."""
    for key, value in metrics.items():
        if (
            key.startswith(("train_", "val_", "test_", "lr", "epoch_time"))
            and isinstance(value, (int, float))
            and not isinstance(value, bool)
        ):
            group = key.split("_", 1)[0] if "_" in key else "misc"
            writer.add_scalar(f"{group}/{key}", value, step)
    writer.flush()


class TuneTensorBoard(Callback):
    """A Tune callback writing ``<log_dir>/<trial_id>`` for every trial's reports."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self._writers: dict[str, SummaryWriter] = {}

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info
    ) -> None:
        writer = self._writers.get(trial.trial_id)
        if writer is None:
            writer = SummaryWriter(str(self.log_dir / trial.trial_id))
            self._writers[trial.trial_id] = writer
        log_scalars(writer, result, int(result.get("epoch", iteration)))

    def on_experiment_end(self, trials: list, **info) -> None:
        for writer in self._writers.values():
            writer.close()


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
