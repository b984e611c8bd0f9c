"""`top` and `watch` with the real vLLM CPU build (0.32) and the tiny model.

What vLLM 0.32's CPU build does when its engine fails (tried by hand, then kept here as checks):
- the engine process (`VLLM::EngineCore`) or its worker killed (SIGKILL): the API server notices
  (EngineDeadError), shuts down and the container *exits*: Docker's restart policy is the cure there
  (`restart = "on-failure"`), not `watch`;
- the engine process frozen (SIGSTOP: a wedged engine): the API process stays up and `/health`
  keeps answering 200, while completions hang. vLLM's /health cannot see it; a health command that
  asks for one token can. With that as `health_cmd`, Docker calls the container unhealthy and
  `watch` restarts it; this test does exactly that.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import docker
import pytest

from orchestrator import vllm_metrics
from orchestrator.cli import main
from tests.e2e.conftest import MODEL_DIR, REPO
from tests.integration.conftest import free_port

pytestmark = pytest.mark.vllm
DEMO = REPO / "configs" / "demo.toml"


def one_token_health(port: int) -> list[str]:
    """A health check that needs the engine: one completion token within Docker's 5 s timeout."""
    body = json.dumps({"model": "tiny-a", "prompt": "hi", "max_tokens": 1})
    return ["python3", "-c", "import urllib.request as u; u.urlopen(u.Request("
            f"'http://127.0.0.1:{port}/v1/completions', data={body!r}.encode(), "
            "headers={'Content-Type': 'application/json'}), timeout=4).read()"]


def wait_docker_healthy(container, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.attrs["State"].get("Health", {}).get("Status") == "healthy":
            return
        time.sleep(1)
    raise AssertionError(f"not healthy within {timeout:g}s: {container.attrs['State'].get('Health')}")


def test_top_reads_real_vllm_and_watch_restarts_a_wedged_engine(vllm_image, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VLLM_ORCH_STATE_DIR", str(tmp_path / "state"))
    project, port = "e2eop" + uuid.uuid4().hex[:6], free_port()
    override = {"docker": {"project": project, "log_host_dir": str(tmp_path / "logs"),
                           "cache_host_dir": str(tmp_path / "cache"), "volumes": [f"{MODEL_DIR}:/llm-models:ro"],
                           "health_cmd": one_token_health(port), "health_interval": 2,
                           "health_start_period": 300, "restart_unhealthy_after": 4},
                "instance": {"tiny_a": {"server": {"port": port}}, "tiny_b": {"control": {"enabled": False}}},
                "monitoring": {"enabled": False}}
    args = ["-c", str(DEMO), "--override", json.dumps(override)]
    client = docker.from_env(version="auto")
    watcher = None
    try:
        assert main([*args, "up", "--wait", "--timeout", "600"]) == 0, capsys.readouterr().err
        capsys.readouterr()
        (container,) = client.containers.list(filters={"label": f"io.vllm-orch.project={project}"})

        # --- top, on the real /metrics (one request first, so TTFT has an observation)
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions", headers={"Content-Type": "application/json"},
            data=json.dumps({"model": "tiny-a", "prompt": "hello", "max_tokens": 4}).encode()), timeout=60).read()
        assert main([*args, "top", "--once", "--json"]) == 0
        rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["instances"]}
        assert rows["tiny_b"]["state"] == "disabled" and rows["tiny_b"]["kv_cache_usage"] is None
        row = rows["tiny_a"]
        assert (row["name"], row["requests_running"], row["requests_waiting"]) == ("tiny_a", 0, 0)
        assert row["kv_cache_usage"] is not None and 0.0 <= row["kv_cache_usage"] <= 1.0
        assert row["ttft_p50_s"] is not None and row["error"] is None
        # The recording in orchestrator/data is what this image exports today.
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        live = {name: kind for name, kind in vllm_metrics.families_of(text).items() if name.startswith("vllm:")}
        assert live == vllm_metrics.recorded_names(), "re-record with scripts/record-vllm-metrics.py"

        # --- a wedged engine: /health still says 200, the one-token check does not
        watcher = subprocess.Popen([sys.executable, "-m", "orchestrator", *args, "watch", "--interval", "1"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
        # Docker's own check must have passed once (else failures count only after the start period)
        wait_docker_healthy(container, 300)
        started = container.attrs["State"]["StartedAt"]
        code, pids = container.exec_run(["sh", "-c", "ps -eo pid,comm | awk '/VLLM::EngineCor/{print $1}'"])
        assert code == 0 and pids.strip(), pids
        assert container.exec_run(["kill", "-STOP", pids.decode().split()[0]])[0] == 0
        time.sleep(3)
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200  # vLLM can't tell
        frozen_at = time.monotonic()
        deadline = frozen_at + 300
        while time.monotonic() < deadline:
            container.reload()
            if container.attrs["State"]["StartedAt"] != started:
                break
            time.sleep(1)
        restarted_after = time.monotonic() - frozen_at
        assert container.attrs["State"]["StartedAt"] != started, "watch did not restart the wedged server"
        wait_docker_healthy(container, 300)  # the model loads again
        healthy_after = time.monotonic() - frozen_at
        sys.stderr.write(f"wedged engine: restarted after {restarted_after:.0f}s, "
                         f"healthy again after {healthy_after:.0f}s\n")
    finally:
        if watcher is not None:
            watcher.send_signal(signal.SIGTERM)
            _, err = watcher.communicate(timeout=60)
            sys.stderr.write(err)
            assert watcher.returncode == 0, err
        for leftover in client.containers.list(all=True, filters={"label": f"io.vllm-orch.project={project}"}):
            leftover.remove(force=True)
    assert "tiny_a: restarting container" in err
    capsys.readouterr()
    assert main([*args, "ps", "--json"]) == 0
    # (the container is gone by now: the row comes from the config, the count from the record file)
    [row] = [r for r in json.loads(capsys.readouterr().out)["instances"] if r["name"] == "tiny_a"]
    assert row["restarts"] == 1
