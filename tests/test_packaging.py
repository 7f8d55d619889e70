"""The wheel: both packages and the shipped experiments, no benchmarks; found when installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built (offline, no isolation) from a copy of the sources."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for name in ("msa_model", "workflows", "search_spaces", "benchmarks"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + [str(src), "-w", str(out)],
        check=True,
        capture_output=True,
    )
    (found,) = out.glob("msa_tune-*.whl")
    return found


def test_wheel_holds_the_packages_and_the_shipped_experiments(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    yamls = sorted(REPO.glob("search_spaces/*.yaml"))
    assert yamls
    with zipfile.ZipFile(wheel) as archive:
        for path in yamls:
            assert archive.read(f"workflows/search_spaces/{path.name}") == path.read_bytes()
    sources = [
        p.relative_to(REPO).as_posix()
        for package in ("msa_model", "workflows")
        for p in (REPO / package).rglob("*.py")
        if "__pycache__" not in p.parts
    ]
    assert sorted(set(sources) - names) == []
    assert not [n for n in names if n.startswith(("benchmarks/", "tests/", "search_spaces/"))]


def test_installed_wheel_finds_its_experiments(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target)]
        + [str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import workflows\n"
        "from workflows.experiment import SEARCH_SPACES, load_experiment\n"
        "print(workflows.__file__)\n"
        "print(SEARCH_SPACES)\n"
        "print(load_experiment(SEARCH_SPACES / 'demo.yaml').name)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out[0] == str(target / "workflows" / "__init__.py")
    assert out[1:] == [str(target / "workflows" / "search_spaces"), "demo"]
