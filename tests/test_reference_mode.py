"""Issue 11's model switches against the authors' formulas, and the reference presets.

The expected values are written out here from the formulas (explicit LayerNorm, per-head softmax
attention, per pair), reading the module's parameters; they never call MSCMAT's own code.
"""

from __future__ import annotations

import math

import pytest
import torch

from msa_model.config import ModelConfig, TextTowerConfig, from_dict
from msa_model.losses import MSALoss
from msa_model.model import MSAModel
from msa_model.mscmat import MSCMAT, mscmat_reference
from msa_model.tokenizer import tokenizer_from_json, train_wordpiece
from tests.conftest import TINY_MODEL
from workflows.experiment import SEARCH_SPACES, parse_experiment
from workflows.experiment.inherit import load_with_bases

TOL = 1e-5
CAPTIONS = [
    "two red planes on the runway next to the forest",
    "a river",
    "farmland with a yellow car on the road in the upper left",
    "dense residential blocks and four storage tanks",
]
ALL_REFERENCE = {
    "text_global": "normalized",
    "own_projections": True,
    "shared_norms": True,
    "mask_padding": False,
}


def _layer_norm(x: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def _expected(
    module: MSCMAT,
    image,
    tokens,
    glob,
    mask,
    *,
    text_global: str = "raw",
    own_projections: bool = False,
    shared_norms: bool = False,
    mask_padding: bool = True,
) -> torch.Tensor:
    """score[s, i, j] = sigmoid(w_s . ((W_o a + b_o + t_j) * v_s(i)) + c_s), pair by pair."""
    n_scales, n_txt, length = len(image), tokens.shape[0], tokens.shape[1]
    n_img, dim = image[0].shape[0], module.embed_dim
    scores = []
    for s in range(n_scales):
        head = module.heads[s]
        attn, heads = head.attn, head.attn.num_heads
        dh = dim // heads
        w_q, w_k, w_v = attn.in_proj_weight.split(dim)
        b_q, b_k, b_v = attn.in_proj_bias.split(dim)
        norm_q = module.norm_q if shared_norms else head.norm_q
        norm_kv = module.norm_kv if shared_norms else head.norm_kv
        for i in range(n_img):
            v = image[s][i]
            if own_projections:
                v = module.proj[s].weight @ v + module.proj[s].bias
            q = w_q @ _layer_norm(v, norm_q) + b_q
            for j in range(n_txt):
                kv = _layer_norm(tokens[j], norm_kv)
                keys, values = kv @ w_k.T + b_k, kv @ w_v.T + b_v  # (L, d)
                real = torch.ones(length, dtype=torch.bool)
                if mask is not None and mask_padding and mask[j].any():
                    real = mask[j].bool()
                parts = []
                for h in range(heads):
                    sl = slice(h * dh, (h + 1) * dh)
                    logits = keys[real, sl] @ q[sl] / math.sqrt(dh)
                    weights = torch.exp(logits - logits.max())
                    parts.append((weights / weights.sum()) @ values[real, sl])
                attended = attn.out_proj.weight @ torch.cat(parts) + attn.out_proj.bias
                t = (
                    glob[j] / torch.sqrt((glob[j] ** 2).sum())
                    if text_global == "normalized"
                    else glob[j]
                )
                logit = head.score.weight[0] @ ((attended + t) * v) + head.score.bias[0]
                scores.append(1 / (1 + torch.exp(-logit)))
    return torch.stack(scores).view(n_scales, n_img, n_txt)


def _perturbed(module: MSCMAT) -> MSCMAT:
    with torch.no_grad():  # away from LayerNorm's identity and the zero biases
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module.eval()


def _setup(
    switches: dict,
    scales: int = 3,
    n_img: int = 3,
    n_txt: int = 4,
    length: int = 6,
    dim: int = 16,
    heads: int = 4,
) -> tuple[MSCMAT, list, torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1)
    widths = [5 + 3 * s for s in range(scales)] if switches.get("own_projections") else None
    torch.manual_seed(0)
    module = _perturbed(
        MSCMAT(
            dim,
            scales,
            heads,
            mask_padding=switches.get("mask_padding", True),
            text_global=switches.get("text_global", "raw"),
            in_features=widths,
            shared_norms=switches.get("shared_norms", False),
        )
    )
    image = [torch.randn(n_img, w, generator=gen) for w in (widths or [dim] * scales)]
    tokens = torch.randn(n_txt, length, dim, generator=gen)
    glob = 5.0 * torch.randn(n_txt, dim, generator=gen)  # norm ~20: normalising matters
    mask = (torch.arange(length)[None] < torch.tensor([6, 2, 4, 1])[:n_txt, None]).long()
    return module, image, tokens, glob, mask


def _grads(scores: torch.Tensor, module: MSCMAT, leaves: list[torch.Tensor]) -> list:
    weights = torch.linspace(-1.0, 2.0, scores.numel()).view_as(scores)
    params = list(module.parameters())
    return torch.autograd.grad((scores * weights).sum(), params + leaves)


SWITCHES = {
    "pytorch defaults": {},
    "text_global normalized": {"text_global": "normalized"},
    "own_projections": {"own_projections": True},
    "shared_norms": {"shared_norms": True},
    "mask_padding false": {"mask_padding": False},
    "all reference": ALL_REFERENCE,
}


@pytest.mark.parametrize("name", SWITCHES)
def test_switch_matches_formula_with_gradients(name: str) -> None:
    switches = SWITCHES[name]
    module, image, tokens, glob, mask = _setup(switches)
    leaves = [t.requires_grad_(True) for t in (*image, tokens, glob)]
    expected = _expected(module, image, tokens, glob, mask, **switches)
    got = module(image, tokens, glob, mask)
    assert got.shape == expected.shape == (3, 3, 4)
    assert (got - expected).abs().max() <= TOL
    for g_got, g_exp in zip(
        _grads(got, module, leaves), _grads(expected, module, leaves), strict=True
    ):
        assert (g_got - g_exp).abs().max() <= TOL


def test_text_global_switch_changes_only_the_global_term() -> None:
    """normalized - raw = sigmoid^-1 difference w_s . ((t/|t| - t) * v_s(i)), per pair."""
    module, image, tokens, glob, mask = _setup({})
    module, image, tokens, glob = (
        module.double(),
        [x.double() for x in image],
        tokens.double(),
        glob.double(),
    )
    raw = module(image, tokens, glob, mask)
    module.normalize_text_global = True
    normalized = module(image, tokens, glob, mask)
    unit = glob / glob.norm(dim=1, keepdim=True)
    for s, head in enumerate(module.heads):
        delta = (image[s] * head.score.weight[0]) @ (unit - glob).T  # (Bi, Bt)
        assert (torch.logit(normalized[s]) - torch.logit(raw[s]) - delta).abs().max() <= 1e-9


def test_reference_mode_fast_equals_pair_by_pair_path_with_gradients() -> None:
    torch.manual_seed(3)
    module = MSCMAT(
        24,
        4,
        12,
        mask_padding=False,
        text_global="normalized",
        in_features=[8, 16, 32, 64],
        shared_norms=True,
        init="reference",
    ).train()
    gen = torch.Generator().manual_seed(4)
    image = [torch.randn(5, c, generator=gen, requires_grad=True) for c in (8, 16, 32, 64)]
    tokens = torch.randn(6, 30, 24, generator=gen, requires_grad=True)
    glob = torch.randn(6, 24, generator=gen, requires_grad=True)
    mask = (torch.arange(30)[None] < torch.tensor([30, 9, 4, 12, 1, 20])[:, None]).long()
    leaves = [*image, tokens, glob]
    fast = module(image, tokens, glob, mask)
    ref = mscmat_reference(module, image, tokens, glob, mask)
    assert (fast - ref).abs().max() <= TOL
    for g_fast, g_ref in zip(
        _grads(fast, module, leaves), _grads(ref, module, leaves), strict=True
    ):
        assert (g_fast - g_ref).abs().max() <= TOL


def test_shared_norms_hold_one_pair_for_all_scales() -> None:
    norms = {
        n
        for n, m in MSCMAT(16, 4, 2, shared_norms=True).named_modules()
        if isinstance(m, torch.nn.LayerNorm)
    }
    assert norms == {"norm_q", "norm_kv"}
    per_scale = {
        n for n, m in MSCMAT(16, 4, 2).named_modules() if isinstance(m, torch.nn.LayerNorm)
    }
    assert per_scale == {f"heads.{s}.{k}" for s in range(4) for k in ("norm_q", "norm_kv")}


def _fraction_within_one_std(x: torch.Tensor, std: float) -> float:
    return float((x.abs() <= std).float().mean())


def test_reference_init_is_the_authors_normal_init() -> None:
    dim = 192
    torch.manual_seed(0)
    module = MSCMAT(dim, 2, 12, init="reference")
    for head in module.heads:
        in_w, out_w = head.attn.in_proj_weight.detach(), head.attn.out_proj.weight.detach()
        for weights, std in ((in_w, dim**-0.5), (out_w, dim**-0.5 / math.sqrt(2))):
            assert abs(float(weights.std()) / std - 1) < 0.02
            assert abs(float(weights.mean())) < 0.02 * std
            # a normal has 68.3% of its mass within one std (a uniform of that std: 57.7%)
            assert abs(_fraction_within_one_std(weights, std) - 0.6827) < 0.01
        assert not head.attn.in_proj_bias.any() and not head.attn.out_proj.bias.any()
    torch.manual_seed(0)
    default = MSCMAT(dim, 1, 12).heads[0].attn
    # PyTorch: xavier_uniform in_proj (std (2d)^-1/2), kaiming-uniform out_proj (std (3d)^-1/2)
    assert abs(float(default.in_proj_weight.detach().std()) * math.sqrt(2 * dim) - 1) < 0.02
    assert abs(float(default.out_proj.weight.detach().std()) * math.sqrt(3 * dim) - 1) < 0.02


def _tiny_model(**mscmat: object) -> MSAModel:
    text = {**TINY_MODEL["text"], "max_length": 31, "padding": "max_length"}
    cfg = from_dict(
        ModelConfig,
        {
            **TINY_MODEL,
            "image": {**TINY_MODEL["image"], "num_scales": 4},
            "text": text,
            "mscmat": {"num_heads": 2, **mscmat},
        },
    )
    return MSAModel(cfg, tokenizer_from_json(train_wordpiece(CAPTIONS, 200).to_str()))


def test_padding_max_length_pads_every_caption_to_max_length() -> None:
    model = _tiny_model()
    longest = model.tokenizer(CAPTIONS, padding="longest")
    fixed = model.tokenize(CAPTIONS)
    assert tuple(fixed["input_ids"].shape) == (4, 31)
    for row, ids in enumerate(longest["input_ids"]):
        n = len([t for t, m in zip(ids, longest["attention_mask"][row], strict=True) if m])
        assert fixed["input_ids"][row, :n].tolist() == ids[:n]
        assert (fixed["input_ids"][row, n:] == model.tokenizer.pad_token_id).all()
        assert fixed["attention_mask"][row].tolist() == [1] * n + [0] * (31 - n)
    model.cfg.text.padding = "longest"
    assert model.tokenize(CAPTIONS)["input_ids"].shape[1] == max(map(len, longest["input_ids"]))
    assert TextTowerConfig().padding == "longest"


@pytest.mark.parametrize("mask_padding", [True, False])
def test_fixed_padding_is_attended_only_without_masking(mask_padding: bool) -> None:
    """Scores with 31-token padding equal those with longest padding iff padding is masked."""
    torch.manual_seed(0)
    model = _tiny_model(mask_padding=mask_padding).eval()
    images = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        fixed = model(images, **model.tokenize(CAPTIONS))
        model.cfg.text.padding = "longest"
        longest = model(images, **model.tokenize(CAPTIONS))
    assert fixed["text_tokens"].shape[1] == 30
    diff = (fixed["scores"] - longest["scores"]).abs().max()
    assert (diff <= TOL) if mask_padding else (diff > 1e-3)


def test_own_projections_are_separate_from_the_global_ones() -> None:
    torch.manual_seed(0)
    model = _tiny_model(own_projections=True)
    widths = [p.in_features for p in model.image.proj]
    assert [p.in_features for p in model.mscmat.proj] == widths == [8, 16, 32, 64]
    out = model(torch.randn(2, 3, 32, 32), **model.tokenize(CAPTIONS[:2]))
    out["scores"].sum().backward()  # the scores reach the image tower through MSCMAT's layers
    assert all(p.grad.abs().sum() > 0 for p in model.mscmat.proj.parameters())
    assert all(p.grad is None for p in model.image.proj.parameters())
    assert all(p.grad is None for p in model.image.fusion.parameters())
    assert next(model.image.backbone.parameters()).grad.abs().sum() > 0  # the stem

    shared = _tiny_model()
    out = shared(torch.randn(2, 3, 32, 32), **shared.tokenize(CAPTIONS[:2]))
    out["scores"].sum().backward()
    assert shared.mscmat.proj is None
    assert all(p.grad.abs().sum() > 0 for p in shared.image.proj.parameters())


REFERENCE_FILES = ["rsitmd_reference.yaml", "rsicd_reference.yaml"]


@pytest.mark.parametrize("filename", REFERENCE_FILES)
def test_reference_yaml_holds_the_authors_run(filename: str) -> None:
    raw = load_with_bases(SEARCH_SPACES / filename)[0]
    exp = parse_experiment(raw, filename)
    model, loss, optim = exp.model, exp.loss, exp.optim
    assert model.embed_dim == 768 and model.mscmat.num_heads == 12
    assert (model.image.backbone, model.image.pretrained, model.image.num_scales) == (
        "resnet50.tv_in1k",
        True,
        4,
    )
    assert (model.text.name, model.text.max_length, model.text.padding) == (
        "bert-base-uncased",
        31,
        "max_length",
    )
    assert (
        model.mscmat.text_global,
        model.mscmat.own_projections,
        model.mscmat.shared_norms,
        model.mscmat.init,
        model.mscmat.mask_padding,
    ) == ("normalized", True, True, "reference", False)
    assert (
        loss.csmmc_direction,
        loss.csmmc_reduction,
        loss.exclude_same_image,
        loss.exclude_same_caption,
    ) == ("student_teacher", "elementwise_mean", False, False)
    assert (loss.lambda_mscma, loss.lambda_csmmc, loss.csmmc_temperature, loss.margin) == (
        15.0,
        10.0,
        2.0,
        0.5,
    )
    assert (optim.lr, optim.head_lr, optim.weight_decay, optim.schedule, optim.amp) == (
        1e-5,
        None,
        0.1,
        "constant",
        "none",
    )
    assert optim.decay_norms_and_biases is True
    assert (exp.data.image_size, exp.data.augment, exp.data.resize) == (224, [], "bilinear")
    assert (exp.train.batch_size, exp.train.epochs) == (32, 60)
    assert exp.search.searcher.start_with_config
    assert exp.search.baseline.label == "paper settings (authors' code)"
    ours = load_with_bases(SEARCH_SPACES / filename.replace("_reference", ""))[0]
    assert raw["search"]["space"] == ours["search"]["space"]


def test_reference_model_with_tiny_towers_trains_one_step() -> None:
    """The reference YAML's model and loss, towers swapped for tiny random-init ones."""
    raw = load_with_bases(SEARCH_SPACES / "rsitmd_reference.yaml")[0]
    exp = parse_experiment(raw, "rsitmd_reference.yaml")
    model_raw = raw["model"]
    model_raw["embed_dim"] = 24  # 12 heads of width 2; BERT hidden 24: no text projection
    model_raw["image"] = {
        **model_raw["image"],
        **TINY_MODEL["image"],
        "num_scales": 4,
        "backbone": "resnet10t",
        "pretrained": False,
    }
    model_raw["text"] = {
        **model_raw["text"],
        "name": None,
        "vocab_size": 200,
        "config": {**TINY_MODEL["text"]["config"], "hidden_size": 24},
    }
    cfg = from_dict(ModelConfig, model_raw, "model")
    torch.manual_seed(0)
    model = MSAModel(cfg, tokenizer_from_json(train_wordpiece(CAPTIONS, 200).to_str())).train()
    assert model.mscmat.proj is not None and model.mscmat.shared_norms
    images = torch.randn(3, 3, 32, 32)[[0, 0, 1, 2]]  # image 0 twice: a negative for MSCMA
    tokens = model.tokenize(CAPTIONS)
    assert tuple(tokens["input_ids"].shape) == (4, 31)
    out = model(images, **tokens)
    assert out["scores"].shape == (4, 4, 4)
    parts = MSALoss(exp.loss)(out, torch.tensor([0, 0, 1, 2]))
    assert torch.isfinite(parts["loss"])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=exp.optim.lr, weight_decay=exp.optim.weight_decay
    )
    optimizer.zero_grad()
    parts["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    optimizer.step()
    # timm zero-inits each residual branch's last BN: the branch's zero biases stay put
    unchanged = [n for n, p in model.named_parameters() if torch.equal(before[n], p)]
    assert unchanged and all(n.startswith("image.backbone.layer") for n in unchanged)
