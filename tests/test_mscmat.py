"""MSCMAT: the batched fast path equals the pair-by-pair reference, values and gradients."""

from __future__ import annotations

import pytest
import torch

from msa_model.mscmat import MSCMAT, mscmat_reference

TOL = 1e-5


def _module(dim: int, scales: int, heads: int, seed: int = 0, **kwargs) -> MSCMAT:
    torch.manual_seed(seed)
    module = MSCMAT(dim, scales, heads, **kwargs).eval()
    with torch.no_grad():  # move away from the identity init of LayerNorm / zero biases
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


def _inputs(
    scales: int, n_img: int, n_txt: int, length: int, dim: int, masked: bool, seed: int = 1
) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    image = torch.randn(scales, n_img, dim, generator=gen)
    tokens = torch.randn(n_txt, length, dim, generator=gen)
    glob = torch.randn(n_txt, dim, generator=gen)
    mask = None
    if masked:
        lengths = torch.randint(1, length + 1, (n_txt,), generator=gen)
        mask = (torch.arange(length)[None] < lengths[:, None]).long()
    return image, tokens, glob, mask


def _run(fn, module: MSCMAT, image, tokens, glob, mask, weights):
    """Scores and the gradients of every parameter and input under a weighted-sum loss."""
    images = [t.detach().clone().requires_grad_(True) for t in image]  # per-scale leaves
    leaves = [t.detach().clone().requires_grad_(True) for t in (tokens, glob)]
    module.zero_grad(set_to_none=True)
    scores = fn(module, images, *leaves, mask)
    (scores * weights).sum().backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters()}
    grads.update({f"image{s}": t.grad for s, t in enumerate(images)})
    grads.update({f"input{i}": t.grad for i, t in enumerate(leaves)})
    return scores.detach(), grads


CASES = [  # (Bi, Bt, L, heads, S, d)
    (1, 1, 1, 1, 1, 8),
    (2, 3, 4, 2, 2, 8),
    (5, 4, 7, 4, 3, 16),
    (6, 6, 12, 4, 4, 32),
    (3, 8, 5, 8, 1, 32),
]


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("mask_padding", [True, False])
@pytest.mark.parametrize("case", CASES)
def test_fast_equals_reference(case, masked, mask_padding):
    n_img, n_txt, length, heads, scales, dim = case
    module = _module(dim, scales, heads, mask_padding=mask_padding)
    inputs = _inputs(scales, n_img, n_txt, length, dim, masked)
    weights = torch.randn(scales, n_img, n_txt)
    fast, g_fast = _run(lambda m, *a: m(*a), module, *inputs, weights)
    ref, g_ref = _run(mscmat_reference, module, *inputs, weights)
    assert fast.shape == (scales, n_img, n_txt)
    assert (fast - ref).abs().max() <= TOL
    assert g_fast.keys() == g_ref.keys()
    for name in g_fast:
        assert (g_fast[name] - g_ref[name]).abs().max() <= TOL, name


MODES = {  # MSCMAT keyword arguments: each reference-code switch alone, then all together
    "text_global": {"text_global": "normalized"},
    "own_projections": {"in_features": "pooled"},
    "shared_norms": {"shared_norms": True},
    "init": {"init": "reference"},
    "reference": {
        "text_global": "normalized",
        "in_features": "pooled",
        "shared_norms": True,
        "init": "reference",
        "mask_padding": False,
    },
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", [CASES[1], CASES[3]])
def test_fast_equals_reference_in_every_mode(case, mode):
    n_img, n_txt, length, heads, scales, dim = case
    kwargs = dict(MODES[mode])
    image, tokens, glob, mask = _inputs(scales, n_img, n_txt, length, dim, masked=True)
    if kwargs.get("in_features") == "pooled":  # pooled stage vectors of widths 3, 5, 7, ...
        kwargs["in_features"] = [3 + 2 * s for s in range(scales)]
        gen = torch.Generator().manual_seed(2)
        image = [torch.randn(n_img, c, generator=gen) for c in kwargs["in_features"]]
    module = _module(dim, scales, heads, **kwargs)
    weights = torch.randn(scales, n_img, n_txt)
    fast, g_fast = _run(lambda m, *a: m(*a), module, image, tokens, glob, mask, weights)
    ref, g_ref = _run(mscmat_reference, module, image, tokens, glob, mask, weights)
    assert fast.shape == (scales, n_img, n_txt)
    assert (fast - ref).abs().max() <= TOL
    assert g_fast.keys() == g_ref.keys()
    for name in g_fast:
        assert (g_fast[name] - g_ref[name]).abs().max() <= TOL, name


def test_reference_matches_literal_pair_loop():
    """The shared reference is itself the plain per-pair computation."""
    module = _module(16, 2, 4)
    image, tokens, glob, mask = _inputs(2, 3, 4, 6, 16, masked=True)
    expected = torch.empty(2, 3, 4)
    for s, head in enumerate(module.heads):
        for i in range(3):
            for j in range(4):
                kv = head.norm_kv(tokens[j : j + 1])
                a, _ = head.attn(
                    head.norm_q(image[s, i : i + 1]).unsqueeze(1),
                    kv,
                    kv,
                    key_padding_mask=~mask[j : j + 1].bool(),
                )
                z = (a[0, 0] + glob[j]) * image[s, i]
                expected[s, i, j] = torch.sigmoid(head.score(z))[0]
    with torch.no_grad():
        assert (mscmat_reference(module, image, tokens, glob, mask) - expected).abs().max() <= TOL
        assert (module(image, tokens, glob, mask) - expected).abs().max() <= TOL


def test_padding_is_ignored_when_masked():
    module = _module(16, 2, 2)
    image, tokens, glob, _ = _inputs(2, 3, 4, 6, 16, masked=False)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[:, 4:] = False
    changed = tokens.clone()
    changed[:, 4:] = 100.0 * torch.randn(4, 2, 16)
    with torch.no_grad():
        assert torch.equal(module(image, tokens, glob, mask), module(image, changed, glob, mask))
        unmasked = _module(16, 2, 2, mask_padding=False)
        assert not torch.allclose(
            unmasked(image, tokens, glob, mask), unmasked(image, changed, glob, mask)
        )


def test_range_shape_and_all_padding_caption():
    module = _module(16, 3, 4)
    image, tokens, glob, mask = _inputs(3, 4, 5, 6, 16, masked=True)
    mask[2] = 0  # a caption with no real token: uniform attention over its positions
    image.requires_grad_(True)
    scores = module(image, tokens, glob, mask)
    assert scores.shape == (3, 4, 5)
    assert torch.isfinite(scores).all()
    assert ((scores > 0) & (scores < 1)).all()
    scores.sum().backward()
    assert torch.isfinite(image.grad).all()
    no_mask = module(image, tokens, glob, None)
    torch.testing.assert_close(scores[:, :, 2], no_mask[:, :, 2], atol=TOL, rtol=0)
    ref = mscmat_reference(module, image, tokens, glob, mask)
    assert (scores - ref).abs().max() <= TOL


def test_dropout_only_in_training():
    module = _module(16, 2, 4, dropout=0.5)
    image, tokens, glob, mask = _inputs(2, 3, 4, 6, 16, masked=True)
    with torch.no_grad():
        eval_scores = module(image, tokens, glob, mask)
        assert torch.equal(eval_scores, module(image, tokens, glob, mask))
        module.train()
        torch.manual_seed(0)
        assert not torch.allclose(module(image, tokens, glob, mask), eval_scores)


def test_shape_errors():
    module = MSCMAT(16, 2, 4)
    image, tokens, glob, mask = _inputs(3, 2, 2, 4, 16, masked=True)
    with pytest.raises(ValueError, match="num_scales"):
        module(image, tokens, glob, mask)
    with pytest.raises(ValueError, match="divisible"):
        MSCMAT(10, 2, 4)


def _with_path(module: MSCMAT, path: str):
    def call(m, *args):
        m.path = path
        try:
            return m(*args)
        finally:
            m.path = "auto"

    return call


FOLD_CASES = [  # (Bi, Bt, L, heads, S, d): the preset's shape family, small
    (4, 4, 7, 2, 4, 16),
    (5, 3, 6, 4, 2, 32),
    (2, 6, 9, 1, 1, 8),
]


@pytest.mark.parametrize("mode", ["default", *MODES])
@pytest.mark.parametrize("case", FOLD_CASES)
def test_folded_path_equals_projected_path(case, mode):
    """The folded path (one product over the real tokens) gives the per-head path's numbers."""
    n_img, n_txt, length, heads, scales, dim = case
    kwargs = dict(MODES.get(mode, {}))
    image, tokens, glob, mask = _inputs(scales, n_img, n_txt, length, dim, masked=True)
    mask[0] = 0  # a caption with no real token
    mask[:, -2:] = 0  # positions no caption uses (dropped by the folded path)
    if kwargs.get("in_features") == "pooled":
        kwargs["in_features"] = [3 + 2 * s for s in range(scales)]
        gen = torch.Generator().manual_seed(2)
        image = [torch.randn(n_img, c, generator=gen) for c in kwargs["in_features"]]
    module = _module(dim, scales, heads, **kwargs)
    weights = torch.randn(scales, n_img, n_txt)
    for masked in (mask, None, torch.ones_like(mask)):
        folded, g_folded = _run(
            _with_path(module, "folded"), module, image, tokens, glob, masked, weights
        )
        projected, g_proj = _run(
            _with_path(module, "projected"), module, image, tokens, glob, masked, weights
        )
        assert (folded - projected).abs().max() <= TOL
        assert g_folded.keys() == g_proj.keys()
        for name in g_folded:
            assert (g_folded[name] - g_proj[name]).abs().max() <= TOL, name


def test_folded_path_at_the_lite_preset_shapes():
    """B = 32, L = 31, d = 384, 6 heads, S = 4 with RSICD-like caption lengths."""
    torch.manual_seed(0)
    module = MSCMAT(384, 4, 6).train()
    image = torch.randn(4, 32, 384)
    tokens, glob = torch.randn(32, 31, 384), torch.randn(32, 384)
    mask = torch.arange(31)[None] < torch.randint(6, 24, (32,))[:, None]
    weights = torch.randn(4, 32, 32)
    folded, g_folded = _run(
        _with_path(module, "folded"), module, image, tokens, glob, mask, weights
    )
    projected, g_proj = _run(
        _with_path(module, "projected"), module, image, tokens, glob, mask, weights
    )
    assert (folded - projected).abs().max() <= TOL
    for name in g_folded:
        scale = g_proj[name].abs().max().clamp(min=1.0)
        assert (g_folded[name] - g_proj[name]).abs().max() <= 1e-5 * scale, name


def test_folded_path_draws_the_same_dropout():
    module = _module(16, 3, 4, dropout=0.3).train()
    image, tokens, glob, mask = _inputs(3, 4, 5, 6, 16, masked=True)
    weights = torch.randn(3, 4, 5)
    torch.manual_seed(7)
    folded, g_folded = _run(
        _with_path(module, "folded"), module, image, tokens, glob, mask, weights
    )
    torch.manual_seed(7)
    projected, g_proj = _run(
        _with_path(module, "projected"), module, image, tokens, glob, mask, weights
    )
    torch.manual_seed(8)
    other, _ = _run(_with_path(module, "folded"), module, image, tokens, glob, mask, weights)
    assert (folded - projected).abs().max() <= TOL
    assert not torch.allclose(folded, other)
    for name in g_folded:
        assert (g_folded[name] - g_proj[name]).abs().max() <= TOL, name


def test_auto_path_picks_the_cheaper_formulation(monkeypatch):
    import msa_model.mscmat as mscmat

    calls = []
    for name in ("_folded_scores", "_projected_scores"):
        real = getattr(mscmat, name)
        monkeypatch.setattr(mscmat, name, lambda *a, _n=name, _f=real: calls.append(_n) or _f(*a))
    module = _module(16, 2, 4)
    for n_img, expected in ((5, "_folded_scores"), (6, "_projected_scores")):  # 4 Bi <= 16 + Bi
        image, tokens, glob, mask = _inputs(2, n_img, 3, 4, 16, masked=True)
        module(image, tokens, glob, mask)
        assert calls[-1] == expected
    module.heads[1].norm_kv.eps = 1e-3  # the folded path needs one eps for all scales
    image, tokens, glob, mask = _inputs(2, 2, 3, 4, 16, masked=True)
    module(image, tokens, glob, mask)
    assert calls[-1] == "_projected_scores"
    module.path = "fast"
    with pytest.raises(ValueError, match="path"):
        module(image, tokens, glob, mask)
