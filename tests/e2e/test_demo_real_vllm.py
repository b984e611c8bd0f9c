"""configs/demo.toml with the real vLLM CPU build: up --wait, real requests, a rejected
flag, and a clean SIGTERM shutdown on down. The tests run in file order on one deployment."""

from __future__ import annotations

import json
import uuid

import docker
import pytest

from orchestrator.cli import main
from tests.e2e.conftest import MODEL_DIR, REPO
from tests.integration.conftest import free_port, http_json

pytestmark = pytest.mark.vllm
DEMO = REPO / "configs" / "demo.toml"


class Demo:
    def __init__(self, tmp_path_factory):
        self.project = "e2e" + uuid.uuid4().hex[:8]
        self.ports = {"tiny_a": free_port(), "tiny_b": free_port()}
        self.logs = tmp_path_factory.mktemp("logs")
        self.extra: list[str] = []

    def args(self) -> list[str]:
        args = ["-c", str(DEMO), "--set", f"docker.project={self.project}",
                "--set", f'docker.log_host_dir="{self.logs}"',
                "--set", f'docker.volumes=["{MODEL_DIR}:/llm-models:ro"]',
                "--set", "monitoring.enabled=false"]  # tests/e2e/test_monitoring_real_vllm.py runs it
        for name, port in self.ports.items():
            args += ["--set", f"instance.{name}.server.port={port}"]
        return args + self.extra

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"


@pytest.fixture(scope="module")
def demo(vllm_image, tmp_path_factory):
    deployment = Demo(tmp_path_factory)
    yield deployment
    client = docker.from_env(version="auto")
    for container in client.containers.list(all=True, filters={"label": f"io.vllm-orch.project={deployment.project}"}):
        container.remove(force=True)


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def post(url: str, body: dict) -> tuple[int, dict]:
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.status, json.loads(response.read())


def test_up_wait_brings_both_instances_to_healthy(demo, capsys):
    code, _, err = run(capsys, *demo.args(), "up", "--wait", "--timeout", "600")
    assert code == 0, err
    assert "tiny_a: healthy (answers /health) after" in err and "tiny_b: healthy (answers /health) after" in err
    code, out, _ = run(capsys, *demo.args(), "ps", "--json")
    rows = {r["name"]: r for r in json.loads(out)["instances"]}
    assert rows["tiny_a"]["state"] == "running" and rows["tiny_b"]["state"] == "running"


def test_models_list_the_served_names_and_the_tomls_max_model_len(demo):
    for name, served, max_len in (("tiny_a", "tiny-a", 256), ("tiny_b", "tiny-b", 128)):
        status, models = http_json(f"{demo.url(name)}/v1/models")
        assert status == 200
        (card,) = models["data"]
        assert card["id"] == served
        assert card["max_model_len"] == max_len  # the plan's flag reached the real server


def test_completions_and_chat_answer(demo):
    for name, served in (("tiny_a", "tiny-a"), ("tiny_b", "tiny-b")):
        status, done = post(f"{demo.url(name)}/v1/completions", {"model": served, "prompt": "Hello", "max_tokens": 5})
        assert status == 200 and done["choices"][0]["text"] is not None
        status, chat = post(f"{demo.url(name)}/v1/chat/completions",
                            {"model": served, "max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}]})
        assert status == 200 and chat["choices"][0]["message"]["role"] == "assistant"


def test_a_flag_vllm_rejects_fails_fast_and_spares_the_others(demo, capsys, tmp_path):
    # A third instance whose raw extra_args vLLM does not know. The preflight checks extra_args'
    # flags against the image's own vLLM, so `up` refuses it before anything starts (exit 2);
    # with --no-preflight the token reaches vLLM, which rejects it: that must fail fast and
    # leave the others serving.
    port = free_port()
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"instance": {"broken": {"server": {
        "port": port, "served_model_name": "broken", "extra_args": ["--no-such-flag-at-all"]}}}}))
    args = demo.args() + ["--override", broken.read_text()]
    code, _, err = run(capsys, *args, "up", "--wait", "--timeout", "600")
    assert code == 2 and "extra_args[0]: error: --no-such-flag-at-all is not an option of vLLM 0.32.0" in err, err
    code, _, err = run(capsys, *args, "up", "--wait", "--timeout", "600", "--no-preflight")
    assert code == 5, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("vllm-orch: error: instance 'broken' exited"), last
    assert "unrecognized arguments: --no-such-flag-at-all" in err  # vLLM's own error line, shown
    for name in ("tiny_a", "tiny_b"):
        assert http_json(f"{demo.url(name)}/health")[0] == 200
    code, _, _ = run(capsys, *args, "down", "broken")
    assert code == 0


def test_down_stops_vllm_cleanly_and_keeps_the_logs(demo, capsys):
    code, out, err = run(capsys, *demo.args(), "down", "--json")
    assert code == 0, err
    removed = {r["instance"]: r for r in json.loads(out)["removed"]}
    assert set(removed) == {"tiny_a", "tiny_b"}
    for name, result in removed.items():
        # 0 (vLLM handled SIGTERM) or 143 (terminated by it); 137 would mean SIGKILL after the timeout.
        assert result["exit_code"] in (0, 143), result
        log = (demo.logs / f"vllm-server-{name}.log").read_text()
        assert "Application startup complete" in log
        assert "Shutting down" in log or "Application shutdown complete" in log
