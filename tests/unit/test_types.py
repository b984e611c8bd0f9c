"""The package type-checks: `mypy` (pinned in the test extras) with the configuration in
pyproject.toml, over every module of `orchestrator`. Any error fails the test, and with it CI.

Value classes are declared to type checkers through `typing.dataclass_transform` (value.py), so
a wrong field name or a missing argument in a spec, plan or result is an error here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_mypy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


def test_the_package_type_checks():
    result = run_mypy()  # files and options: [tool.mypy] in pyproject.toml
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout


def test_the_checker_sees_value_fields(tmp_path):
    """Without dataclass_transform every Value call would pass unchecked: a misspelt field must fail."""
    probe = tmp_path / "probe.py"
    probe.write_text("from orchestrator.errors import Problem\n"
                     "Problem('error', 'a.b', 'msg', severty='x')\n"
                     "Problem('error').path.upper()\n")
    result = run_mypy("--config-file", str(ROOT / "pyproject.toml"), str(probe))
    assert result.returncode == 1
    assert 'Unexpected keyword argument "severty" for "Problem"' in result.stdout
    assert 'Missing positional arguments "path", "message" in call to "Problem"' in result.stdout
