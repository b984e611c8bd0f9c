"""The third hostile-input audit's cases that `up` meets, against the real engine and the stand-in
image: `up --dry-run` and `up` refuse them with one line and exit 2, and no container, log
directory or cache directory of the project exists afterwards (nothing half-done)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

BODY = """
[instance.control]
gpu_ids = "none"
[instance.a.server]
model = "/m"
port = {port}
"""

CASES = [
    ("--port in extra_args", 'extra_args = ["--port", "9000"]\n', "set instance.a.server.port instead"),
    ("--api-key in extra_args", 'extra_args = ["--api-key=sk-1"]\n', "instance.a.server.api_key"),
    ("TOML date in a table option", "hf_overrides = { release = 1979-05-27 }\n", "TOML date"),
    ("volume over /", '[instance.a.docker]\nvolumes = ["/tmp:/"]\n', "root"),
    ("image that is an option", '[instance.a.docker]\nimage = "--privileged"\n', "not an image reference"),
    ("cpuset backwards", '[instance.a.docker]\ncpuset = "7-0"\n', "runs backwards"),
    ("network of another container", '[instance.a.docker]\nnetwork_mode = "container:x"\n', "cannot publish"),
    ("escape sequence in a key", '"\\u001b]0;owned\\u0007" = 1\n', "\\x1b]0;owned\\x07"),
]


@pytest.mark.parametrize("name,extra,text", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "up"])
def test_up_refuses_with_nothing_made(fleet, name, extra, text, dry_run):
    from tests.integration.conftest import free_port

    fleet.write(BODY.format(port=free_port()) + extra)
    code, out, err = fleet.cli("up", *(["--dry-run"] if dry_run else []))
    assert code == 2, out + err
    progress = ("vllm-orch: 1 config error", "asking ")  # the summary; the option-table probe's progress line
    lines = [line for line in (out + err).splitlines() if not line.startswith(progress)]
    assert len(lines) == 1 and text in lines[0], out + err
    assert "\x1b" not in out + err and "\x07" not in out + err
    assert fleet.containers() == []
    assert not (fleet.dir / "logs").exists() and not (fleet.dir / "cache").exists()


def test_a_fifo_config_ends_at_once_in_a_real_process(tmp_path):
    """The console script, as a user runs it: a FIFO nobody writes to is refused, not waited on."""
    fifo = tmp_path / "fleet.toml"
    os.mkfifo(fifo)
    for command in ("validate", "plan", "up"):
        result = subprocess.run([sys.executable, "-m", "orchestrator", "-c", str(fifo), command, "--dry-run"]
                                if command == "up" else [sys.executable, "-m", "orchestrator", "-c", str(fifo), command],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert "is a FIFO, not a regular file" in result.stdout + result.stderr
