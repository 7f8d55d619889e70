"""The ``msa`` command line (also ``python -m workflows``)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from types import ModuleType

from msa_model.config import ConfigError
from workflows.commands import data, demo, evaluate, export, search, submit, train, tune
from workflows.errors import NoTrialReported, ResultsFolderError, SearchInterrupted
from workflows.signals import sigterm_as_interrupt, terminated

__all__ = ["COMMANDS", "main", "build_parser", "exit_status"]

RESUMABLE = ("train", "tune")  # an interrupted run of these continues with --resume
DEBUG_HELP = "on an error, print the traceback too"
DESCRIPTION = (
    "Remote-sensing image-text retrieval (MSA), trained with Ray Train and tuned with Ray Tune "
    "+ Optuna. Start with: msa demo. Each command has its own --help."
)

# verb -> its module: HELP, add_arguments(parser), run(args) -> exit status (DESCRIPTION optional)
COMMANDS: dict[str, ModuleType] = {
    "data": data,
    "train": train,
    "tune": tune,
    "evaluate": evaluate,
    "export": export,
    "search": search,
    "submit": submit,
    "demo": demo,
}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every verb in :data:`COMMANDS`; ``--debug`` goes before or after the verb."""
    parser = argparse.ArgumentParser(prog="msa", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(
            name, help=command.HELP, description=getattr(command, "DESCRIPTION", None)
        )
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        command.add_arguments(p)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("msa-tune")
    except PackageNotFoundError:  # a checkout that was never installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    """Run ``msa``; returns the exit status.

    0: done; 1: a known failure (bad data, a missing file, a refused folder, failed trials);
    2: bad arguments or config; 130: interrupted (Ctrl-C), 143: terminated (SIGTERM). Known
    failures print ``msa: error: ...`` only; ``--debug`` adds the traceback.
    """
    args = build_parser().parse_args(argv)
    # every trial's per-epoch line matters: Ray's log deduplication would fold them together
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not sys.stdout.isatty():  # no colour codes around the workers' lines in a log file
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    if os.environ.get("MSA_VERBOSE", "0") in ("", "0"):  # Tune's "operation took 0.6 s" warnings
        os.environ.setdefault("TUNE_WARN_THRESHOLD_S", "10")  # (Tune's documented variable)
    try:
        with sigterm_as_interrupt():
            return COMMANDS[args.command].run(args)
    except (KeyboardInterrupt, SearchInterrupted) as exc:
        message = str(exc) or "interrupted"
        if args.command in RESUMABLE and "--resume" not in message:
            message += ": rerun with --resume to continue"
        if terminated():
            _report(args, f"terminated (SIGTERM); {message}")
            return 143
        _report(args, message)
        return 130
    except BaseException as exc:
        status = exit_status(exc)
        if status is None:
            raise
        _report(args, str(exc) or type(exc).__name__)
        return status


def exit_status(exc: BaseException) -> int | None:
    """The exit status of a known error (2: config or arguments, 1: others), None otherwise."""
    from msa_model.checkpoint import CheckpointError
    from msa_model.data import DatasetError
    from workflows.results.read_ledger import TestAlreadyRead
    from workflows.runtime.fatal import RepeatedError

    if isinstance(exc, ConfigError):
        return 2
    known = (
        DatasetError,
        CheckpointError,
        TestAlreadyRead,
        RepeatedError,
        NoTrialReported,
        ResultsFolderError,
        FloatingPointError,  # a non-finite loss
        ConnectionError,
        OSError,  # missing or unreadable files, a full disk, refused permissions
    )
    return 1 if isinstance(exc, known) else None


def _report(args: argparse.Namespace, message: str) -> None:
    if getattr(args, "debug", False):
        traceback.print_exc()
    print(f"msa: error: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
