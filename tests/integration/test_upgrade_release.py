"""An upgrade of vllm-orch never restarts a loaded model by itself: the fleet is made by an
earlier release (installed from this repository's git history), then this release's `up` must
find nothing to do, and leave every container (same id) running; a real change recreates only
its instance. Add each release's commit to RELEASES (and record its containers with
tests/fixtures/releases/record.py for the unit tier)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, STANDIN_IMAGE, free_port

pytestmark = pytest.mark.docker
RELEASES = ["8a54adf", "4a4232d"]


def install_release(commit: str, where: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "orchestrator"], capture_output=True)
    assert archive.returncode == 0, (f"release {commit} is not in this clone's history "
                                     f"(CI must clone with history): {archive.stderr.decode()[-300:]}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(where)
    return where


def run(code_dir: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(code_dir), "UPGRADE_TOKEN": "token-value"}
    return subprocess.run([sys.executable, "-m", "orchestrator", "-c", str(config), *args], cwd=code_dir, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("commit", RELEASES)
def test_containers_of_an_earlier_release_are_left_alone(engine, tmp_path, commit):
    old = install_release(commit, tmp_path / f"release-{commit}")
    project = f"upgrade-{commit}-{os.getpid()}"
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    config = tmp_path / "fleet.toml"
    config.write_text(textwrap.dedent(f"""
        [master]
        api_server_module = "standin_vllm.api_server"
        [docker]
        image = "{STANDIN_IMAGE}"
        project = "{project}"
        shm_size = "64m"
        stop_timeout = 5
        health_interval = 1
        volumes = ["models:/models:ro"]
        [instance.control]
        gpu_ids = "none"
        [instance.server]
        host = "0.0.0.0"
        model = "/models/tiny"
        [instance.plain.server]
        port = {free_port()}
        served_model_name = ["tiny", "alias"]
        max_model_len = 256
        [instance.secret.server]
        port = {free_port()}
        api_key = "key-value"
        [instance.secret.docker]
        secret_env = ["UPGRADE_TOKEN"]
        restart = "unless-stopped"
        [instance.gpu.control]
        gpu_ids = "0"
        [instance.gpu.server]
        port = {free_port()}
        """))
    try:
        made = run(old, config, "up", "--wait", "--timeout", "120")
        assert made.returncode == 0, made.stderr
        before = {c.name: c.id for c in engine.containers.list(filters={"label": f"io.vllm-orch.project={project}"})}
        assert len(before) == 3

        dry = run(REPO, config, "up", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        assert {a["action"] for a in json.loads(dry.stdout)["actions"]} == {"noop"}, dry.stdout
        again = run(REPO, config, "up", "--json")
        assert again.returncode == 0, again.stderr
        assert {a["action"] for a in json.loads(again.stdout)["actions"]} == {"noop"}
        after = {c.name: c.id for c in engine.containers.list(filters={"label": f"io.vllm-orch.project={project}"})}
        assert after == before

        config.write_text(config.read_text().replace("max_model_len = 256", "max_model_len = 512"))
        changed = run(REPO, config, "up", "--dry-run", "--json")
        actions = {a["instance"]: a for a in json.loads(changed.stdout)["actions"]}
        assert {n: a["action"] for n, a in actions.items()} == {"plain": "recreate", "secret": "noop", "gpu": "noop"}
        assert actions["plain"]["reasons"] == ["command: --max-model-len 256 -> 512"]

        # That release put the secrets in the container's environment; a rotated key recreates
        # it into today's form, where `docker inspect` shows no value.
        old_env = engine.containers.get(f"{project}-secret").attrs["Config"]["Env"]
        assert "VLLM_API_KEY=key-value" in old_env  # what is being fixed
        config.write_text(config.read_text().replace('api_key = "key-value"', 'api_key = "key-rotated"'))
        rotated = run(REPO, config, "up", "--json", "--wait", "--timeout", "120")
        assert rotated.returncode == 0, rotated.stderr
        actions = {a["instance"]: a for a in json.loads(rotated.stdout)["actions"]}
        assert actions["secret"]["action"] == "recreate" and actions["gpu"]["action"] == "noop"
        inspect = json.dumps(engine.containers.get(f"{project}-secret").attrs)
        assert "key-rotated" not in inspect and "token-value" not in inspect and "key-value" not in inspect
    finally:
        for container in engine.containers.list(all=True, filters={"label": f"io.vllm-orch.project={project}"}):
            container.remove(force=True)
