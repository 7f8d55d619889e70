"""benchmarks.msa_cost on a tiny model (no shared data, no pretrained towers), and the fused
AdamW of build_optimizer against PyTorch's default one."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch

from benchmarks import msa_cost
from msa_model.config import OptimConfig, from_dict
from msa_model.engine import build_optimizer, train_step
from tests.conftest import TINY_MODEL

PRESET = {
    "model": {
        **TINY_MODEL,
        "image": {
            **TINY_MODEL["image"],
            "num_scales": 4,
            "freeze_backbone": True,
            "cache_frozen": True,
        },
        "text": {
            **TINY_MODEL["text"],
            "padding": "max_length",
            "freeze": True,
            "cache_frozen": True,
        },
    },
    "loss": {"lambda_mscma": 15.0, "lambda_csmmc": 10.0, "csmmc_temperature": 2.0},
    "optim": {"lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 2},
    "train": {"batch_size": 4},
    "data": {"image_size": 32},
}
RECORDS = [SimpleNamespace(captions=[" ".join(msa_cost.WORDS[i : i + 6])]) for i in range(20)]


def test_arms_share_the_memo_and_differ_only_where_meant() -> None:
    arms, model = msa_cost.build_arms(copy.deepcopy(PRESET), RECORDS, None)
    assert set(arms) == set(msa_cost.ARMS)
    batches = msa_cost._synthetic_batches(2, 4, 32)
    msa_cost.warm_memo(model, batches)
    filled = len(model.image._memo)
    assert filled == 8
    for name, (arm_model, loss_fn, optimizer, _, _) in arms.items():
        assert arm_model.image._memo is model.image._memo  # shared, not copied
        assert loss_fn.needs_scores == name.startswith("on")
        before = name.endswith("before")
        assert arm_model.mscmat.path == ("projected" if before else "auto")
        assert all(bool(g["fused"]) != before for g in optimizer.param_groups)
    times = msa_cost.time_arms(arms, batches, rounds=1)
    assert all(len(v) == 1 and min(v) > 0 for v in times.values())
    assert len(model.image._memo) == filled  # every lookup hit
    parts = msa_cost.parts(arms["on"], batches)
    assert parts["mscmat forward"] > 0 and parts["optimizer"] > 0


def test_on_arms_train_alike_before_and_after() -> None:
    """The MSA-on arm before (per-head MSCMAT, unfused AdamW) and after: the same losses.

    (Parameters are not compared one by one: the key bias and the key/value LayerNorm's bias
    shift all logits of a softmax alike, so parts of their gradients are 0 up to rounding, and
    Adam scales such rounding up to lr-sized steps, before as after.)
    """
    arms, model = msa_cost.build_arms(copy.deepcopy(PRESET), RECORDS, None)
    batches = msa_cost._synthetic_batches(3, 4, 32, seed=1)
    msa_cost.warm_memo(model, batches)
    losses = {}
    for name in ("on_before", "on"):
        arm_model, loss_fn, optimizer, scheduler, _ = arms[name]
        losses[name] = [
            train_step(
                arm_model, loss_fn, b, optimizer, device=torch.device("cpu"), scheduler=scheduler
            )
            for b in batches
        ]
    for before, after in zip(losses["on_before"], losses["on"], strict=True):
        for key in ("loss", "global", "mscma", "csmmc"):
            assert abs(before[key] - after[key]) <= 1e-4 * max(1.0, abs(before[key])), key


def test_fused_adamw_matches_the_default_one() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4)
    )
    model.image = SimpleNamespace(backbone=torch.nn.Linear(1, 1))  # build_optimizer's towers
    model.text = SimpleNamespace(encoder=torch.nn.Linear(1, 1))
    cfg = from_dict(OptimConfig, {"lr": 1e-2, "weight_decay": 0.1}, "optim")
    fused = build_optimizer(model, cfg)
    assert all(g["fused"] for g in fused.param_groups)
    twin = copy.deepcopy(model)
    default = msa_cost._unfused(build_optimizer(twin, cfg))
    assert not any(g["fused"] for g in default.param_groups)
    x = torch.randn(32, 8)
    for _ in range(5):
        for net, opt in ((model, fused), (twin, default)):
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
