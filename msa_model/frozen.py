"""Frozen towers: kept in eval mode, and their outputs optionally memoised per input.

A frozen backbone or text encoder is a fixed function of its input once it runs in eval mode
(BatchNorm uses its running statistics, dropout is off). Training only the MSA heads on top of
frozen towers then recomputes the same features every epoch; :class:`FeatureMemo` keeps each
sample's output, keyed by the bytes of that sample's inputs, so an image or caption seen before
costs a hash instead of a forward pass. Exact: a hit returns what the module computed for the
same input (up to float reduction order across batch sizes).

With a folder, the memo is also kept on disk under a name derived from the frozen weights, so
every run on a machine (the trials of a search, the seeds of the final stage) computes each
input once: it is read when the tower is built and written, atomically, when the tower leaves
training mode with new entries (each epoch's validation).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

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
    the dtype they were computed in. With ``folder``, the memo file is named by ``source``'s
    weights and ``extra`` (read at the first call, when the weights are final); loading new
    weights into ``source`` empties the memo. ``source`` is the frozen module, or the frozen
    modules in order (the bottom of a tower whose top trains).
    """

    def __init__(
        self,
        fn: Callable[..., list[torch.Tensor]],
        source: nn.Module | Sequence[nn.Module],
        folder: str | None = None,
        extra: Iterable[object] = (),
    ) -> None:
        self.fn, self.folder, self.extra = fn, folder, list(extra)
        self.sources = [source] if isinstance(source, nn.Module) else list(source)
        self.reset()
        for module in self.sources:
            module.register_load_state_dict_post_hook(lambda *_: self.reset())

    def reset(self) -> None:
        """Forget every entry (the source's weights changed)."""
        self.store: dict[bytes, list[torch.Tensor]] = {}
        self.path: Path | None = None
        self._opened = False
        self._saved = 0

    def _open(self) -> None:
        self._opened = True
        if self.folder is None:
            return
        digest = hashlib.blake2b(repr(self.extra).encode(), digest_size=16)
        for module in self.sources:
            for name, tensor in sorted(module.state_dict().items()):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        self.path = Path(self.folder).expanduser() / f"memo-{digest.hexdigest()}.pt"
        if self.path.is_file():
            self.store = torch.load(self.path, weights_only=True)
            self._saved = len(self.store)

    @staticmethod
    def _key(row: tuple[torch.Tensor, ...]) -> bytes:
        digest = hashlib.blake2b(digest_size=16)
        for tensor in row:
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.digest()

    @torch.no_grad()
    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        if not self._opened:
            self._open()
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

    def save(self) -> None:
        """Write the memo to its file when it has new entries (atomic: readers never see half)."""
        if self.path is None or len(self.store) == self._saved:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp")
        os.close(fd)
        try:
            torch.save(self.store, tmp)
            os.replace(tmp, self.path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self._saved = len(self.store)
