"""The structure the code keeps (docs/architecture.md): the import contracts of
pyproject.toml hold, functions stay short, and nothing outside tests/ leans on tests/."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "replay", "models", "streamer", "stcsnn")
OUTSIDE_TESTS = (*PACKAGES, "benchmarks", "experiments")
MAX_FUNCTION_LINES = 120


def python_files(folders) -> list[Path]:
    return sorted(path for folder in folders for path in (ROOT / folder).rglob("*.py"))


def test_import_contracts_hold():
    lint_imports = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if lint_imports is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    done = subprocess.run(
        [lint_imports, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_no_function_outside_tests_is_longer_than_120_lines():
    too_long = []
    for path in python_files(OUTSIDE_TESTS):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {lines}")
    assert not too_long, too_long


def test_nothing_outside_tests_imports_from_tests():
    offenders = []
    for path in python_files(OUTSIDE_TESTS):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            if any(name == "tests" or name.startswith("tests.") for name in names):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_the_checker_sees_what_it_checks():
    """Guard against passing vacuously: the scans read the real tree."""
    files = python_files(OUTSIDE_TESTS)
    assert len(files) > 60
    assert ROOT / "streamer" / "worker.py" in files and ROOT / "core" / "compress.py" in files
