"""configs <- models <- {export, workers}: the pure core never imports the stream stack,
and the two sides never import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "configs": {"models", "workers", "export", "faust", "aiokafka", "redis", "bse_predict"},
    "models": {"workers", "export", "faust", "aiokafka", "redis", "bse_predict"},
    "workers": {"export", "bse_predict"},
    "export": {"workers", "faust", "aiokafka", "redis", "bse_predict"},
}


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_the_direction(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(_imported_roots(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_the_worker_imports_no_training_library() -> None:
    """A serving install has no scikit-learn, pandas, xgboost or TensorFlow: the worker's
    import path must not need them."""
    import subprocess
    import sys

    probe = ("import sys, bse_predict.cli, workers.run, workers.app, workers.bench, models.onnx_runner; "
             "print(sorted(m for m in ('sklearn', 'pandas', 'xgboost', 'tensorflow', 'keras', 'hmmlearn', "
             "'matplotlib', 'skl2onnx') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "[]", result.stdout
