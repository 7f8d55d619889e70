"""The layers of workflows/: the YAML contract, the results and the CLI import without Ray."""

from __future__ import annotations

import subprocess
import sys

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


def test_every_runtime_module_is_under_runtime() -> None:
    """Outside workflows/runtime no module imports Ray at its top."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "workflows"
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if "runtime" not in path.parts
        and any(
            line.startswith(("import ray", "from ray")) for line in path.read_text().splitlines()
        )
    ]
    assert offenders == []
