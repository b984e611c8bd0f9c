"""The Compose export of an on-demand instance, with real Docker Compose v2 on the real engine:
Compose cannot start a service on its first request, so the service is in the profile
"on-demand" (a plain `docker compose up` leaves it alone, `--profile on-demand` starts it) and
carries a comment saying so. The stand-in image serves (tests/images/standin: not vLLM)."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.integration.conftest import free_port

pytestmark = pytest.mark.docker


def compose(fleet, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "compose", "-f", str(fleet.dir / "docker-compose.yml"), *args],
                          capture_output=True, text=True, timeout=180)


def running(fleet) -> set[str]:
    return {c.labels["io.vllm-orch.instance"] for c in fleet.containers(all=False)}


def test_a_plain_compose_up_leaves_an_on_demand_service_alone(fleet):
    fleet.write(f"""
        [instance.control]
        gpu_ids = "none"
        [instance.server]
        host = "0.0.0.0"
        [instance.chat.server]
        model = "/m/chat"
        port = {free_port()}
        [instance.coder.docker]
        on_demand = true
        idle_stop_after = 600
        [instance.coder.server]
        model = "/m/coder"
        port = {free_port()}
        """)
    code, out, err = fleet.cli("compose", "-o", str(fleet.dir / "docker-compose.yml"))
    assert code == 0, err
    text = (fleet.dir / "docker-compose.yml").read_text()
    doc = yaml.safe_load(text)
    assert doc["services"]["coder"]["profiles"] == ["on-demand"]
    assert "profiles" not in doc["services"]["chat"]
    comment = text[:text.index("\n  coder:")].rsplit("\n  chat:", 1)[1]
    assert "on_demand = true: Compose cannot start a service on its first request" in comment
    assert "idle_stop_after = 600 s" in comment

    # What the header asks for before `docker compose up`: the log files and cache directories.
    for line in text.splitlines():
        match = re.match(r"^#   ((mkdir -p|touch|chmod \d+|chown [\d:]+) .*)$", line)
        if match:
            subprocess.run(["sh", "-c", match.group(1)], check=True)

    checked = compose(fleet, "config", "--quiet")
    assert checked.returncode == 0, checked.stderr
    assert compose(fleet, "config", "--services").stdout.split() == ["chat"]
    assert sorted(compose(fleet, "--profile", "on-demand", "config", "--services").stdout.split()) == ["chat", "coder"]
    try:
        done = compose(fleet, "up", "-d")
        assert done.returncode == 0, done.stderr
        assert running(fleet) == {"chat"}
        assert not [c for c in fleet.containers() if c.labels.get("io.vllm-orch.instance") == "coder"]
        done = compose(fleet, "up", "-d", "coder")  # named on the command line: its profile is implied
        assert done.returncode == 0, done.stderr
        assert running(fleet) == {"chat", "coder"}
        compose(fleet, "--profile", "on-demand", "stop", "coder")
        assert running(fleet) == {"chat"}
        done = compose(fleet, "--profile", "on-demand", "up", "-d")
        assert done.returncode == 0, done.stderr
        assert running(fleet) == {"chat", "coder"}
    finally:
        subprocess.run(["docker", "compose", "-p", fleet.name, "--profile", "on-demand", "down", "--timeout", "5"],
                       capture_output=True, text=True, timeout=180, cwd=fleet.dir)
