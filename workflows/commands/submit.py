"""``msa submit CONFIG [options] [-- tune options]``: run ``msa tune CONFIG`` as a Ray job."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from msa_model.config import ConfigError
from workflows.commands.options import SET_HELP
from workflows.runtime.jobs import DEFAULT_ADDRESS

__all__ = ["HELP", "DESCRIPTION", "add_arguments", "add_options", "finish_args", "run"]

HELP = "run `msa tune CONFIG` as a Ray job on a cluster"
DESCRIPTION = (
    "Submit `msa tune CONFIG` as a Ray job: msa submit CONFIG [options] "
    "[-- msa tune options, e.g. --results DIR --storage DIR]"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """CONFIG, the submit options, and everything after it (split by :func:`finish_args`)."""
    p.add_argument("config", type=Path, help="experiment YAML inside --working-dir")
    add_options(p)
    p.add_argument("tune_args", nargs=argparse.REMAINDER, help="[options] -- tune options")


def add_options(p: argparse.ArgumentParser) -> None:
    """Options of ``msa submit`` that may come before or after CONFIG."""
    p.add_argument(
        "--address",
        default=None,
        help=f"the cluster's job server (dashboard) URL (default: RAY_API_SERVER_ADDRESS, an "
        f"http RAY_ADDRESS, else {DEFAULT_ADDRESS})",
    )
    p.add_argument(
        "--working-dir",
        type=Path,
        default=Path("."),
        help="folder uploaded as the job's working dir; CONFIG must be inside it (default: .)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=SET_HELP)
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="PATTERN",
        help="more gitignore-style patterns not to upload (results/, data/, .venv/, .git are)",
    )
    p.add_argument(
        "--wait", action="store_true", help="follow the job's logs; exit with its final status"
    )


def finish_args(args: argparse.Namespace) -> argparse.Namespace:
    """Split ``args.tune_args`` (everything after CONFIG) at ``--``.

    Options before ``--`` are ``msa submit``'s own; what follows goes to ``msa tune``.
    """
    rest = list(args.tune_args or [])
    if "--" in rest:
        cut = rest.index("--")
        own, tune_args = rest[:cut], rest[cut + 1 :]
    else:
        own, tune_args = rest, []
    parser = argparse.ArgumentParser(prog="msa submit", add_help=False)
    add_options(parser)
    later, unknown = parser.parse_known_args(own)
    if unknown:
        raise ConfigError(
            f"msa submit: unrecognized arguments {' '.join(unknown)}; options for `msa tune` "
            f"go after `--` (msa submit CONFIG [options] -- --results DIR ...)"
        )
    merged = argparse.Namespace(**vars(args))
    for key, value in vars(later).items():
        if isinstance(value, list):  # --set/--exclude given before and after CONFIG add up
            setattr(merged, key, list(getattr(args, key, None) or []) + value)
        elif value != parser.get_default(key):
            setattr(merged, key, value)
    merged.tune_args = tune_args
    return merged


def run(args: argparse.Namespace) -> int:
    """Submit the job (and follow it with ``--wait``); 1 when the job server is unreachable."""
    from workflows.runtime.jobs import submit

    args = finish_args(args)
    try:
        return submit(
            args.config,
            address=args.address,
            working_dir=args.working_dir,
            sets=args.set,
            tune_args=args.tune_args,
            exclude=args.exclude,
            wait=args.wait,
        )
    except ConnectionError as exc:
        print(f"msa: error: {exc}", file=sys.stderr)
        return 1
