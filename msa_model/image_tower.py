"""Image tower: a timm backbone's multi-scale feature maps, pooled, projected and fused.

Every backbone goes through ``timm.create_model(..., features_only=True)``; per-scale heads are
sized from ``feature_info`` so CNNs (ResNet, ConvNeXt, EfficientNet) and ViT/Swin models share
one code path (NHWC outputs are permuted to NCHW).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

import timm
import torch
from torch import nn

from msa_model.config import ConfigError, ImageTowerConfig
from msa_model.frozen import FeatureMemo, keep_frozen
from msa_model.split import split_backbone
from msa_model.weights import WeightsNotFoundError, backbone_state_dict, check_loaded

__all__ = ["ImageTower", "GatedFusion", "WeightsNotFoundError", "select_stages"]


def select_stages(reductions: list[int], cfg: ImageTowerConfig) -> list[int]:
    """Indices (into the backbone's feature list) of the stages MSA uses.

    Stem outputs (reduction 2) are not stages; by default the ``num_scales`` deepest stages are
    used, ordered shallow to deep.
    """
    candidates = [i for i, r in enumerate(reductions) if r >= 4] or list(range(len(reductions)))
    if cfg.stage_indices is not None:
        bad = [i for i in cfg.stage_indices if not 0 <= i < len(reductions)]
        if bad:
            raise ConfigError(
                f"model.image.stage_indices: {bad} out of range for {cfg.backbone} "
                f"({len(reductions)} feature levels, reductions {reductions})"
            )
        return sorted(cfg.stage_indices)
    if cfg.num_scales > len(candidates):
        raise ConfigError(
            f"model.image.num_scales: {cfg.num_scales} exceeds the {len(candidates)} stages of "
            f"{cfg.backbone} (reductions {[reductions[i] for i in candidates]})"
        )
    return candidates[len(candidates) - cfg.num_scales :]


@contextlib.contextmanager
def _level(logger: logging.Logger | None, level: int) -> Iterator[None]:
    """Within: ``logger`` (if any) logs only from ``level`` up."""
    if logger is None:
        yield
        return
    before = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before)


def _create_backbone(cfg: ImageTowerConfig) -> nn.Module:
    kwargs = dict(cfg.backbone_kwargs)
    pretrained = cfg.pretrained or cfg.weights_file is not None
    if cfg.weights_file is not None:
        source, state_dict = backbone_state_dict(
            cfg.weights_file, cfg.backbone, cfg.weights_remap, cfg.backbone_kwargs
        )
        kwargs["pretrained_cfg_overlay"] = {"state_dict": state_dict}
    # with a weights file, check_loaded checks every backbone tensor was in it: timm's warning
    # that the file also holds the classifier a features-only backbone drops is not news
    quiet = logging.getLogger("timm.models._builder") if cfg.weights_file is not None else None
    try:
        with _level(quiet, logging.ERROR):
            backbone = timm.create_model(
                cfg.backbone, pretrained=pretrained, features_only=True, **kwargs
            )
        if cfg.weights_file is not None:
            check_loaded(backbone, state_dict, source)
        return backbone
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ConfigError(f"model.image.backbone: unknown timm model {cfg.backbone!r}") from exc
        if cfg.weights_file is not None:
            raise ConfigError(
                f"model.image.weights_file: {source} does not fit {cfg.backbone}: "
                f"{str(exc).splitlines()[0]}"
            ) from exc
        raise
    except (OSError, ValueError) as exc:  # offline hub miss: LocalEntryNotFoundError and kin
        if not pretrained or cfg.weights_file is not None:
            raise
        cache = (
            os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
        )
        raise WeightsNotFoundError(
            f"pretrained weights for timm model {cfg.backbone!r} are not in the Hugging Face cache "
            f"({cache}) and cannot be downloaded here ({type(exc).__name__}). Either run "
            f"`python -c \"import timm; timm.create_model('{cfg.backbone}', pretrained=True)\"` "
            f"on a connected machine and copy its ~/.cache/huggingface/hub to this one, or set "
            f"model.image.weights_file to a local state dict, or model.image.pretrained: false."
        ) from exc


class GatedFusion(nn.Module):
    """Fuses the summed per-scale vectors: linear -> sigmoid gate -> linear (GLU-style)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.value = nn.Linear(dim, dim)
        self.gate = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.value(x) * torch.sigmoid(self.gate(x)))


class ImageTower(nn.Module):
    """Backbone -> S pooled stage vectors -> projections to ``embed_dim`` -> fused global vector.

    ``forward`` returns ``(global_embed (B, d), scales (S, B, d))``, scales shallow to deep.
    With ``trainable_stages`` K (0 < K < levels) the backbone is cut after feature level
    ``levels - K - 1`` (:mod:`msa_model.split`): the bottom runs in eval mode without gradients
    (memoised with ``cache_frozen``: its boundary activations and the pooled vectors of the
    frozen stages), the top K levels train.
    """

    def __init__(self, cfg: ImageTowerConfig, embed_dim: int, cache_dir: str | None = None) -> None:
        super().__init__()
        self.backbone = _create_backbone(cfg)
        info = self.backbone.feature_info
        self.stages = select_stages(list(info.reduction()), cfg)
        channels = info.channels()
        fmt = getattr(self.backbone, "output_fmt", "NCHW")
        self.channels_last_output = str(getattr(fmt, "value", fmt)) == "NHWC"
        self.pools = [cfg.pool_shallow] * (len(self.stages) - 1) + [cfg.pool_deepest]
        self.proj = nn.ModuleList(nn.Linear(channels[i], embed_dim) for i in self.stages)
        self.fusion = GatedFusion(embed_dim)
        levels = len(channels)
        trainable = levels if cfg.trainable == "all" else min(cfg.trainable, levels)
        self.boundary = levels - trainable - 1  # the last frozen feature level (-1: none)
        self.bn_frozen = cfg.bn_stats == "frozen"
        self.chain = None
        if 0 < trainable < levels:
            try:
                self.chain = split_backbone(self.backbone, cfg.backbone)
            except ValueError as exc:
                raise ConfigError(f"model.image.trainable_stages: {exc}") from None
        self._frozen_names = self._frozen_segments()
        self._keep_frozen()
        self._memo = None
        if cfg.cache_frozen:
            extra = ["image bottom", self.boundary]
            frozen = [module for _, module in self.frozen_modules()]
            self._memo = FeatureMemo(self._bottom, frozen, cache_dir, extra)

    def _frozen_segments(self) -> list[str]:
        if self.boundary < 0:
            return []
        if self.chain is None:
            return [""]  # the whole backbone
        return self.chain.names[: self.chain.level_ends[self.boundary] + 1]

    def _keep_frozen(self) -> None:
        for name in self._frozen_names:
            keep_frozen(self.backbone.get_submodule(name))
        if self.bn_frozen:
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def train(self, mode: bool = True) -> ImageTower:
        super().train(mode)
        self._keep_frozen()
        if not mode and self._memo is not None:
            self._memo.save()
        return self

    @property
    def num_scales(self) -> int:
        return len(self.stages)

    def frozen_modules(self) -> list[tuple[str, nn.Module]]:
        """``(name, module)`` of the frozen parts, names relative to this tower."""
        return [
            (f"backbone.{name}" if name else "backbone", self.backbone.get_submodule(name))
            for name in self._frozen_names
        ]

    def pooled(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The S pooled stage vectors (B, C_s), shallow to deep, before any projection."""
        pairs = list(zip(self.stages, self.pools, strict=True))
        if self.boundary < 0:
            features = self.backbone(images)
            return [self._pool(features[i], pool) for i, pool in pairs]
        bottom = self._bottom(images) if self._memo is None else self._memo(images)
        top: dict[int, torch.Tensor] = {}
        if self.chain is not None:
            start = self.chain.level_ends[self.boundary] + 1
            _, top = self.chain.run(bottom[0], start, self.chain.level_ends[-1] + 1)
            bottom = bottom[1:]
        return [
            bottom[2 * i + (pool == "avg")] if i <= self.boundary else self._pool(top[i], pool)
            for i, pool in pairs
        ]

    @torch.no_grad()
    def _bottom(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The frozen bottom's outputs: the activations where the trained top begins (when it
        does), then the max- and the avg-pooled vector of every frozen level (whatever the
        selected stages, so that every ``num_scales`` shares one memo)."""
        if self.chain is None:
            head, features = [], list(self.backbone(images))
        else:
            x, levels = self.chain.run(images, 0, self.chain.level_ends[self.boundary] + 1)
            head, features = [x], [levels[i] for i in range(self.boundary + 1)]
        return head + [self._pool(f, pool) for f in features for pool in ("max", "avg")]

    def _pool(self, fmap: torch.Tensor, pool: str) -> torch.Tensor:
        if fmap.ndim == 3:  # tokens (B, N, C)
            fmap = fmap.transpose(1, 2).unsqueeze(-1)
        elif self.channels_last_output:
            fmap = fmap.permute(0, 3, 1, 2)
        return fmap.amax(dim=(2, 3)) if pool == "max" else fmap.mean(dim=(2, 3))

    def embed(self, pooled: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Project the pooled vectors: ``(global_embed (B, d), scales (S, B, d))``."""
        stacked = torch.stack([proj(vec) for proj, vec in zip(self.proj, pooled, strict=True)])
        return self.fusion(stacked.sum(0)), stacked

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed(self.pooled(images))
