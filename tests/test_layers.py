"""The layers of workflows/: the YAML contract, the results and the CLI import without Ray."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    "modules",
    [
        "workflows.experiment",
        "workflows.results.trials, workflows.results.export, workflows.results.report",
        "workflows.cli",
    ],
)
def test_layer_imports_without_ray(modules: str) -> None:
    code = f"import sys, {modules}; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def ray_imports(source: str) -> list[int]:
    """Lines of ``source`` that import Ray (``import ray...``, ``from ray... import``), at any
    depth: in functions, methods, classes and conditionals too."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            modules = [node.module or ""]
        else:
            continue
        if any(m == "ray" or m.startswith("ray.") for m in modules):
            lines.append(node.lineno)
    return lines


def test_ray_imports_are_found_inside_functions() -> None:
    source = (
        "import rayon\n"
        "def to_tune(d):\n"
        "    if d:\n"
        "        from ray import tune\n"
        "    class A:\n"
        "        def f(self):\n"
        "            import ray.train as t, os\n"
    )
    assert ray_imports(source) == [4, 7]


def test_every_ray_import_is_under_runtime() -> None:
    """Outside workflows/runtime (and in msa_model) no module imports Ray, even in a function."""
    repo = Path(__file__).resolve().parents[1]
    modules = [*(repo / "workflows").rglob("*.py"), *(repo / "msa_model").rglob("*.py")]
    offenders = [
        f"{path.relative_to(repo)}:{line}"
        for path in modules
        if "runtime" not in path.relative_to(repo).parts
        for line in ray_imports(path.read_text())
    ]
    assert offenders == []
