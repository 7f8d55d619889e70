"""How much CSMMC moves the model next to MSCMA: gradient norms on real rsicd_dev batches.

    python -m benchmarks.csmmc_gradient [--batches 8]

For the ``rsicd_lite`` model at initialisation and the paper's weights (lambda_mscma 15,
lambda_csmmc 10, T 2, B 32, S 4), prints |grad of 10 x CSMMC| / |grad of 15 x MSCMA| over the
trainable parameters, for our CSMMC (KL(teacher || scale) / B) and the authors' (KL(scale ||
teacher) / B^2). Skips when rsicd_dev or the pretrained extra is missing.
"""

from __future__ import annotations

import argparse
import importlib.util

import torch

from benchmarks.real_rsicd import DATA, PACKAGES, variant_experiment
from msa_model.config import load_yaml
from msa_model.data import ImageStore
from msa_model.losses import CSMMCLoss, MSCMALoss
from msa_model.pipeline import build_model, load_splits, train_loader
from workflows.experiment import SEARCH_SPACES

FORMS = {
    "ours (teacher_student, per_distribution_mean)": {
        "direction": "teacher_student",
        "reduction": "per_distribution_mean",
    },
    "authors (student_teacher, elementwise_mean)": {
        "direction": "student_teacher",
        "reduction": "elementwise_mean",
    },
}


def _norm(loss: torch.Tensor, params: list[torch.nn.Parameter]) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.sqrt(sum((g**2).sum() for g in grads if g is not None))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8, help="training batches to average")
    args = parser.parse_args(argv)
    if not DATA.is_dir() or any(importlib.util.find_spec(p) is None for p in PACKAGES):
        print(f"csmmc_gradient: skipped: needs {DATA} and the pretrained extra")
        return 0
    preset = load_yaml(SEARCH_SPACES / "rsicd_lite.yaml")
    preset["data"].update(json=str(DATA / "dataset.json"), images=str(DATA / "images"))
    spec = variant_experiment(preset, {}, 0).spec()
    splits, store = load_splits(spec.data), ImageStore.from_config(spec.data)
    torch.manual_seed(0)
    model = build_model(spec.model, splits["train"]).train()
    params = [p for p in model.parameters() if p.requires_grad]
    ratios: dict[str, list[float]] = {name: [] for name in FORMS}
    for index, batch in enumerate(train_loader(splits["train"], spec.data, store, 32, 0, 0)):
        if index == args.batches:
            break
        out = model(batch["images"], **model.tokenize(batch["captions"]), with_scores=True)
        mscma = _norm(15.0 * MSCMALoss(1.0)(out["scores"]), params)
        for name, kwargs in FORMS.items():
            csmmc = _norm(10.0 * CSMMCLoss(2.0, **kwargs)(out["scores"]), params)
            ratios[name].append(float(csmmc / mscma))
    for name, values in ratios.items():
        ordered = sorted(values)
        print(
            f"{name}: |grad 10 CSMMC| / |grad 15 MSCMA| median {ordered[len(ordered) // 2]:.2e} "
            f"(min {ordered[0]:.2e}, max {ordered[-1]:.2e}, {len(values)} batches)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
