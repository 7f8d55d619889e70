"""The CLI's help: every option and positional explained, plain text, and --version."""

from __future__ import annotations

import argparse
from importlib.metadata import version
from pathlib import Path

import pytest

from workflows.cli import build_parser, main


def _parsers(parser: argparse.ArgumentParser, path: str = "msa"):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_argument_has_help_and_no_rst() -> None:
    missing, rst = [], []
    for path, parser in _parsers(build_parser()):
        if parser.description and "``" in parser.description:
            rst.append(f"{path}: description")
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            name = "/".join(action.option_strings) or action.dest
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(f"{path} {name}")
            elif "``" in action.help:
                rst.append(f"{path} {name}")
    assert missing == []
    assert rst == []


def test_help_pages_render_without_rst(capsys: pytest.CaptureFixture[str]) -> None:
    for path, _ in _parsers(build_parser()):
        with pytest.raises(SystemExit) as exit_info:
            main([*path.split()[1:], "--help"])
        assert exit_info.value.code == 0
        page = capsys.readouterr().out
        assert "usage: " + path in page and "``" not in page, path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"msa {version('msa-tune')}"


def test_tensorboard_hint_names_the_extra_when_missing(tmp_path: Path) -> None:
    from workflows.results.outcome import tensorboard_hint

    logdir = tmp_path / "tensorboard"
    assert tensorboard_hint(logdir, installed=True) == f"tensorboard --logdir {logdir}"
    missing = tensorboard_hint(logdir, installed=False)
    assert missing == f'pip install -e ".[tensorboard]" (once), then tensorboard --logdir {logdir}'
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '\ntensorboard = ["tensorboard>=' in pyproject  # the extra the hint names
