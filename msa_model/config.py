"""Typed configuration sections of the MSA library, built from and dumped to plain dicts.

Every section is a dataclass; ``from_dict`` rejects unknown keys and wrong types and names the
offending key by its dotted path (``model.image.num_scales``), so a YAML typo never starts a run.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

__all__ = [
    "ConfigError",
    "ImageTowerConfig",
    "TextTowerConfig",
    "MSCMATConfig",
    "ModelConfig",
    "LossConfig",
    "DataConfig",
    "OptimConfig",
    "from_dict",
    "to_dict",
    "load_yaml",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is unknown, mistyped or out of range; the message names the key."""


def _require(ok: bool, prefix: str, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{prefix + '.' if prefix else ''}{key}: {message}")


@dataclass
class ImageTowerConfig:
    backbone: str = "resnet18"  # timm model name, created with features_only=True
    pretrained: bool = False  # load weights from the Hugging Face cache (never downloads offline)
    weights_file: str | None = None  # .safetensors/.pth state dict (a path or
    # pkg://<package>/<file inside it>); overrides `pretrained`
    weights_remap: bool = False  # weights_file in other key names: map its tensors by order
    num_scales: int = 4  # S: how many backbone stages feed MSA (the S deepest by default)
    stage_indices: list[int] | None = None  # explicit stages (timm out_indices); overrides S
    pool_shallow: Literal["max", "avg"] = "max"  # pooling of every stage but the deepest
    pool_deepest: Literal["max", "avg"] = "avg"  # pooling of the deepest stage
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)  # extra timm kwargs
    trainable_stages: int | Literal["all"] | None = None  # the last K feature levels of the
    # backbone train, everything below runs in eval mode without gradients; 0: frozen, "all"
    # (the default): full fine-tuning
    freeze_backbone: bool | None = None  # alias: true is trainable_stages 0, false is "all"
    bn_stats: Literal["train", "frozen"] = "train"  # BatchNorm in trained stages: batch statistics
    # (train mode), or the pretrained running statistics kept (eval mode; affine still trains)
    cache_frozen: bool = False  # memoise the frozen bottom's outputs (the activations where the
    # trained top begins, and the pooled vectors of frozen stages) per input, exactly

    @property
    def trainable(self) -> int | Literal["all"]:
        """``trainable_stages`` with the ``freeze_backbone`` alias applied."""
        return _trainable(self.trainable_stages, self.freeze_backbone)

    def validate(self, prefix: str = "") -> None:
        _require(self.num_scales >= 1, prefix, "num_scales", f"must be >= 1, got {self.num_scales}")
        if self.stage_indices is not None:
            _require(len(self.stage_indices) >= 1, prefix, "stage_indices", "must not be empty")
            _require(
                len(set(self.stage_indices)) == len(self.stage_indices),
                prefix,
                "stage_indices",
                f"repeats a stage: {self.stage_indices}",
            )
        _check_trainable(
            self.trainable_stages,
            self.freeze_backbone,
            self.cache_frozen,
            prefix,
            ("trainable_stages", "freeze_backbone"),
        )


def _trainable(count: int | str | None, frozen_alias: bool | None) -> int | Literal["all"]:
    if count is not None:
        return count
    return 0 if frozen_alias else "all"


def _check_trainable(
    count: int | str | None, alias: bool | None, cache: bool, prefix: str, keys: tuple[str, str]
) -> None:
    """The rules shared by ``trainable_stages`` and ``trainable_layers`` and their aliases."""
    _require(
        count is None or count == "all" or count >= 0,
        prefix,
        keys[0],
        f"must be >= 0 or 'all', got {count}",
    )
    if count is not None and alias is not None:
        _require(
            _trainable(None, alias) == count,
            prefix,
            keys[1],
            f"{alias} contradicts {keys[0]}: {count} (set {keys[0]} alone)",
        )
    _require(
        not cache or _trainable(count, alias) != "all",
        prefix,
        "cache_frozen",
        f"needs a frozen part ({keys[0]} 0 or K; with 'all' every weight trains)",
    )


@dataclass
class TextTowerConfig:
    name: str | None = None  # HF model id or local directory; None builds `config` randomly
    config: dict[str, Any] = field(  # transformers BertConfig kwargs for a random-init encoder
        default_factory=lambda: {
            "hidden_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 256,
        }
    )
    tokenizer: str | None = None  # HF id / directory / tokenizer.json; None: train WordPiece
    vocab_size: int = 2000  # size of the WordPiece vocabulary trained on the train captions
    max_length: int = 32  # captions are truncated to this many tokens
    padding: Literal["longest", "max_length"] = "longest"  # pad to the batch's longest caption,
    # or always to max_length (the reference code: 31, padding then attended by MSCMAT)
    trainable_layers: int | Literal["all"] | None = None  # the last K transformer layers
    # train, the embeddings and layers below run in eval mode without gradients; 0: frozen,
    # "all" (the default): full fine-tuning
    freeze: bool | None = None  # alias: true is trainable_layers 0, false is "all"
    cache_frozen: bool = False  # memoise the frozen bottom's hidden states per caption, exactly
    # (pairs well with padding: max_length, which gives a caption the same tokens in every batch)

    @property
    def trainable(self) -> int | Literal["all"]:
        """``trainable_layers`` with the ``freeze`` alias applied."""
        return _trainable(self.trainable_layers, self.freeze)

    def validate(self, prefix: str = "") -> None:
        _require(self.max_length >= 2, prefix, "max_length", f"must be >= 2, got {self.max_length}")
        _require(
            self.vocab_size >= 100, prefix, "vocab_size", f"must be >= 100, got {self.vocab_size}"
        )
        _check_trainable(
            self.trainable_layers,
            self.freeze,
            self.cache_frozen,
            prefix,
            ("trainable_layers", "freeze"),
        )


@dataclass
class MSCMATConfig:
    num_heads: int = 4  # attention heads of each per-scale cross-attention
    dropout: float = 0.0  # attention dropout
    mask_padding: bool = True  # False reproduces the reference code (padding tokens attended)
    text_global: Literal["raw", "normalized"] = "raw"  # global text embedding added to the
    # attended vector: as is, or L2-normalised like the triplet's (reference code)
    own_projections: bool = False  # project the pooled stage vectors with MSCMAT's own per-scale
    # linear layers instead of the image tower's (reference code: true)
    shared_norms: bool = False  # one query and one key/value LayerNorm for all scales (reference
    # code: true) instead of a pair per scale
    init: Literal["pytorch", "reference"] = "pytorch"  # cross-attention weights: PyTorch's init,
    # or the reference code's in_proj ~ N(0, d^-0.5), out_proj ~ N(0, d^-0.5 / sqrt(2))

    def validate(self, prefix: str = "") -> None:
        _require(self.num_heads >= 1, prefix, "num_heads", f"must be >= 1, got {self.num_heads}")
        _require(
            0.0 <= self.dropout < 1.0, prefix, "dropout", f"must be in [0, 1), got {self.dropout}"
        )


@dataclass
class ModelConfig:
    embed_dim: int = 128  # d: the shared width of every embedding
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    mscmat: MSCMATConfig = field(default_factory=MSCMATConfig)
    frozen_cache_dir: str | None = None  # with cache_frozen: also keep the memo of the frozen
    # towers' outputs in this folder (e.g. ~/.cache/msa-tune), shared by every run on a machine

    def validate(self, prefix: str = "") -> None:
        _require(self.embed_dim >= 1, prefix, "embed_dim", f"must be >= 1, got {self.embed_dim}")
        _require(
            self.embed_dim % self.mscmat.num_heads == 0,
            prefix,
            "embed_dim",
            f"{self.embed_dim} is not divisible by mscmat.num_heads={self.mscmat.num_heads}",
        )


@dataclass
class LossConfig:
    margin: float = 0.5  # triplet margin (cosine similarity)
    triplet_reduction: Literal["sum", "mean"] = "sum"  # "sum" as in the reference (VSE++)
    lambda_mscma: float = 15.0  # weight of the multi-scale cross-modal alignment loss
    lambda_csmmc: float = 10.0  # weight of the cross-scale consistency loss
    mscma_temperature: float = 1.0  # scores are divided by it before the cross-entropy
    mscma_bidirectional: bool = False  # also caption->image (reference: image->caption only)
    csmmc_temperature: float = 2.0  # T of the softmax in CSMMC (reference: 2)
    csmmc_axis: Literal["image", "caption"] = "image"  # softmax axis (reference: over images)
    csmmc_direction: Literal["teacher_student", "student_teacher"] = "teacher_student"  # KL(
    # teacher || scale s), or KL(scale s || teacher) as the reference code
    csmmc_reduction: Literal["per_distribution_mean", "elementwise_mean"] = "per_distribution_mean"
    # each scale's KL summed over the B x B entries, / B (today) or / B^2 (reference code)
    # the global image-text term: hardest-negative triplet (the paper), summed-negative triplet,
    # summed then hardest after hardest_after_epochs (VSE++ warm-up), or symmetric InfoNCE
    global_loss: Literal["triplet_hardest", "triplet_sum", "triplet_warmup", "infonce"] = (
        "triplet_hardest"
    )
    hardest_after_epochs: int = 2  # triplet_warmup: epochs of triplet_sum before the hardest
    infonce_temperature: float = 0.05  # infonce: cosine similarities are divided by it
    infonce_learnable: bool = False  # infonce: learn the temperature (CLIP's log logit scale)
    infonce_max_scale: float = 100.0  # infonce, learnable: 1 / temperature clamped to [1, this]
    exclude_same_image: bool = True  # same-image pairs are not negatives (authors: false)
    exclude_same_caption: bool = True  # pairs with the same normalised caption are not negatives

    def validate(self, prefix: str = "") -> None:
        _require(self.margin >= 0, prefix, "margin", f"must be >= 0, got {self.margin}")
        _require(
            self.hardest_after_epochs >= 0,
            prefix,
            "hardest_after_epochs",
            f"must be >= 0, got {self.hardest_after_epochs}",
        )
        _require(
            self.infonce_max_scale >= 1,
            prefix,
            "infonce_max_scale",
            f"must be >= 1, got {self.infonce_max_scale}",
        )
        for key in ("lambda_mscma", "lambda_csmmc"):
            _require(
                getattr(self, key) >= 0, prefix, key, f"must be >= 0, got {getattr(self, key)}"
            )
        for key in ("mscma_temperature", "csmmc_temperature", "infonce_temperature"):
            _require(getattr(self, key) > 0, prefix, key, f"must be > 0, got {getattr(self, key)}")
        if self.infonce_learnable:
            _require(
                1 / self.infonce_max_scale <= self.infonce_temperature <= 1,
                prefix,
                "infonce_temperature",
                f"a learnable temperature starts in [1 / infonce_max_scale, 1] = "
                f"[{1 / self.infonce_max_scale:g}, 1], got {self.infonce_temperature}",
            )


@dataclass
class DataConfig:
    json: str = "data/synth/dataset.json"  # Karpathy-style JSON
    images: str = "data/synth/images"  # image folder the JSON's filenames are relative to
    image_size: int = 64  # images are resized to this square size
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    augment: list[Literal["hflip", "vflip", "rot90"]] = field(
        default_factory=lambda: ["hflip", "vflip", "rot90"]
    )  # train-time augmentation
    val_fraction: float = 0.1  # fraction of train images carved out as val when there is none
    test_fraction: float = 0.0  # fraction of train images carved out as test when there is none
    # (after val, from the rest; 0: none)
    split_seed: int = 0  # seed of that carve-out
    sampling: Literal["all_captions", "one_caption"] = "all_captions"  # one sample per caption
    loader_workers: int = 0  # torch DataLoader worker processes
    cache_images: bool = True  # decode each image once and keep it in memory
    resize: Literal["bicubic", "bilinear"] = "bicubic"  # resampling filter to image_size

    def validate(self, prefix: str = "") -> None:
        _require(self.image_size >= 8, prefix, "image_size", f"must be >= 8, got {self.image_size}")
        _require(
            0.0 < self.val_fraction < 1.0,
            prefix,
            "val_fraction",
            f"must be in (0, 1), got {self.val_fraction}",
        )
        _require(
            0.0 <= self.test_fraction < 1.0,
            prefix,
            "test_fraction",
            f"must be in [0, 1), got {self.test_fraction}",
        )
        _require(
            len(self.mean) == 3 and len(self.std) == 3,
            prefix,
            "mean",
            "mean and std need 3 values (RGB)",
        )
        _require(all(v > 0 for v in self.std), prefix, "std", "must be > 0")
        _require(self.loader_workers >= 0, prefix, "loader_workers", "must be >= 0")


@dataclass
class OptimConfig:
    lr: float = 1e-4  # learning rate of the two towers
    head_lr: float | None = None  # learning rate of projections, fusion and MSCMAT (None: lr)
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    grad_clip_norm: float | None = None  # clip the global gradient norm (None: off)
    warmup_steps: int = 0  # linear warm-up steps before the schedule
    schedule: Literal["constant", "cosine"] = "constant"  # after warm-up: constant or cosine to 0
    amp: Literal["none", "bf16", "fp16"] = "none"  # autocast dtype on CUDA; ignored on CPU
    decay_norms_and_biases: bool = False  # weight decay on the model's 1-D parameters too (norms,
    # biases; the reference code decays every parameter)

    def validate(self, prefix: str = "") -> None:
        _require(self.lr > 0, prefix, "lr", f"must be > 0, got {self.lr}")
        _require(self.head_lr is None or self.head_lr > 0, prefix, "head_lr", "must be > 0")
        _require(self.weight_decay >= 0, prefix, "weight_decay", "must be >= 0")
        _require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            prefix,
            "betas",
            f"need two values in [0, 1), got {self.betas}",
        )
        _require(
            self.grad_clip_norm is None or self.grad_clip_norm > 0,
            prefix,
            "grad_clip_norm",
            "must be > 0",
        )
        _require(self.warmup_steps >= 0, prefix, "warmup_steps", "must be >= 0")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` (recursing into dataclasses and lists)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[0]
            if len(errors) == 1
            else f"{key}: {value!r} matches none of {' | '.join(_type_name(a) for a in args)}"
        )
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{key}: unsupported annotation {tp!r}")


def from_dict(cls: type[T], data: dict[str, Any] | None, prefix: str = "") -> T:
    """Build the dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types.

    Args:
        cls: A config dataclass.
        data: Plain mapping (from YAML); missing keys take the defaults.
        prefix: Dotted path of this section, used in error messages.
    """
    data = data or {}
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key {where}{unknown[0]} (allowed: {', '.join(sorted(names))})")
    kwargs = {k: _convert(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if validate is not None:
        validate(prefix)
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-dict form of a config dataclass (YAML- and JSON-serialisable)."""
    return dataclasses.asdict(obj)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a UTF-8 YAML mapping with safe loading; errors name the file (and line when known).

    Aliases are allowed while the document they expand to stays under ``YAML_MAX_NODES`` nodes
    (a few kilobytes of nested aliases can otherwise expand to gigabytes); recursive ones are
    refused.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None
    try:
        _check_expansion(yaml.compose(text, Loader=yaml.SafeLoader), path)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{line} invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


YAML_MAX_NODES = 100_000  # nodes of a YAML document once its aliases are expanded


def _check_expansion(root: yaml.Node | None, path: Path) -> None:
    """Refuse a composed document whose aliases expand past ``YAML_MAX_NODES`` or recurse."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:  # an alias: the node again, counted again
            return sizes[id(node)]
        if id(node) in open_nodes:
            raise ConfigError(f"{path}: a YAML alias refers to itself (recursive anchor)")
        open_nodes.add(id(node))
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(key) + size(value) for key, value in node.value)
        open_nodes.discard(id(node))
        sizes[id(node)] = total
        if total > YAML_MAX_NODES:
            raise ConfigError(
                f"{path}: YAML aliases expand to more than {YAML_MAX_NODES} nodes; "
                "write the values out instead"
            )
        return total

    if root is not None:
        size(root)
