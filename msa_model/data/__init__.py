"""Datasets of msa_model: Karpathy-style caption JSON, validation, PyTorch datasets and the
embedded synthetic remote-sensing generator."""

from __future__ import annotations

from msa_model.data.check import (
    DatasetReport,
    SplitStats,
    check_data,
    check_dataset,
    format_report,
)
from msa_model.data.datasets import (
    EvalImages,
    ImageStore,
    ImageTransform,
    TrainPairs,
    build_transform,
    collate,
    eval_captions,
)
from msa_model.data.images import ImageReadError, read_rgb
from msa_model.data.importers import (
    ImportSummary,
    coco_to_karpathy,
    normalise_karpathy,
    write_dataset,
)
from msa_model.data.karpathy import (
    SPLITS,
    DatasetError,
    ImageRecord,
    make_splits,
    read_karpathy,
)
from msa_model.data.synth import (
    CoverRegion,
    SceneDescription,
    describe,
    generate_scene,
    write_synthetic_dataset,
)

__all__ = [
    "SPLITS",
    "CoverRegion",
    "DatasetError",
    "DatasetReport",
    "EvalImages",
    "ImageReadError",
    "ImageRecord",
    "ImageStore",
    "ImageTransform",
    "ImportSummary",
    "SceneDescription",
    "SplitStats",
    "TrainPairs",
    "build_transform",
    "check_data",
    "check_dataset",
    "coco_to_karpathy",
    "collate",
    "describe",
    "eval_captions",
    "format_report",
    "generate_scene",
    "make_splits",
    "normalise_karpathy",
    "read_karpathy",
    "read_rgb",
    "write_dataset",
    "write_synthetic_dataset",
]
