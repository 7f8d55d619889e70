"""MSCMAT: the multi-scale cross-modal alignment transformer (all B x B matching scores).

For every scale s, image i and caption j, one cross-attention with the image vector v_s(i) as
the only query and the tokens of caption j as keys/values; the attended vector plus the global
text embedding t(j), gated by v_s(i), goes through a linear scorer and a sigmoid.

:class:`MSCMAT` computes all pairs at once. Keys and values are projected once per caption and
the query once per image; the attention logits of all pairs come from one batched matmul per
scale. The output projection and the scorer are folded together: with ``u_i = v_i * w`` (``w``
the scorer weights), ``w . ((W_o a + b_o + t_j) * v_i) = a . (W_o^T u_i) + b_o . u_i + t_j . u_i``,
and ``a`` is a softmax-weighted sum of value rows, so the score is a softmax-weighted sum of
``value_l . (W_o^T u_i)`` per head. Nothing of shape (Bi, Bt, d) is ever built; the largest
intermediate is (heads, Bi, Bt, L).

That is the ``projected`` path. The ``folded`` one (the default while ``heads * Bi <= d + Bi``,
as at batch 32) also folds the key/value projections and the key/value LayerNorm's affine into
the image side, so all scales' logits and value terms come from one product of the image-side
rows with the LayerNorm-ed real tokens (padding left out): at the rsicd_lite preset's shapes
about 3x less work in forward + backward (see ``python -m benchmarks.msa_cost``).

The reference code's variants are switches: ``text_global="normalized"`` adds the L2-normalised
t(j); ``in_features`` gives MSCMAT its own per-scale projections of the pooled stage vectors;
``shared_norms`` uses one query and one key/value LayerNorm for all scales; ``init="reference"``
draws ``in_proj_weight ~ N(0, d^-0.5)`` and ``out_proj.weight ~ N(0, d^-0.5 / sqrt(2))``.

:func:`mscmat_reference` is the literal pair-by-pair computation (caption tokens repeated for
every image, the head's own :class:`torch.nn.MultiheadAttention` called on all pairs), kept
for tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["MSCMATHead", "MSCMAT", "mscmat_reference"]


class MSCMATHead(nn.Module):
    """Cross-attention scorer of one scale.

    Args:
        embed_dim: Width d of the image vectors and text features.
        num_heads: Attention heads (must divide ``embed_dim``).
        dropout: Dropout on the attention weights (training only).
        own_norms: Give this scale its own query and key/value LayerNorms (False: the
            :class:`MSCMAT` holds one pair shared by all scales).
    """

    def __init__(
        self, embed_dim: int, num_heads: int, dropout: float = 0.0, own_norms: bool = True
    ) -> None:
        super().__init__()
        if own_norms:
            self.norm_q = nn.LayerNorm(embed_dim)
            self.norm_kv = nn.LayerNorm(embed_dim)
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.score = nn.Linear(embed_dim, 1)

    def reference_init(self) -> None:
        """The reference code's init: in_proj ~ N(0, d^-0.5), out_proj ~ N(0, d^-0.5 / sqrt(2))."""
        std = self.attn.embed_dim**-0.5
        nn.init.normal_(self.attn.in_proj_weight, std=std)
        nn.init.normal_(self.attn.out_proj.weight, std=std * 2**-0.5)

    def forward(
        self,
        image: Tensor,
        query: Tensor,
        keys_values: Tensor,
        text_global: Tensor,
        key_bias: Tensor | None,
    ) -> Tensor:
        """Pre-sigmoid scores of all pairs at this scale.

        Args:
            image: (Bi, d) image vectors of this scale (the gate).
            query: (Bi, d) the layer-normed image vectors.
            keys_values: (Bt, L, d) the layer-normed local text features.
            text_global: (Bt, d) global text embeddings.
            key_bias: (Bt, L) additive logit bias (0 or -inf), or None for no masking.

        Returns:
            (Bi, Bt) logits; row i = image i, column j = caption j.
        """
        attn = self.attn
        n_img, (n_txt, length, dim) = image.shape[0], keys_values.shape
        heads = attn.num_heads
        head_dim = dim // heads
        w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = attn.in_proj_bias.chunk(3)

        q = F.linear(query, w_q, b_q) * head_dim**-0.5  # (Bi, d)
        k = F.linear(keys_values, w_k, b_k)  # (Bt, L, d)
        v = F.linear(keys_values, w_v, b_v)
        u = image * self.score.weight[0]  # gate and scorer weights folded: (Bi, d)
        r = u @ attn.out_proj.weight  # W_o^T u_i: (Bi, d)

        q_h = q.view(n_img, heads, head_dim).transpose(0, 1)  # (h, Bi, dh)
        r_h = r.view(n_img, heads, head_dim).transpose(0, 1)
        k_h = k.reshape(n_txt * length, heads, head_dim).permute(1, 2, 0)  # (h, dh, Bt*L)
        v_h = v.reshape(n_txt * length, heads, head_dim).permute(1, 2, 0)

        logits = torch.bmm(q_h, k_h).view(heads, n_img, n_txt, length)
        if key_bias is not None:
            logits = logits + key_bias
        weights = logits.softmax(dim=-1)
        weights = F.dropout(weights, attn.dropout, self.training)
        values = torch.bmm(r_h, v_h).view(heads, n_img, n_txt, length)  # value_l . W_o^T u_i
        attended = torch.einsum("hijl,hijl->ij", weights, values)

        bias = u @ attn.out_proj.bias + self.score.bias  # (Bi,)
        return attended + bias[:, None] + u @ text_global.T


def _key_padding(text_mask: Tensor | None, mask_padding: bool) -> Tensor | None:
    """Boolean (Bt, L) mask of tokens to ignore; all-padding captions attend to every token."""
    if text_mask is None or not mask_padding:
        return None
    real = text_mask.bool()
    real = real | ~real.any(dim=1, keepdim=True)
    return ~real


class MSCMAT(nn.Module):
    """Multi-scale cross-modal alignment transformer: one :class:`MSCMATHead` per scale.

    A caption whose mask has no real token attends uniformly to all its positions (as with
    ``mask_padding=False``) instead of producing NaN.

    Args:
        embed_dim: Width d shared by the image vectors and the text features.
        num_scales: Number of image scales S.
        num_heads: Attention heads per scale.
        dropout: Attention dropout (training only).
        mask_padding: Ignore padding tokens; False reproduces the reference code, which
            attends to padding too.
        text_global: ``"raw"`` adds the global text embedding as given; ``"normalized"`` adds
            it L2-normalised (reference code).
        in_features: Widths of the S pooled stage vectors; when given, MSCMAT projects them to
            ``embed_dim`` with its own linear layers (reference code) and ``forward`` takes
            the pooled vectors. None: ``forward`` takes already projected (S, Bi, d) vectors.
        shared_norms: One query and one key/value LayerNorm for all scales (reference code).
        init: ``"pytorch"`` keeps PyTorch's cross-attention init; ``"reference"`` draws the
            reference code's normal init.
    """

    #: How :meth:`forward` computes the scores (the same numbers up to float rounding):
    #: ``"folded"`` (:func:`_folded_scores`), ``"projected"`` (:func:`_projected_scores`, the
    #: per-head path) or ``"auto"``, the cheaper of the two for the batch: folded while
    #: ``num_heads * Bi <= embed_dim + Bi``. Tests and benchmarks set it on an instance.
    path: Literal["auto", "folded", "projected"] = "auto"

    def __init__(
        self,
        embed_dim: int,
        num_scales: int,
        num_heads: int,
        dropout: float = 0.0,
        mask_padding: bool = True,
        *,
        text_global: Literal["raw", "normalized"] = "raw",
        in_features: Sequence[int] | None = None,
        shared_norms: bool = False,
        init: Literal["pytorch", "reference"] = "pytorch",
    ) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        if in_features is not None and len(in_features) != num_scales:
            raise ValueError(
                f"in_features {list(in_features)} needs num_scales={num_scales} widths"
            )
        if text_global not in ("raw", "normalized") or init not in ("pytorch", "reference"):
            raise ValueError(f"text_global={text_global!r} / init={init!r} are not known")
        self.embed_dim = embed_dim
        self.num_scales = num_scales
        self.mask_padding = mask_padding
        self.normalize_text_global = text_global == "normalized"
        self.shared_norms = shared_norms
        self.proj = None
        if in_features is not None:
            self.proj = nn.ModuleList(nn.Linear(c, embed_dim) for c in in_features)
        if shared_norms:
            self.norm_q = nn.LayerNorm(embed_dim)
            self.norm_kv = nn.LayerNorm(embed_dim)
        self.heads = nn.ModuleList(
            MSCMATHead(embed_dim, num_heads, dropout, own_norms=not shared_norms)
            for _ in range(num_scales)
        )
        if init == "reference":
            for head in self.heads:
                head.reference_init()

    def norms(self, scale: int) -> tuple[nn.Module, nn.Module]:
        """The (query, key/value) LayerNorms of ``scale``."""
        owner = self if self.shared_norms else self.heads[scale]
        return owner.norm_q, owner.norm_kv

    def image_vectors(self, image_scales: Tensor | Sequence[Tensor]) -> list[Tensor]:
        """The S (Bi, d) query/gate vectors: the inputs, through MSCMAT's projections if any."""
        if self.proj is None:
            return list(image_scales)
        return [proj(x) for proj, x in zip(self.proj, image_scales, strict=True)]

    def text_context(self, text_global: Tensor) -> Tensor:
        """The (Bt, d) global text term added to the attended vector."""
        return F.normalize(text_global, dim=-1) if self.normalize_text_global else text_global

    def forward(
        self,
        image_scales: Tensor | Sequence[Tensor],
        text_tokens: Tensor,
        text_global: Tensor,
        text_mask: Tensor | None,
    ) -> Tensor:
        """Matching scores of every image with every caption at every scale.

        Args:
            image_scales: (S, Bi, d) projected per-scale image vectors or, with
                ``in_features``, the S pooled stage vectors (Bi, in_features[s]).
            text_tokens: (Bt, L, d) local text features.
            text_global: (Bt, d) global text embeddings.
            text_mask: (Bt, L), 1/True marks a real token; None means all tokens are real.

        Returns:
            (S, Bi, Bt) scores in (0, 1); row i = image i, column j = caption j.
        """
        _check_shapes(self, image_scales, text_tokens, text_global, text_mask)
        ignore = _key_padding(text_mask, self.mask_padding)
        images = self.image_vectors(image_scales)
        glob = self.text_context(text_global)
        n_img, heads = images[0].shape[0], self.heads[0].attn.num_heads
        path = self.path
        if path not in ("auto", "folded", "projected"):
            raise ValueError(f"MSCMAT.path must be auto, folded or projected, got {path!r}")
        if path == "auto":
            path = "folded" if heads * n_img <= self.embed_dim + n_img else "projected"
        if len({self.norms(s)[1].eps for s in range(self.num_scales)}) > 1:
            path = "projected"  # the folded path normalises the tokens once, with one eps
        fn = _folded_scores if path == "folded" else _projected_scores
        return fn(self, images, text_tokens, glob, ignore)


def _projected_scores(
    module: MSCMAT, images: list[Tensor], text_tokens: Tensor, glob: Tensor, ignore: Tensor | None
) -> Tensor:
    """Scores with keys and values projected once per caption token and scale.

    Costs about ``2 S (Bt L) d^2`` multiply-adds for the projections (and as much again for
    each of the two gradients). :meth:`MSCMAT.forward` takes this path when ``heads * Bi``
    exceeds ``d + Bi``, where :func:`_folded_scores` would cost more.
    """
    key_bias = None
    if ignore is not None:
        key_bias = torch.zeros(ignore.shape, dtype=text_tokens.dtype, device=ignore.device)
        key_bias = key_bias.masked_fill(ignore, float("-inf"))
    shared_kv = module.norm_kv(text_tokens) if module.shared_norms else None
    logits = []
    for s, head in enumerate(module.heads):
        norm_q, norm_kv = module.norms(s)
        kv = shared_kv if shared_kv is not None else norm_kv(text_tokens)
        logits.append(head(images[s], norm_q(images[s]), kv, glob, key_bias))
    return torch.sigmoid(torch.stack(logits))


def _folded_scores(
    module: MSCMAT, images: list[Tensor], text_tokens: Tensor, glob: Tensor, ignore: Tensor | None
) -> Tensor:
    """Scores with the key/value projections and the key/value LayerNorm's affine folded into
    the image side, all scales in one matrix product over the real tokens.

    With ``n`` a token normalised without affine, ``kv = n * gamma + beta`` and head h's rows
    ``W_k[h]`` of the key projection, ``q_h . (W_k[h] kv + b_k[h]) = ((q_h W_k[h]) * gamma) . n +
    (q_h W_k[h]) . beta + q_h . b_k[h]``, likewise for the value term ``r_h . v_h``. So the
    (S, 2, heads, Bi) rows ``(q_h W_k[h]) * gamma`` times the normalised tokens, plus the
    constants, give every attention logit and value term of every scale in one product of
    ``2 S heads Bi x d x N`` (N the real tokens of the batch): ``N`` in place of ``Bt L`` and
    ``heads Bi`` in place of ``d`` compared with :func:`_projected_scores`, and no gradient
    through the tokens is needed for the LayerNorm's affine. (The key constants do not change a
    softmax; they are kept so that the key bias gets its gradient, 0 up to rounding, as before.)
    Padding tokens, whose attention weight is exactly zero, are left out of the product and only
    positions some caption uses are kept (with attention dropout in training, all L positions, so
    the dropout draws are those of :func:`_projected_scores`).
    """
    n_scales, n_img = len(images), images[0].shape[0]
    n_txt, length, dim = text_tokens.shape
    attn0 = module.heads[0].attn
    heads, p_drop = attn0.num_heads, attn0.dropout
    head_dim = dim // heads
    dropout = module.training and p_drop > 0
    real = None if ignore is None else ~ignore
    if real is not None and not dropout:
        used = real.any(dim=0)
        if not bool(used.all()):
            text_tokens, real = text_tokens[:, used], real[:, used]
            length = text_tokens.shape[1]
    columns = None
    if real is not None and not bool(real.all()):
        columns = real.reshape(-1).nonzero().squeeze(1)  # the real tokens in (Bt * L) order
        tokens = text_tokens.reshape(-1, dim).index_select(0, columns)
    else:
        tokens = text_tokens.reshape(-1, dim)
    normed = F.layer_norm(tokens, (dim,), eps=module.norms(0)[1].eps)  # no affine: (N, d)
    rows, consts, gates, biases = [], [], [], []
    for s, head in enumerate(module.heads):
        norm_q, norm_kv = module.norms(s)
        attn = head.attn
        w_q, w_kv = attn.in_proj_weight.split([dim, 2 * dim])
        b_q, b_kv = attn.in_proj_bias.split([dim, 2 * dim])
        q = F.linear(norm_q(images[s]), w_q, b_q) * head_dim**-0.5  # (Bi, d)
        u = images[s] * head.score.weight[0]  # gate and scorer weights folded: (Bi, d)
        r = u @ attn.out_proj.weight  # W_o^T u_i: (Bi, d)
        qr = torch.stack([q, r]).view(2, n_img, heads, head_dim)
        # (q_h W_k[h], r_h W_v[h]): (2, heads, Bi, d)
        folded = torch.einsum("pihc,phcd->phid", qr, w_kv.view(2, heads, head_dim, dim))
        const = folded @ norm_kv.bias + torch.einsum(
            "pihc,phc->phi", qr, b_kv.view(2, heads, head_dim)
        )
        rows.append(folded * norm_kv.weight)
        consts.append(const)
        gates.append(u)
        biases.append(u @ attn.out_proj.bias + head.score.bias)
    const = torch.stack(consts).reshape(-1, 1)
    prod = torch.addmm(const, torch.stack(rows).reshape(-1, dim), normed.T)  # (S*2*heads*Bi, N)
    if columns is not None:  # back to (Bt * L) positions: logits -inf and values 0 at padding
        pad = prod.new_zeros(2, 1, n_txt * length)
        pad[0].masked_fill_(~real.reshape(1, -1), float("-inf"))
        full = pad.expand(n_scales, 2, heads * n_img, n_txt * length).contiguous()
        prod = full.view(prod.shape[0], -1).index_copy_(1, columns, prod)
    logits, values = prod.view(n_scales, 2, heads, n_img, n_txt, length).unbind(1)
    weights = logits.softmax(dim=-1)
    if dropout:  # per scale, as the per-head path draws it
        weights = torch.stack([F.dropout(w, p_drop, True) for w in weights.unbind(0)])
    attended = (weights * values).sum(dim=(1, 4))  # (S, Bi, Bt)
    gate = torch.stack(gates)  # (S, Bi, d)
    return torch.sigmoid(attended + torch.stack(biases)[:, :, None] + gate @ glob.T)


def _check_shapes(
    module: MSCMAT,
    image_scales: Tensor | Sequence[Tensor],
    text_tokens: Tensor,
    text_global: Tensor,
    text_mask: Tensor | None,
) -> None:
    d = module.embed_dim
    widths = (
        [d] * module.num_scales if module.proj is None else [p.in_features for p in module.proj]
    )
    got = [tuple(x.shape) for x in image_scales]
    if len(got) != module.num_scales or any(
        len(shape) != 2 or shape[0] != got[0][0] or shape[1] != w
        for shape, w in zip(got, widths, strict=True)
    ):
        raise ValueError(
            f"image_scales {got} do not match num_scales={module.num_scales} "
            f"vectors of widths {widths}"
        )
    n_txt, length, d_t = text_tokens.shape
    if d_t != d or tuple(text_global.shape) != (n_txt, d):
        raise ValueError(
            f"text_tokens {tuple(text_tokens.shape)} / text_global "
            f"{tuple(text_global.shape)} do not match embed_dim={d}"
        )
    if text_mask is not None and tuple(text_mask.shape) != (n_txt, length):
        raise ValueError(f"text_mask {tuple(text_mask.shape)} != {(n_txt, length)}")


def mscmat_reference(
    module: MSCMAT,
    image_scales: Tensor | Sequence[Tensor],
    text_tokens: Tensor,
    text_global: Tensor,
    text_mask: Tensor | None,
) -> Tensor:
    """Pair-by-pair MSCMAT scores, for tests and benchmarks (same inputs/output as forward).

    Every caption's tokens are repeated for every image and each scale's layer norms,
    :class:`~torch.nn.MultiheadAttention` and scorer run on all Bi * Bt pairs, as in the
    reference implementation. Costs Bi * Bt key/value projections per scale.
    """
    _check_shapes(module, image_scales, text_tokens, text_global, text_mask)
    images = module.image_vectors(image_scales)
    n_img = images[0].shape[0]
    n_txt, length, dim = text_tokens.shape
    ignore = _key_padding(text_mask, module.mask_padding)
    tokens = text_tokens.unsqueeze(0).expand(n_img, -1, -1, -1).reshape(-1, length, dim)
    glob = module.text_context(text_global)
    glob = glob.unsqueeze(0).expand(n_img, -1, -1).reshape(-1, dim)
    pad = None if ignore is None else ignore.unsqueeze(0).expand(n_img, -1, -1).reshape(-1, length)
    out = []
    for s, head in enumerate(module.heads):
        norm_q, norm_kv = module.norms(s)
        image = images[s].unsqueeze(1).expand(-1, n_txt, -1).reshape(-1, dim)
        kv = norm_kv(tokens)
        attended, _ = head.attn(
            norm_q(image).unsqueeze(1), kv, kv, key_padding_mask=pad, need_weights=False
        )
        z = (attended.squeeze(1) + glob) * image
        out.append(torch.sigmoid(head.score(z)).view(n_img, n_txt))
    return torch.stack(out)
