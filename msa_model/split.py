"""A backbone cut in two: a frozen bottom that runs once per input, and a top that trains.

timm's ``features_only`` CNNs (ResNet, EfficientNet, MobileNet, RegNet, ...) apply their
modules one after another and read the feature levels off the way. :func:`split_backbone` lays a
backbone out as that chain of segments (top-level children, sequential containers opened one
level), finds where each feature level leaves the chain, and checks on a small input that
running the segments in order gives the backbone's own features; a backbone that does not run as
a chain (ViT, Swin: their features come from ``forward_intermediates``) is refused, naming it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["SegmentChain", "split_backbone"]


@dataclass
class SegmentChain:
    """A backbone as a chain: ``segments[i]`` feeds ``segments[i + 1]``.

    ``level_ends[k]`` is the index of the segment whose output is feature level ``k``.
    """

    names: list[str]
    segments: list[nn.Module]
    level_ends: list[int]

    def run(
        self, x: torch.Tensor, start: int, stop: int
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Segments ``start .. stop - 1`` on ``x``; the last output and the levels passed."""
        levels: dict[int, torch.Tensor] = {}
        for i in range(start, stop):
            x = self.segments[i](x)
            for level, end in enumerate(self.level_ends):
                if end == i:
                    levels[level] = x
        return x, levels


def _chain(backbone: nn.Module) -> tuple[list[str], list[nn.Module]]:
    names, segments = [], []
    for name, child in backbone.named_children():
        if isinstance(child, nn.Sequential):
            for inner, grandchild in child.named_children():
                names.append(f"{name}.{inner}")
                segments.append(grandchild)
        else:
            names.append(name)
            segments.append(child)
    return names, segments


@torch.no_grad()
def split_backbone(backbone: nn.Module, name: str, size: int = 64) -> SegmentChain:
    """The chain of a ``features_only`` backbone, checked against its forward.

    Raises:
        ValueError: the backbone's features are not the outputs of a chain of its children.
    """
    names, segments = _chain(backbone)
    was_training = backbone.training
    backbone.eval()
    try:
        outputs: list[torch.Tensor] = []
        hooks = [s.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for s in segments]
        try:
            features = backbone(torch.randn(1, 3, size, size))
        except (RuntimeError, AssertionError, ValueError):  # a fixed input size: not a CNN
            features = []
        finally:
            for hook in hooks:
                hook.remove()
        ends = []
        for feature in features:
            found = [i for i, out in enumerate(outputs) if out is feature]
            ends.append(found[-1] if found else -1)
        chain = SegmentChain(names, segments, ends)
        chained = len(outputs) == len(segments) and -1 not in ends and ends == sorted(ends)
        ok = bool(ends) and chained
        if ok:
            x = torch.randn(1, 3, size, size)
            _, levels = chain.run(x, 0, len(segments))
            ok = all(torch.allclose(levels[k], f, atol=1e-5) for k, f in enumerate(backbone(x)))
    finally:
        backbone.train(was_training)
    if not ok:
        raise ValueError(
            f"timm model {name!r} does not run as a chain of its modules, so it cannot be split "
            f"into a frozen bottom and a trained top: use trainable_stages 0 or 'all'"
        )
    return chain
