"""`vllm-orch launch`: background instances that share a GPU start in turn, each once the one
before answers /health; a failure early in the chain keeps the rest from starting, naming why.
Real processes (the stdlib stand-in server, as in test_launch_local.py); no GPU is involved:
the order follows gpu_ids alone."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import free_port
from tests.integration.test_launch_local import Launcher

HEALTH_DELAY_S = 2


@pytest.fixture
def launcher(tmp_path):
    project = Launcher(tmp_path)
    yield project
    project.cleanup()


def write(launcher: Launcher, a_args: str) -> None:
    launcher.write(f"""
        [instance.a.control]
        gpu_ids = "0"
        [instance.a.server]
        port = {free_port()}
        extra_args = {a_args}
        [instance.b.control]
        gpu_ids = "0,1"
        [instance.b.server]
        port = {free_port()}
        [instance.c.control]
        gpu_ids = "2"
        [instance.c.server]
        port = {free_port()}
    """)


def started_at(launcher: Launcher, name: str) -> float:
    return json.loads(next(launcher.state.glob(f"*/{name}.json")).read_text())["started_at"]


def test_background_instances_on_a_shared_gpu_start_in_turn(launcher):
    write(launcher, f'["--standin-health-delay", "{HEALTH_DELAY_S}"]')
    result = launcher.cli("launch")
    assert result.returncode == 0, result.stderr
    assert "start b after a: both on GPU 0" in result.stderr
    a, b, c = (started_at(launcher, name) for name in "abc")
    assert b - a >= HEALTH_DELAY_S, "b started before a answered /health"
    assert c - a < HEALTH_DELAY_S, "c (GPU 2) waited although it shares nothing"
    assert launcher.cli("down", "--backend", "local").returncode == 0


def test_an_instance_that_dies_keeps_the_rest_of_its_chain_down(launcher):
    write(launcher, '["--standin-exit-code", "3"]')
    result = launcher.cli("launch")
    assert result.returncode == 1
    assert "b: not launched: it waits for a (both on GPU 0), which exited before it answered /health" in result.stderr
    rows = {row["name"]: row["state"] for row in json.loads(
        launcher.cli("ps", "--backend", "local", "--json").stdout)["instances"]}
    assert rows == {"a": "exited", "b": "not started", "c": "running"}
    launcher.cli("down", "--backend", "local")


def test_a_foreground_instance_that_fails_ends_with_its_cause(launcher):
    import socket

    with socket.socket() as held:  # something else already listens on the instance's port
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        launcher.write(f"""
            [instance.fg.control]
            background = false
            [instance.fg.server]
            port = {held.getsockname()[1]}
        """)
        result = launcher.cli("launch")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(
        "fg: cause: the server's port is already in use; fix: stop what holds it or give the instance another server.port")
