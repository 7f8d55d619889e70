"""Samples per second of the full MSA training step, with the data loader's own rate beside it.

The step is :func:`msa_model.engine.train_step` on a real :class:`~msa_model.model.MSAModel` and
:class:`~msa_model.losses.MSALoss` (forward, loss, backward, AdamW, scheduler), fed batches that
were loaded beforehand, so the loader is not part of it. The loader is
:func:`msa_model.pipeline.train_loader` over a synthetic dataset written at the same image size,
with the data section's default ``loader_workers``; it is timed over a first epoch (PNG decoding)
and a second one (images from the in-memory cache). Its rate should be at least twice the step's
so that loading never limits training.

Cases: ``demo`` (the model, data, loss and optimiser of ``search_spaces/demo.yaml``, 64 px,
batch 32, one torch thread as in a demo trial's worker) and ``big`` (timm resnet50 + a
BERT-base-sized encoder: hidden 768, 12 layers, 12 heads, intermediate 3072, its 30,522-token
embedding table; embed_dim 512; 224 px; batch 32; all cores). Step rates use the median step.

``python -m benchmarks.bench_train_step --case big --device cuda --amp bf16 --channels-last
--tf32 --json gpu.json`` is the GPU measurement (see ``benchmarks/gpu_train_step.sh``).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from msa_model.config import DataConfig, LossConfig, ModelConfig, OptimConfig, from_dict
from msa_model.data import ImageStore, write_synthetic_dataset
from msa_model.engine import build_optimizer, build_scheduler, train_step
from msa_model.losses import MSALoss
from msa_model.pipeline import build_model, load_splits, train_loader

__all__ = ["Case", "CASES", "measure", "run", "main"]

DEMO = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "search_spaces" / "demo.yaml").read_text()
)
BERT_BASE_VOCAB = 30_522
# a demo trial's worker runs torch on this many threads (and many small ops degrade badly when
# two threads share oversubscribed cores)
DEMO_THREADS = DEMO["train"].get("torch_threads") or int(DEMO["train"]["cpus_per_worker"])
BIG_MODEL: dict[str, Any] = {
    "embed_dim": 512,
    "image": {"backbone": "resnet50", "num_scales": 4},
    "text": {
        "config": {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
        },
        "max_length": 32,
    },
    "mscmat": {"num_heads": 8},
}


@dataclass
class Case:
    """One measured configuration (the data, loss and optimiser come from the demo file)."""

    name: str
    model: dict[str, Any]  # the ``model`` section
    image_size: int
    batch_size: int
    images: int  # synthetic images written (80% train, of which 10% are carved out as val)
    warmup: int  # untimed steps
    steps: int  # timed steps
    vocab_size: int | None = None  # grow the text embedding table to this many tokens
    threads: int | None = None  # torch threads on CPU (None: torch's default, all cores)
    data: dict[str, Any] = field(default_factory=dict)  # overrides of the demo data section


CASES = {
    "demo": Case(
        "demo",
        DEMO["model"],
        DEMO["data"]["image_size"],
        DEMO["train"]["batch_size"],
        images=400,
        warmup=2,
        steps=10,
        threads=DEMO_THREADS,
    ),
    # about 30 CPU-seconds a step: one untimed and one timed step on CPU
    "big": Case(
        "big", BIG_MODEL, 224, 32, images=320, warmup=1, steps=1, vocab_size=BERT_BASE_VOCAB
    ),
}
QUICK = Case("demo", DEMO["model"], 32, 8, images=60, warmup=1, steps=2, threads=DEMO_THREADS)


def _loader_rate(
    records: list, cfg: DataConfig, store: ImageStore, batch_size: int, epoch: int
) -> tuple[float, list[dict]]:
    """Samples/s of one epoch of the training loader, and its batches."""
    start = time.perf_counter()
    batches = list(train_loader(records, cfg, store, batch_size, seed=0, epoch=epoch))
    seconds = time.perf_counter() - start
    return sum(len(b["captions"]) for b in batches) / seconds, batches


def measure(
    case: Case,
    work_dir: Path,
    device: str = "cpu",
    amp: str = "none",
    channels_last: bool = False,
    tf32: bool = False,
) -> dict[str, Any]:
    """Loader and train-step rates of ``case``; the dataset is written under ``work_dir``.

    The step rate is the batch size over the median of the timed steps' wall times.
    """
    dev = torch.device(device)
    threads = torch.get_num_threads()
    if dev.type == "cpu" and case.threads:
        torch.set_num_threads(case.threads)
    try:
        return _measure(case, work_dir, dev, amp, channels_last, tf32)
    finally:
        torch.set_num_threads(threads)


def _measure(
    case: Case, work_dir: Path, dev: torch.device, amp: str, channels_last: bool, tf32: bool
) -> dict[str, Any]:
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(f"--device {dev}: torch {torch.__version__} sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        torch.backends.cudnn.benchmark = True
    data_dir = work_dir / f"{case.name}_{case.image_size}px"
    written = time.perf_counter()
    json_path = write_synthetic_dataset(data_dir, case.images, max(32, case.image_size))
    written = time.perf_counter() - written
    data = from_dict(
        DataConfig,
        {
            **DEMO["data"],
            **case.data,
            "json": str(json_path),
            "images": str(data_dir / "images"),
            "image_size": case.image_size,
        },
        "data",
    )
    records = load_splits(data)["train"]
    store = ImageStore.from_config(data)
    cold_rate, batches = _loader_rate(records, data, store, case.batch_size, epoch=0)
    warm_rate, _ = _loader_rate(records, data, store, case.batch_size, epoch=1)

    torch.manual_seed(0)
    model = build_model(from_dict(ModelConfig, copy.deepcopy(case.model), "model"), records)
    if case.vocab_size is not None:
        model.text.encoder.resize_token_embeddings(case.vocab_size, mean_resizing=False)
    model = model.to(dev)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    loss_fn = MSALoss(from_dict(LossConfig, DEMO["loss"], "loss"))
    optim_cfg = from_dict(OptimConfig, {**DEMO["optim"], "amp": amp}, "optim")
    optimizer = build_optimizer(model, optim_cfg)
    scheduler = build_scheduler(optimizer, optim_cfg, case.warmup + case.steps)
    if channels_last:
        for b in batches:
            b["images"] = b["images"].contiguous(memory_format=torch.channels_last)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def step(i: int) -> None:
        train_step(
            model,
            loss_fn,
            batches[i % len(batches)],
            optimizer,
            device=dev,
            amp=amp,
            grad_clip_norm=optim_cfg.grad_clip_norm,
            scheduler=scheduler,
        )

    for i in range(case.warmup):
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    times = []
    for i in range(case.steps):
        start = time.perf_counter()
        step(case.warmup + i)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        times.append(time.perf_counter() - start)
    step_rate = case.batch_size / statistics.median(times)
    return {
        "case": case.name,
        "device": str(dev),
        "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "amp": amp,
        "channels_last": channels_last,
        "tf32": tf32,
        "torch_threads": torch.get_num_threads(),
        "loader_workers": data.loader_workers,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "vocab_size": model.text.encoder.config.vocab_size,
        "train_images": len(records),
        "dataset_write_s": written,
        "spec": asdict(case),
        "step_s": statistics.median(times),
        "step_times_s": times,
        "step_samples_per_s": step_rate,
        "loader_cold_samples_per_s": cold_rate,
        "loader_cached_samples_per_s": warm_rate,
        "loader_cold_over_step": cold_rate / step_rate,
        "loader_cached_over_step": warm_rate / step_rate,
        "peak_gpu_mem_gib": torch.cuda.max_memory_allocated(dev) / 2**30
        if dev.type == "cuda"
        else None,
        "peak_gpu_reserved_gib": torch.cuda.max_memory_reserved(dev) / 2**30
        if dev.type == "cuda"
        else None,
    }


def run(quick: bool = False, cases: tuple[str, ...] = ("demo", "big")) -> dict[str, Any]:
    """Both CPU cases (``quick``: the demo model at 32 px, batch 8) as rows and table checks."""
    from benchmarks.runner import Check

    specs = [QUICK] if quick else [CASES[name] for name in cases]
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(spec, Path(tmp)) for spec in specs]
    checks = []
    for r in rows:
        where = f"{r['case']} {r['spec']['image_size']}px b{r['spec']['batch_size']}"
        for kind in ("cold", "cached"):
            checks.append(
                Check(
                    "train_step",
                    f"{where} loader ({kind}) / step, samples/s",
                    r[f"loader_{kind}_samples_per_s"],
                    "/s",
                    r["step_samples_per_s"],
                    r[f"loader_{kind}_over_step"],
                    None if quick else ">= 2",
                )
            )
    return {"rows": rows, "checks": checks}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (one case); prints the row as JSON and writes it with --json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), default="big")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--amp", choices=["none", "bf16", "fp16"], default="none")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--tf32", action="store_true")
    parser.add_argument("--warmup", type=int, help="untimed steps (default: the case's)")
    parser.add_argument("--steps", type=int, help="timed steps (default: the case's)")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--json", type=Path, help="also write the row here")
    args = parser.parse_args(argv)
    case = CASES[args.case]
    for key in ("warmup", "steps", "batch_size"):
        if getattr(args, key) is not None:
            setattr(case, key, getattr(args, key))
    with tempfile.TemporaryDirectory() as tmp:
        row = measure(case, Path(tmp), args.device, args.amp, args.channels_last, args.tf32)
    text = json.dumps(row, indent=2)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
