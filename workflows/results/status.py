"""A finished trial's status, one vocabulary in every view: Optuna's.

The console summary, ``trials.csv``, the Optuna study and TensorBoard's HParams all say
``COMPLETE`` (trained every epoch), ``PRUNED`` (stopped early by the scheduler: ASHA, or
``search.stop_collapsed``) or ``FAIL`` (raised), as optuna-dashboard shows them.
"""

from __future__ import annotations

__all__ = ["COMPLETE", "FAIL", "PRUNED", "STATUSES", "trial_status"]

COMPLETE = "COMPLETE"
PRUNED = "PRUNED"
FAIL = "FAIL"
STATUSES = (COMPLETE, PRUNED, FAIL)


def trial_status(failed: bool, trained: int, epochs: int | None) -> str:
    """The status of a finished trial that trained ``trained`` of ``epochs`` epochs.

    Args:
        failed: The trial raised (after its retries).
        trained: Its last epoch.
        epochs: The epochs a trial trains when not stopped; None: unknown (never ``PRUNED``).
    """
    if failed:
        return FAIL
    return PRUNED if epochs is not None and trained < epochs else COMPLETE
