"""The Ray Train worker loop: the full MSA training of one config, data parallel when N > 1."""

from __future__ import annotations

import sys
import tempfile
import time
from typing import Any

import ray
import torch
import torch.distributed as dist

from msa_model.checkpoint import load_checkpoint_state, read_checkpoint_meta, save_checkpoint
from msa_model.data import ImageStore
from msa_model.engine import (
    build_optimizer,
    build_scheduler,
    encode_captions,
    encode_images,
    make_grad_scaler,
    seed_everything,
    train_epoch,
    unwrap,
)
from msa_model.losses import MSALoss
from msa_model.metrics import retrieval_metrics
from msa_model.model import MSAModel
from msa_model.pipeline import EvalSet, build_model, eval_set, load_splits, train_loader
from workflows.experiment import Experiment, parse_experiment
from workflows.runtime.session import LoopSession, train_session

__all__ = ["train_loop", "distributed_evaluate", "checkpoint_meta"]


def _say(line: str) -> None:
    """One progress line on the driver's terminal (Train's patched print would emit it twice)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _gather(obj: Any, world_size: int) -> list[Any]:
    if world_size == 1:
        return [obj]
    out: list[Any] = [None] * world_size
    dist.all_gather_object(out, obj)
    return out


def distributed_evaluate(
    model: torch.nn.Module,
    data: EvalSet,
    device: torch.device,
    batch_size: int,
    amp: str,
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, float]:
    """Retrieval metrics with images and captions sharded over the workers, then gathered.

    Every worker returns the same numbers; each image and caption is encoded exactly once.
    """
    image_ids, image_embeds = encode_images(
        model, data.loader(batch_size, list(range(rank, len(data.images), world_size))), device, amp
    )
    caption_idx = list(range(rank, len(data.captions), world_size))
    text_embeds = encode_captions(
        model, [data.captions[i] for i in caption_idx], device, batch_size, amp
    )
    parts = _gather((image_ids, image_embeds, torch.tensor(caption_idx), text_embeds), world_size)
    images = torch.empty(len(data.images), image_embeds.shape[1])
    texts = torch.empty(len(data.captions), text_embeds.shape[1])
    for ids, embeds, cidx, tembeds in parts:
        images[ids] = embeds
        texts[cidx.long()] = tembeds
    return retrieval_metrics(images, texts, data.caption_image)


def checkpoint_meta(
    exp: Experiment, model: MSAModel, epoch: int, history: list[dict[str, Any]]
) -> dict:
    """JSON facts stored with a checkpoint: enough to rebuild the model without downloads.

    ``history`` is every epoch's report so far (the last one is this checkpoint's metrics).
    """
    return {
        "epoch": epoch,
        "metrics": history[-1],
        "history": history,
        "experiment": exp.to_dict(with_search=False),
        "text_encoder_config": model.text.encoder.config.to_dict(),
    }


def train_loop(loop_config: dict[str, Any], session: LoopSession | None = None) -> None:
    """Per-worker training: resume, train, validate each epoch, report and checkpoint.

    ``loop_config`` holds ``experiment`` (a plain experiment mapping) and ``train_on_val``
    (train on train+val without validation: the final retraining of a best config).
    ``session`` is where it runs (default: a Ray Train worker).
    """
    exp = parse_experiment(loop_config["experiment"], source="train_loop_config")
    train_on_val = bool(loop_config.get("train_on_val", False))
    session = session or train_session()
    rank, world, device = session.rank, session.world_size, session.device
    torch.set_num_threads(exp.train.torch_threads or max(1, int(exp.train.cpus_per_worker)))

    seed_everything(exp.train.seed)
    splits = load_splits(exp.data, train_on_val=train_on_val)
    store = ImageStore.from_config(exp.data)
    model = build_model(exp.model, splits["train"])
    loss_fn = MSALoss(exp.loss)
    optimizer = build_optimizer(model, exp.optim)
    steps_per_epoch = len(
        train_loader(
            splits["train"], exp.data, store, exp.train.batch_size, exp.train.seed, 0, rank, world
        )
    )
    scheduler = build_scheduler(optimizer, exp.optim, exp.train.epochs * steps_per_epoch)
    scaler = make_grad_scaler(device, exp.optim.amp)

    start_epoch = 0
    history: list[dict[str, Any]] = []
    checkpoint = session.checkpoint
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            model_state, optim_state, _ = load_checkpoint_state(ckpt_dir)
            model.load_state_dict(model_state)
            optimizer.load_state_dict(optim_state["optimizer"])
            scheduler.load_state_dict(optim_state["scheduler"])
            scaler.load_state_dict(optim_state["scaler"])
            start_epoch = int(optim_state["epoch"])
            history = read_checkpoint_meta(ckpt_dir).get("history", [])[:start_epoch]
        if rank == 0:
            _say(f"[msa] resumed from {checkpoint.path} at epoch {start_epoch}")

    model = session.prepare_model(
        model, parallel_strategy_kwargs={"find_unused_parameters": not loss_fn.needs_scores}
    )
    val = eval_set(splits["val"], exp.data, store) if splits["val"] else None

    for epoch in range(start_epoch, exp.train.epochs):
        began = time.perf_counter()
        loader = train_loader(
            splits["train"],
            exp.data,
            store,
            exp.train.batch_size,
            exp.train.seed,
            epoch,
            rank,
            world,
        )
        parts = train_epoch(
            model,
            loss_fn,
            loader,
            optimizer,
            device=device,
            amp=exp.optim.amp,
            scaler=scaler,
            grad_clip_norm=exp.optim.grad_clip_norm,
            scheduler=scheduler,
        )
        train_time = time.perf_counter() - began
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            **{f"train_{k}": v for k, v in parts.items()},
            "lr": optimizer.param_groups[0]["lr"],
            "train_time_s": train_time,
        }
        if val is not None:
            scores = distributed_evaluate(
                model, val, device, exp.train.eval_batch_size, exp.optim.amp, rank, world
            )
            metrics.update({f"val_{k}": v for k, v in scores.items()})
        metrics["epoch_time_s"] = time.perf_counter() - began
        metrics["node_id"] = ray.get_runtime_context().get_node_id()  # rank 0's node
        history.append(metrics)
        if rank == 0:
            shown = "  ".join(
                f"{k}={v:.3f}" for k, v in metrics.items() if k.startswith(("val_mr", "train_loss"))
            )
            _say(f"[msa] {exp.name} epoch {epoch + 1}/{exp.train.epochs}  {shown}")
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                inner = unwrap(model)
                save_checkpoint(
                    tmp,
                    inner,
                    inner.tokenizer,
                    checkpoint_meta(exp, inner, epoch + 1, history),
                    optimizer=optimizer,
                    extra_state={
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "epoch": epoch + 1,
                    },
                )
            session.report(metrics, tmp if rank == 0 else None)
