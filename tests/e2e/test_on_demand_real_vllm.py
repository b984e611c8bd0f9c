"""Models on demand with real vLLM (the CPU build, tiny model): configs/on-demand.toml (three
on-demand models behind one gateway; chat and coder share a host budget they do not fit in
together). Tests run in file order on one deployment: a first request starts chat and is
answered; a request for coder swaps chat out; coder, idle, is stopped; its next request is
answered again."""

from __future__ import annotations

import http.client
import json
import time
import uuid

import docker
import pytest

from orchestrator.cli import main
from tests.e2e.conftest import MODEL_DIR, REPO
from tests.integration.conftest import free_port

pytestmark = pytest.mark.vllm
CONFIG = REPO / "configs" / "on-demand.toml"
CODER_IDLE_S = 15


class Deployment:
    def __init__(self, tmp_path_factory):
        self.project = "e2eod" + uuid.uuid4().hex[:6]
        self.gateway = free_port()
        self.logs = tmp_path_factory.mktemp("logs")

    def args(self) -> list[str]:
        args = ["-c", str(CONFIG), "--set", f"docker.project={self.project}",
                "--set", f'docker.log_host_dir="{self.logs}"',
                "--set", f'docker.volumes=["{MODEL_DIR}:/llm-models:ro"]',
                "--set", f"gateway.port={self.gateway}",
                "--set", f"instance.coder.docker.idle_stop_after={CODER_IDLE_S}"]
        for name in ("chat", "coder", "embed"):
            args += ["--set", f"instance.{name}.server.port={free_port()}"]
        return args

    def state(self, name: str) -> str:
        client = docker.from_env(version="auto")
        (found,) = client.containers.list(all=True, filters={"label": [f"io.vllm-orch.project={self.project}",
                                                                         f"io.vllm-orch.instance={name}"]})
        return found.status

    def ask(self, model: str) -> tuple[int, dict]:
        connection = http.client.HTTPConnection("127.0.0.1", self.gateway, timeout=600)
        connection.request("POST", "/v1/completions", body=json.dumps({"model": model, "prompt": "hello",
                                                                        "max_tokens": 4}),
                           headers={"Content-Type": "application/json"})
        answer = connection.getresponse()
        body = json.loads(answer.read() or b"{}")
        connection.close()
        return answer.status, body


@pytest.fixture(scope="module")
def od(vllm_image, tmp_path_factory):
    deployment = Deployment(tmp_path_factory)
    deployment.base = deployment.args()
    assert main([*deployment.base, "up", "--wait", "--timeout", "300"]) == 0
    yield deployment
    main([*deployment.base, "down"])


def test_up_starts_none_and_a_first_request_starts_chat_and_is_answered(od):
    assert {od.state(n) for n in ("chat", "coder", "embed")} == {"created"}
    started = time.monotonic()
    status, body = od.ask("chat")
    assert status == 200, body
    assert body["choices"][0]["text"] is not None
    assert od.state("chat") == "running" and od.state("coder") == "created"
    print(f"chat: first request answered after {time.monotonic() - started:.1f} s (cold start)")


def test_coder_does_not_fit_beside_chat_so_chat_is_stopped_for_it(od):
    status, body = od.ask("coder")
    assert status == 200, body
    assert od.state("coder") == "running"
    assert od.state("chat") == "exited"  # 0.6 + 0.6 > 1: the least recently used left


def test_idle_coder_is_stopped_and_its_next_request_is_answered_again(od):
    deadline = time.monotonic() + CODER_IDLE_S + 30
    while od.state("coder") == "running" and time.monotonic() < deadline:
        time.sleep(1)
    assert od.state("coder") == "exited"
    status, body = od.ask("coder")
    assert status == 200, body
    assert od.state("coder") == "running"
