"""What the option tables generate is checked in as they generate it: the JSON Schema file that
editors read and the README's reference rows. One command rewrites them all
(`python -m orchestrator.generate`); this test is the CI check that nobody pasted or forgot."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from orchestrator import generate

ROOT = Path(__file__).resolve().parents[2]


def test_the_checked_in_files_are_what_the_command_writes():
    stale = generate.outdated()
    assert not stale, f"{', '.join(stale)} out of date: run `{generate.COMMAND}`"


def checkout_copy(tmp_path: Path) -> Path:
    (tmp_path / "configs").mkdir()
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copy(ROOT / generate.SCHEMA_FILE, tmp_path / generate.SCHEMA_FILE)
    return tmp_path


def test_a_hand_edited_row_or_schema_is_found_and_rewritten(tmp_path):
    root = checkout_copy(tmp_path)
    readme = (root / "README.md").read_text()
    edited = readme.replace("| `cpuset` | unset |", "| `cpuset` | all CPUs |")
    assert edited != readme
    (root / "README.md").write_text(edited)
    (root / generate.SCHEMA_FILE).write_text("{}\n")
    assert sorted(generate.outdated(root)) == sorted(["README.md", generate.SCHEMA_FILE])
    assert generate.readme_text(edited) == readme  # the prose around the blocks is kept as it is


def test_check_mode_names_the_command_and_fails_without_writing(monkeypatch, capsys, tmp_path):
    root = checkout_copy(tmp_path)
    (root / generate.SCHEMA_FILE).write_text("{}\n")
    monkeypatch.setattr(generate, "ROOT", root)
    assert generate.main(["--check"]) == 1
    assert f"{generate.SCHEMA_FILE} is out of date: run `python -m orchestrator.generate`" in capsys.readouterr().err
    assert (root / generate.SCHEMA_FILE).read_text() == "{}\n"
    assert generate.main([]) == 0 and not generate.outdated(root)


def test_the_command_runs_as_documented():
    done = subprocess.run([sys.executable, "-m", "orchestrator.generate", "--check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
