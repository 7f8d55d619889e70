"""The ``msa`` command line (also ``python -m workflows``)."""

from __future__ import annotations

import argparse
import os
import sys
from types import ModuleType

from msa_model.config import ConfigError
from workflows.commands import data, demo, evaluate, export, submit, train, tune

__all__ = ["COMMANDS", "main", "build_parser"]

# verb -> its module: HELP, add_arguments(parser), run(args) -> exit status (DESCRIPTION optional)
COMMANDS: dict[str, ModuleType] = {
    "data": data,
    "train": train,
    "tune": tune,
    "evaluate": evaluate,
    "export": export,
    "submit": submit,
    "demo": demo,
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every verb in :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="msa", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(
            name, help=command.HELP, description=getattr(command, "DESCRIPTION", None)
        )
        command.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``msa``; returns the exit status (2: bad config or arguments, 1: other failure)."""
    args = build_parser().parse_args(argv)
    # every trial's per-epoch line matters: Ray's log deduplication would fold them together
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    from msa_model.data import DatasetError

    try:
        return COMMANDS[args.command].run(args)
    except ConfigError as exc:
        print(f"msa: config error: {exc}", file=sys.stderr)
        return 2
    except (DatasetError, FileNotFoundError) as exc:
        print(f"msa: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
