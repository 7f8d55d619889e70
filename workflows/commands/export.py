"""``msa export RESULTS_DIR``: the best config(s) of a search as YAML, or the winner's weights."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from msa_model.config import ConfigError
from workflows.commands.options import positive_int

__all__ = ["HELP", "add_arguments", "run", "output_path"]

HELP = "best config(s) of a search as YAML, one trial's config, or the winner's weights"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """RESULTS_DIR, ``--trial`` or ``--top``, ``--model`` and ``--out``."""
    p.add_argument("results_dir", type=Path, help="a `msa tune` results folder (results/<name>)")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--top",
        type=positive_int,
        default=1,
        metavar="K",
        help="the K best configs (the final stage's ranking when it ran; default: 1)",
    )
    which.add_argument("--trial", metavar="ID", help="this search trial (an id or its prefix)")
    p.add_argument(
        "--model",
        action="store_true",
        help="the weights instead (safetensors + experiment.yaml + tokenizer), for msa evaluate "
        "and msa search: the final winner's best-validation seed (its first on train+val), "
        "or --trial's best checkpoint",
    )
    p.add_argument(
        "--out",
        metavar="FILE|DIR",
        help="where to write; a path ending in / or an existing folder is a folder (default: "
        "<results_dir>/best_config.yaml, top_configs/, trial_<ID>.yaml or model/)",
    )


def output_path(out: str | None, filename: str, many: bool = False) -> Path | None:
    """The file (or, with ``many``, the folder) that ``--out`` names.

    A value ending in ``/`` or naming an existing folder is a folder: one file is written into
    it as ``filename``. Several files (``many``) need a folder.
    """
    if out is None:
        return None
    path = Path(out)
    folder = out.endswith(("/", os.sep)) or path.is_dir()
    if many:
        if path.is_file():
            raise ConfigError(f"--out {out}: several files are written; give a folder, not a file")
        return path
    return path / filename if folder else path


def run(args: argparse.Namespace) -> int:
    """Write the configs (or the model); print their paths."""
    from workflows.results.export import export_best, export_trial

    if args.model:
        from workflows.results.model_export import export_model

        if args.top != 1:
            raise ConfigError("--model exports one model: the winner's, or --trial ID's")
        out = None if args.out is None else Path(args.out)
        path, source = export_model(args.results_dir, out, args.trial)
        print(path)
        if "seed" in source:
            print(f"the winner {source['candidate']}, seed {source['seed']}: {source['picked']}")
        return 0
    if args.trial is not None:
        out = output_path(args.out, f"trial_{args.trial}.yaml")
        print(export_trial(args.results_dir, args.trial, out))
        return 0
    out = output_path(args.out, "best_config.yaml", many=args.top > 1)
    for path in export_best(args.results_dir, args.top, out):
        print(path)
    return 0
