"""Integration tier: a real Docker engine (started by scripts/test.sh) and the stand-in image.

Nothing here skips: a missing engine or image is a failure, so CI cannot pass without running
these tests. Every test gets its own project name; its containers are removed by label.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import urllib.request
import uuid
from pathlib import Path

import docker
import pytest

from orchestrator.cli import main

STANDIN_IMAGE = os.environ.get("VLLM_ORCH_STANDIN_IMAGE", "vllm-orch/standin:latest")
REPO = Path(__file__).resolve().parents[2]
PIXI_PROJECT = REPO / "tests" / "images" / "standin" / "pixi-project"


@pytest.fixture(scope="session", autouse=True)
def _ask_images_for_their_tables(fresh_option_table_cache):
    """The option tables come from the images in every run (tests/conftest.py)."""


@pytest.fixture(scope="session")
def engine() -> docker.DockerClient:
    try:
        client = docker.from_env(version="auto")
        client.ping()
    except docker.errors.DockerException as exc:
        pytest.fail(f"no Docker engine ({exc}); run the tests through scripts/test.sh, which starts one")
    try:
        client.images.get(STANDIN_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {STANDIN_IMAGE} missing; scripts/build-images.sh standin builds it")
    return client


# Two stand-in servers without GPUs, their ports to fill in (`.format(pa=..., pb=...)`).
TWO_STANDINS = """
[instance.control]
gpu_ids = "none"
[instance.server]
host = "0.0.0.0"
[instance.a.server]
port = {pa}
[instance.b.server]
port = {pb}
"""


_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before in this run.

    The kernel may give the same ephemeral port to two back-to-back binds once the first socket
    is closed; a config that asks for two ports must get two different ones (a CI run once got
    the same port for two instances and the config was rightly refused).
    """
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


class Fleet:
    """A project under test: writes its TOML, runs the CLI in-process, cleans up by label."""

    def __init__(self, client: docker.DockerClient, tmp_path: Path, capsys):
        self.client = client
        self.dir = tmp_path
        self.name = "t" + uuid.uuid4().hex[:10]
        self.path = tmp_path / "fleet.toml"
        self.capsys = capsys

    def write(self, body: str, *, image: str = STANDIN_IMAGE, docker_extra: str = "") -> Path:
        header = textwrap.dedent(f"""
            [master]
            api_server_module = "standin_vllm.api_server"

            [docker]
            image = "{image}"
            project = "{self.name}"
            shm_size = "64m"
            stop_timeout = 10
            health_interval = 1
            """)
        self.path.write_text(header + textwrap.dedent(docker_extra) + textwrap.dedent(body))
        return self.path

    def cli(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = main(["-c", str(self.path), *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    def cli_json(self, *args: str) -> dict:
        code, out, err = self.cli(*args, "--json")
        assert code == 0, err
        return json.loads(out)

    def containers(self, all: bool = True) -> list:
        return self.client.containers.list(all=all, filters={"label": f"io.vllm-orch.project={self.name}"})

    def container(self, instance: str):
        matches = [c for c in self.containers() if c.labels.get("io.vllm-orch.instance") == instance]
        assert len(matches) == 1, f"expected one container for {instance}, found {len(matches)}"
        return matches[0]

    def log_file(self, instance: str) -> Path:
        return self.dir / "logs" / f"vllm-server-{instance}.log"

    def cleanup(self) -> None:
        for container in self.containers():
            container.remove(force=True)


@pytest.fixture
def fleet(engine, tmp_path, capsys):
    project = Fleet(engine, tmp_path, capsys)
    yield project
    project.cleanup()


def http_json(url: str, headers: dict | None = None, timeout: float = 5) -> tuple[int, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The installed console script in a subprocess, for what only a real process shows."""
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=300)


@pytest.fixture(scope="session")
def dedicated_engine(engine):
    """A second dockerd of the tests' own (tests/integration/dedicated_engine.py), for the faults
    that stop or kill the engine; the main engine and everyone's containers on it are untouched.
    Torn down at the end of the session even when tests failed, and checked to leave nothing."""
    from tests.integration.dedicated_engine import DedicatedEngine

    try:
        second = DedicatedEngine()
    except Exception as exc:
        pytest.fail(f"cannot make a network namespace for the dedicated Docker engine: {exc}")
    try:
        second.start()
        second.load_image(STANDIN_IMAGE)
    except Exception as exc:
        second.destroy()
        pytest.fail(f"cannot start the dedicated Docker engine for the fault tests: {exc}")
    yield second
    second.destroy()
    assert second.leftovers() == [], "the dedicated engine left processes or mounts behind"


@pytest.fixture
def dedicated_fleet(dedicated_engine, tmp_path, capsys, monkeypatch):
    """A Fleet whose CLI runs (in-process and in subprocesses) against the dedicated engine."""
    monkeypatch.setenv("DOCKER_HOST", dedicated_engine.address)
    client = dedicated_engine.client()
    project = Fleet(client, tmp_path, capsys)
    yield project
    if not dedicated_engine.answers():  # a test that killed it failed before starting it again
        dedicated_engine.start()
    project.cleanup()
    client.close()
