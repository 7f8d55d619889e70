"""The training loop: used by ``msa train``, every Tune trial, the final retraining and :func:`fit`.

:func:`train` builds a run from a :class:`~msa_model.spec.RunSpec`, resumes it from the
session's checkpoint, then trains, validates, reports and checkpoints every epoch. Where it runs
(a plain process, a Ray Train worker, a Tune trial) is the :class:`~msa_model.session.LoopSession`.

Determinism: the model is initialised after ``seed_everything(seed)``; the data order and caption
sampling are seeded by (seed, epoch), each item's augmentation by (seed, epoch, item); the
global torch RNG (dropout) is reseeded at the start of every epoch from (seed, epoch, rank), so
a run resumed at epoch k trains exactly as the uninterrupted one did.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from msa_model.chance import chance_metrics
from msa_model.checkpoint import (
    CheckpointError,
    checkpoint_meta,
    complete_state,
    load_model_state,
    load_training_state,
    read_checkpoint_meta,
    save_checkpoint,
)
from msa_model.collapse import collapse_reason
from msa_model.data import ImageRecord, ImageStore
from msa_model.engine import (
    build_optimizer,
    build_scheduler,
    epoch_seed,
    make_grad_scaler,
    seed_everything,
    train_epoch,
    unwrap,
)
from msa_model.evaluation import EvalSet, eval_set, evaluate
from msa_model.losses import MSALoss
from msa_model.model import MSAModel
from msa_model.pipeline import build_model, load_splits, train_loader
from msa_model.progress import Progress
from msa_model.session import LoopSession
from msa_model.spec import RunSpec

__all__ = ["LoopState", "build", "resume", "run_epoch", "save", "train", "fit"]


@dataclass
class LoopState:
    """Everything the loop changes: model, loss, optimizer, schedule, and the epochs so far."""

    model: nn.Module
    loss_fn: MSALoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    splits: dict[str, list[ImageRecord]]
    store: ImageStore
    val: EvalSet | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0


def _loader(
    spec: RunSpec, records: list[ImageRecord], store: ImageStore, session: LoopSession, epoch: int
) -> DataLoader:
    return train_loader(
        records,
        spec.data,
        store,
        spec.batch_size,
        spec.seed,
        epoch,
        session.rank,
        session.world_size,
    )


def build(spec: RunSpec, session: LoopSession) -> LoopState:
    """A fresh run: splits, image store, model (seeded), loss, optimizer, schedule, scaler."""
    seed_everything(spec.seed)
    splits = load_splits(spec.data, train_on_val=spec.train_on_val)
    store = ImageStore.from_config(spec.data)
    model = build_model(spec.model, splits["train"])
    loss_fn = MSALoss(spec.loss).to(session.device)
    optimizer = build_optimizer(model, spec.optim, loss_fn)
    steps_per_epoch = len(_loader(spec, splits["train"], store, session, 0))
    return LoopState(
        model=model,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, spec.optim, spec.epochs * steps_per_epoch),
        scaler=make_grad_scaler(session.device, spec.optim.amp),
        splits=splits,
        store=store,
        val=eval_set(splits["val"], spec.data, store) if splits["val"] else None,
    )


def resume(state: LoopState, directory: str) -> None:
    """Load a checkpoint's model, training state and history into ``state``.

    Frozen towers the checkpoint references stay as ``build`` loaded them from their source,
    after their digest is checked against the checkpoint's (a CheckpointError when it differs).
    """
    training = load_training_state(directory)
    if training is None:
        raise CheckpointError(f"{directory}: holds no training state to resume from")
    meta = read_checkpoint_meta(directory)
    stored = load_model_state(directory)
    state.model.load_state_dict(complete_state(state.model, stored, meta, directory))
    state.optimizer.load_state_dict(training["optimizer"])
    state.scheduler.load_state_dict(training["scheduler"])
    state.scaler.load_state_dict(training["scaler"])
    if "loss" in training:  # checkpoints before learnable loss parameters have none
        state.loss_fn.load_state_dict(training["loss"])
    state.start_epoch = int(training["epoch"])
    state.history = meta.get("history", [])[: state.start_epoch]


def run_epoch(state: LoopState, spec: RunSpec, session: LoopSession, epoch: int) -> dict[str, Any]:
    """Train one epoch (0-based ``epoch``) and validate; returns the epoch's report."""
    began = time.perf_counter()
    torch.manual_seed(epoch_seed(spec.seed, epoch, session.rank))
    state.loss_fn.set_epoch(epoch)  # a warm-up loss switches form by epoch
    loader = _loader(spec, state.splits["train"], state.store, session, epoch)
    progress = None
    if session.rank == 0:
        progress = Progress(len(loader), f"{spec.name} epoch {epoch + 1}/{spec.epochs}")
    try:
        parts = train_epoch(
            state.model,
            state.loss_fn,
            loader,
            state.optimizer,
            device=session.device,
            amp=spec.optim.amp,
            scaler=state.scaler,
            grad_clip_norm=spec.optim.grad_clip_norm,
            scheduler=state.scheduler,
            progress=progress,
        )
    finally:
        if progress is not None:
            progress.close()
    metrics: dict[str, Any] = {
        "epoch": epoch + 1,
        **{f"train_{key}": value for key, value in parts.items()},
        "lr": state.optimizer.param_groups[0]["lr"],
        "train_time_s": time.perf_counter() - began,
    }
    if state.val is not None:
        scores = evaluate(
            state.model,
            state.val,
            session.device,
            spec.eval_batch_size,
            spec.optim.amp,
            session.rank,
            session.world_size,
            session.gather,
        )
        metrics.update({f"val_{key}": value for key, value in scores.items()})
    metrics["epoch_time_s"] = time.perf_counter() - began
    return {**metrics, **session.extra_metrics()}


def save(state: LoopState, spec: RunSpec, directory: str) -> None:
    """Write the checkpoint after the last epoch of ``state.history`` into ``directory``."""
    epoch = len(state.history)
    inner = unwrap(state.model)
    save_checkpoint(
        directory,
        inner,
        inner.tokenizer,
        checkpoint_meta(spec.recorded(), inner, epoch, state.history),
        training_state={
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict(),
            "loss": state.loss_fn.state_dict(),
            "epoch": epoch,
        },
    )


def _report(state: LoopState, spec: RunSpec, session: LoopSession, metrics: dict) -> None:
    """Hand the epoch's report to the session, with a checkpoint when the session keeps them."""
    if not session.keeps_checkpoints:
        session.report(metrics, None)
        return
    with tempfile.TemporaryDirectory() as tmp:
        if session.rank == 0:
            save(state, spec, tmp)
        session.report(metrics, tmp if session.rank == 0 else None)


def train(spec: RunSpec, session: LoopSession | None = None) -> LoopState:
    """Run (or resume) the training of ``spec``; returns the final state with its history."""
    session = session or LoopSession()
    state = build(spec, session)
    if session.checkpoint is not None:
        with session.checkpoint_dir() as directory:
            resume(state, directory)
        if session.rank == 0:
            where = f"{session.checkpoint} at epoch {state.start_epoch}"
            session.log(f"[{spec.name}] resumed from {where}")
    state.model = session.prepare_model(
        state.model, find_unused_parameters=not state.loss_fn.needs_scores
    )
    warned = False
    chance = None if state.val is None else _chance_mr(state.val)
    for epoch in range(state.start_epoch, spec.epochs):
        metrics = run_epoch(state, spec, session, epoch)
        state.history.append(metrics)
        reason = collapse_reason(state.history, spec.loss, spec.batch_size, chance)
        metrics["collapsed"] = float(reason is not None)
        if session.rank == 0:
            shown = "  ".join(
                f"{k}={v:.3f}" for k, v in metrics.items() if k.startswith(("val_mr", "train_loss"))
            )
            session.log(f"[{spec.name}] epoch {epoch + 1}/{spec.epochs}  {shown}")
            if reason is not None and not warned:
                session.log(f"[{spec.name}] {reason}")
                warned = True
        _report(state, spec, session, metrics)
    return state


def _chance_mr(val: EvalSet) -> float:
    """The validation split's mR under a random ranking (percent)."""
    counts = torch.bincount(val.caption_image, minlength=len(val.images))
    return chance_metrics(counts.tolist())["mr"]


def fit(spec: RunSpec, session: LoopSession | None = None) -> tuple[MSAModel, list[dict]]:
    """Train without Ray (by default); returns the trained model and every epoch's report."""
    state = train(spec, session)
    return unwrap(state.model), state.history
