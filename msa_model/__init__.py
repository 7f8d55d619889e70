"""msa_model: the Multi-Scale Alignment (MSA) library for remote-sensing image-text retrieval.

Imports without Ray; :mod:`workflows` holds everything Ray and the CLI.
"""

from __future__ import annotations

from msa_model.config import (
    ConfigError,
    DataConfig,
    ImageTowerConfig,
    LossConfig,
    ModelConfig,
    MSCMATConfig,
    OptimConfig,
    TextTowerConfig,
    from_dict,
    load_yaml,
    to_dict,
)

__all__ = [
    "ConfigError",
    "DataConfig",
    "ImageTowerConfig",
    "LossConfig",
    "MSCMATConfig",
    "ModelConfig",
    "OptimConfig",
    "TextTowerConfig",
    "from_dict",
    "load_yaml",
    "to_dict",
]
