"""Start-up failures of the real vLLM CPU build, each named with its cause and fix.

Four broken instances start together (one round of vLLM start-ups, not four): /dev/shm at
Docker's 64 MB, a model path vLLM takes for a Hub name (nothing can be downloaded here), a flag
vLLM rejects (let through with --no-preflight), and a port already held on the host (host
networking). `up --wait` ends with the cause of the first to fail; once all have exited, `ps`
names the cause of each. The GPU-only failures are checked against recorded real logs in
tests/unit/test_diagnose.py. A model path missing under a mounted volume is refused before
anything starts.
"""

from __future__ import annotations

import json
import socket
import time
import uuid

import docker
import pytest

from orchestrator.cli import main
from tests.e2e.conftest import MODEL_DIR
from tests.integration.conftest import free_port

pytestmark = pytest.mark.vllm

CAUSES = {
    "small_shm": "cause: /dev/shm is too small (",
    "hub_name": "cause: the model path /no-such-model does not exist in the container",
    "bad_flag": "cause: vLLM does not accept the argument(s) --no-such-option",
    "port_taken": "cause: the server's port is already in use",
}


def config(tmp_path, image: str, port_taken: int) -> str:
    ports = {name: free_port() for name in CAUSES}
    path = tmp_path / "broken.toml"
    path.write_text(f"""
[master]
api_server_module = "vllm.entrypoints.openai.api_server"

[instance.control]
gpu_ids = "none"
[instance.server]
host = "0.0.0.0"
model = "/llm-models/tiny-llama"
dtype = "float32"
max_model_len = 128
enforce_eager = true

[instance.small_shm.server]
port = {ports["small_shm"]}
[instance.small_shm.docker]
shm_size = "64m"

[instance.hub_name.server]
port = {ports["hub_name"]}
model = "/no-such-model"

[instance.bad_flag.server]
port = {ports["bad_flag"]}
no_such_option = 3

[instance.port_taken.server]
port = {port_taken}
host = "127.0.0.1"
[instance.port_taken.docker]
network_mode = "host"

[docker]
project = "e2efail{uuid.uuid4().hex[:8]}"
image = "{image}"
volumes = ["{MODEL_DIR}:/llm-models:ro"]
log_host_dir = "{tmp_path}/logs"
shm_size = "1g"
env = {{ VLLM_CPU_KVCACHE_SPACE = "1" }}
""")
    return str(path)


@pytest.fixture
def holder():
    """A listening socket on a loopback port: what "port already in use" is on a real host."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    yield sock.getsockname()[1]
    sock.close()


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_each_start_failure_is_named_with_its_fix(vllm_image, tmp_path, holder, capsys):
    path = config(tmp_path, vllm_image, holder)
    project = None
    client = docker.from_env(version="auto")
    try:
        code, _, err = run(capsys, "-c", path, "up", "--no-preflight", "--wait", "--timeout", "600")
        project = json.loads(run(capsys, "-c", path, "ps", "--json")[1])["project"]
        assert code == 5, err
        last = err.strip().splitlines()[-1]
        failed = next(name for name in CAUSES if last.startswith(f"vllm-orch: error: instance {name!r} exited"))
        assert CAUSES[failed] in last, last

        # Once every one of them has exited, ps names each cause under its table.
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            rows = json.loads(run(capsys, "-c", path, "ps", "--json")[1])["instances"]
            if all(r["state"] == "exited" for r in rows):
                break
            time.sleep(2)
        assert {r["name"]: r["state"] for r in rows} == dict.fromkeys(CAUSES, "exited")
        code, out, _ = run(capsys, "-c", path, "ps")
        assert code == 0
        for name, cause in CAUSES.items():
            line = next(line for line in out.splitlines() if line.startswith(f"{name}: cause: "))
            assert cause in line and "; fix: " in line, line
    finally:
        for container in client.containers.list(all=True, filters={"label": f"io.vllm-orch.project={project}"}):
            container.remove(force=True)


def test_a_model_missing_under_its_volume_is_refused_before_starting(vllm_image, tmp_path, capsys):
    path = config(tmp_path, vllm_image, free_port())
    code, _, err = run(capsys, "-c", path, "--set", 'instance.server.model="/llm-models/tiny-llamma"', "up", "--wait")
    assert code == 2
    assert (f"instance.small_shm.server.model: error: /llm-models/tiny-llamma is {MODEL_DIR}/tiny-llamma on this host"
            in err)
    project = json.loads(run(capsys, "-c", path, "ps", "--json")[1])["project"]
    client = docker.from_env(version="auto")
    assert client.containers.list(all=True, filters={"label": f"io.vllm-orch.project={project}"}) == []
