"""Frozen towers: kept in eval mode, and their outputs optionally memoised per input.

A frozen backbone or text encoder is a fixed function of its input once it runs in eval mode
(BatchNorm uses its running statistics, dropout is off). Training only the MSA heads on top of
frozen towers then recomputes the same features every epoch; :class:`FeatureMemo` keeps each
sample's output, keyed by the bytes of that sample's inputs, so an image or caption seen before
costs a hash instead of a forward pass. Exact: a hit returns what the module computed for the
same input (up to float reduction order across batch sizes).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch
from torch import nn

__all__ = ["FeatureMemo", "keep_frozen"]


def keep_frozen(module: nn.Module | None) -> None:
    """No gradients and eval mode for ``module`` (a tower calls this from its ``train``)."""
    if module is not None:
        module.requires_grad_(False)
        module.eval()


class FeatureMemo:
    """Per-sample memo of a frozen function of batched tensors.

    ``fn(*inputs)`` must return a list of tensors, each with the batch as its first dimension.
    Only samples whose key is new are computed (as one batch); outputs are stored on the CPU in
    the dtype they were computed in.
    """

    def __init__(self, fn: Callable[..., list[torch.Tensor]]) -> None:
        self.fn = fn
        self.store: dict[bytes, list[torch.Tensor]] = {}

    @staticmethod
    def _key(row: tuple[torch.Tensor, ...]) -> bytes:
        digest = hashlib.blake2b(digest_size=16)
        for tensor in row:
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.digest()

    @torch.no_grad()
    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        device = inputs[0].device
        keys = [self._key(tuple(x[i] for x in inputs)) for i in range(inputs[0].shape[0])]
        first = {key: i for i, key in reversed(list(enumerate(keys)))}  # a row of each key
        new = [key for key in first if key not in self.store]
        if new:
            rows = torch.tensor([first[key] for key in new], device=device)
            outputs = self.fn(*(x.index_select(0, rows) for x in inputs))
            for j, key in enumerate(new):
                self.store[key] = [out[j].cpu() for out in outputs]
        parts = [self.store[key] for key in keys]
        return [torch.stack([p[k] for p in parts]).to(device) for k in range(len(parts[0]))]

    def __len__(self) -> int:
        return len(self.store)
