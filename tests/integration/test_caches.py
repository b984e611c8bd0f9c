"""Per-instance caches on the host (VLLM_CACHE_ROOT, HF_HOME) through the real engine, and the
upgrade rule: a container made by the release before them (8a54adf) is not recreated by this one
when its config did not change. The server is the stand-in; tests/e2e and bench/ time real vLLM."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.integration.conftest import free_port, http_json

REPO = Path(__file__).resolve().parents[2]
PREVIOUS_RELEASE = "8a54adf"

CONFIG = """
[instance.control]
gpu_ids = "none"
[instance.server]
host = "0.0.0.0"
[instance.a.server]
port = {port}
max_model_len = {max_len}
"""


def process_env(port: int) -> dict:
    status, info = http_json(f"http://127.0.0.1:{port}/standin/info")
    assert status == 200
    return info["env"]


def test_caches_live_on_the_host_and_outlive_a_recreate(fleet):
    port = free_port()
    fleet.write(CONFIG.format(port=port, max_len=128))
    code, _, err = fleet.cli("up", "--wait", "--timeout", "60")
    assert code == 0, err
    env = process_env(port)
    assert env["VLLM_CACHE_ROOT"] == "/vllm-orch-cache/vllm" and env["HF_HOME"] == "/vllm-orch-cache/huggingface"
    host_cache = fleet.dir / "cache" / "a"
    assert (host_cache / "vllm").is_dir() and (host_cache / "huggingface").is_dir()
    (host_cache / "vllm" / "compiled.txt").write_text("graph\n")  # as if vLLM had compiled something
    first_id = fleet.container("a").id

    fleet.write(CONFIG.format(port=port, max_len=256))
    code, _, err = fleet.cli("up", "--wait", "--timeout", "60")
    assert code == 0, err
    container = fleet.container("a")
    assert container.id != first_id  # recreated ...
    seen = container.exec_run(["cat", "/vllm-orch-cache/vllm/compiled.txt"])
    assert seen.exit_code == 0 and seen.output == b"graph\n"  # ... with the cache it had


def test_caches_can_be_turned_off_or_left_to_the_users_own_volume(fleet, tmp_path):
    (tmp_path / "hf").mkdir()
    port_off, port_own = free_port(), free_port()
    fleet.write(f"""
        [instance.control]
        gpu_ids = "none"
        [instance.server]
        host = "0.0.0.0"
        [instance.off.server]
        port = {port_off}
        [instance.off.docker]
        cache_host_dir = false
        [instance.own.server]
        port = {port_own}
        [instance.own.docker]
        volumes = ["{tmp_path}/hf:/root/.cache/huggingface"]
    """)
    code, _, err = fleet.cli("up", "--wait", "--timeout", "60")
    assert code == 0, err
    off, own = process_env(port_off), process_env(port_own)
    assert "VLLM_CACHE_ROOT" not in off and "HF_HOME" not in off
    assert not (fleet.dir / "cache" / "off").exists()
    assert own["VLLM_CACHE_ROOT"] == "/vllm-orch-cache/vllm"
    assert "HF_HOME" not in own  # the user's HF cache volume stays the one the libraries use


@pytest.fixture(scope="module")
def previous_release(tmp_path_factory) -> Path:
    """The source tree of the release before the caches, from this repository's history."""
    target = tmp_path_factory.mktemp("previous-release")
    archive = target / "src.tar"
    made = subprocess.run(["git", "-C", str(REPO), "archive", "-o", str(archive), PREVIOUS_RELEASE],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.fail(f"commit {PREVIOUS_RELEASE} is not in this clone (a shallow clone?): {made.stderr.strip()}")
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target


def test_containers_of_the_previous_release_are_not_recreated(fleet, previous_release):
    port = free_port()
    fleet.write(CONFIG.format(port=port, max_len=128))
    old = subprocess.run([sys.executable, "-m", "orchestrator", "-c", str(fleet.path), "up", "--wait", "--timeout", "60"],
                         capture_output=True, text=True, cwd=previous_release, timeout=300,
                         env={"PYTHONPATH": str(previous_release), "PATH": "/usr/bin:/bin"})
    assert old.returncode == 0, old.stderr
    made_by_old = fleet.container("a")
    assert "io.vllm-orch.spec" in made_by_old.labels and "cache_mounts" not in made_by_old.labels["io.vllm-orch.spec"]

    doc = fleet.cli_json("up", "--dry-run")
    assert [(a["action"], a["instance"]) for a in doc["actions"]] == [("noop", "a")]
    code, _, err = fleet.cli("up")
    assert code == 0 and "nothing to do" in err, err
    assert fleet.container("a").id == made_by_old.id

    # A real change still recreates it, and the new container gets the caches.
    fleet.write(CONFIG.format(port=port, max_len=256))
    doc = fleet.cli_json("up", "--dry-run")
    (action,) = doc["actions"]
    assert action["action"] == "recreate" and "command: --max-model-len 128 -> 256" in action["reasons"]
