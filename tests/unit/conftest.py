from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

# Copies of the contract's two real example configs (shared/seed/examples), kept in the repo so
# the suite does not depend on where the shared folder lies.
EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "contract-examples"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture
def write_toml(tmp_path: Path):
    """Write a TOML document (dedented) into a temp dir and return its path."""

    def write(text: str, name: str = "fleet.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
def examples_dir() -> Path:
    if not EXAMPLES.is_dir():
        pytest.fail(f"the contract's examples are missing: {EXAMPLES}")
    return EXAMPLES
