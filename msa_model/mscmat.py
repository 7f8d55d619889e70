"""MSCMAT: the multi-scale cross-modal alignment transformer (all B x B matching scores).

For every scale s, image i and caption j, one cross-attention with the projected image vector
v_s(i) as the only query and the tokens of caption j as keys/values; the attended vector plus
the global text embedding t(j), gated by v_s(i), goes through a linear scorer and a sigmoid.

:class:`MSCMAT` computes all pairs at once. Keys and values are projected once per caption and
the query once per image; the attention logits of all pairs come from one batched matmul per
scale. The output projection and the scorer are folded together: with ``u_i = v_i * w`` (``w``
the scorer weights), ``w . ((W_o a + b_o + t_j) * v_i) = a . (W_o^T u_i) + b_o . u_i + t_j . u_i``,
and ``a`` is a softmax-weighted sum of value rows, so the score is a softmax-weighted sum of
``value_l . (W_o^T u_i)`` per head. Nothing of shape (Bi, Bt, d) is ever built; the largest
intermediate is (heads, Bi, Bt, L).

:func:`mscmat_reference` is the literal pair-by-pair computation (caption tokens repeated for
every image, the head's own :class:`torch.nn.MultiheadAttention` called on all pairs), kept
for tests and benchmarks.
"""

from __future__ import annotations

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
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(embed_dim)
        self.norm_kv = nn.LayerNorm(embed_dim)
        self.attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.score = nn.Linear(embed_dim, 1)

    def forward(self, image: Tensor, tokens: Tensor, text_global: Tensor,
                key_bias: Tensor | None) -> Tensor:
        """Pre-sigmoid scores of all pairs at this scale.

        Args:
            image: (Bi, d) image vectors of this scale.
            tokens: (Bt, L, d) local text features.
            text_global: (Bt, d) global text embeddings.
            key_bias: (Bt, L) additive logit bias (0 or -inf), or None for no masking.

        Returns:
            (Bi, Bt) logits; row i = image i, column j = caption j.
        """
        attn = self.attn
        n_img, (n_txt, length, dim) = image.shape[0], tokens.shape
        heads = attn.num_heads
        head_dim = dim // heads
        w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = attn.in_proj_bias.chunk(3)

        q = F.linear(self.norm_q(image), w_q, b_q) * head_dim**-0.5  # (Bi, d)
        kv = self.norm_kv(tokens)
        k = F.linear(kv, w_k, b_k)  # (Bt, L, d)
        v = F.linear(kv, w_v, b_v)
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
    """

    def __init__(self, embed_dim: int, num_scales: int, num_heads: int, dropout: float = 0.0,
                 mask_padding: bool = True) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        self.embed_dim = embed_dim
        self.num_scales = num_scales
        self.mask_padding = mask_padding
        self.heads = nn.ModuleList(
            MSCMATHead(embed_dim, num_heads, dropout) for _ in range(num_scales)
        )

    def forward(self, image_scales: Tensor, text_tokens: Tensor, text_global: Tensor,
                text_mask: Tensor | None) -> Tensor:
        """Matching scores of every image with every caption at every scale.

        Args:
            image_scales: (S, Bi, d) projected per-scale image vectors.
            text_tokens: (Bt, L, d) local text features.
            text_global: (Bt, d) global text embeddings.
            text_mask: (Bt, L), 1/True marks a real token; None means all tokens are real.

        Returns:
            (S, Bi, Bt) scores in (0, 1); row i = image i, column j = caption j.
        """
        _check_shapes(self, image_scales, text_tokens, text_global, text_mask)
        ignore = _key_padding(text_mask, self.mask_padding)
        key_bias = None
        if ignore is not None:
            key_bias = torch.zeros(ignore.shape, dtype=text_tokens.dtype, device=ignore.device)
            key_bias = key_bias.masked_fill(ignore, float("-inf"))
        logits = [
            head(image_scales[s], text_tokens, text_global, key_bias)
            for s, head in enumerate(self.heads)
        ]
        return torch.sigmoid(torch.stack(logits))


def _check_shapes(module: MSCMAT, image_scales: Tensor, text_tokens: Tensor,
                  text_global: Tensor, text_mask: Tensor | None) -> None:
    s, _, d = image_scales.shape
    if s != module.num_scales or d != module.embed_dim:
        raise ValueError(f"image_scales {tuple(image_scales.shape)} does not match "
                         f"num_scales={module.num_scales}, embed_dim={module.embed_dim}")
    n_txt, length, d_t = text_tokens.shape
    if d_t != d or tuple(text_global.shape) != (n_txt, d):
        raise ValueError(f"text_tokens {tuple(text_tokens.shape)} / text_global "
                         f"{tuple(text_global.shape)} do not match embed_dim={d}")
    if text_mask is not None and tuple(text_mask.shape) != (n_txt, length):
        raise ValueError(f"text_mask {tuple(text_mask.shape)} != {(n_txt, length)}")


def mscmat_reference(module: MSCMAT, image_scales: Tensor, text_tokens: Tensor,
                     text_global: Tensor, text_mask: Tensor | None) -> Tensor:
    """Pair-by-pair MSCMAT scores, for tests and benchmarks (same inputs/output as forward).

    Every caption's tokens are repeated for every image and each head's own layer norms,
    :class:`~torch.nn.MultiheadAttention` and scorer run on all Bi * Bt pairs, as in the
    reference implementation. Costs Bi * Bt key/value projections per scale.
    """
    _check_shapes(module, image_scales, text_tokens, text_global, text_mask)
    n_img = image_scales.shape[1]
    n_txt, length, dim = text_tokens.shape
    ignore = _key_padding(text_mask, module.mask_padding)
    tokens = text_tokens.unsqueeze(0).expand(n_img, -1, -1, -1).reshape(-1, length, dim)
    glob = text_global.unsqueeze(0).expand(n_img, -1, -1).reshape(-1, dim)
    pad = None if ignore is None else ignore.unsqueeze(0).expand(n_img, -1, -1).reshape(-1, length)
    out = []
    for s, head in enumerate(module.heads):
        image = image_scales[s].unsqueeze(1).expand(-1, n_txt, -1).reshape(-1, dim)
        kv = head.norm_kv(tokens)
        attended, _ = head.attn(head.norm_q(image).unsqueeze(1), kv, kv, key_padding_mask=pad,
                                need_weights=False)
        z = (attended.squeeze(1) + glob) * image
        out.append(torch.sigmoid(head.score(z)).view(n_img, n_txt))
    return torch.stack(out)
