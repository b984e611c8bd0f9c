"""orchestrator/sleep_api.py without a server: what it refuses before any call, what it makes of
answers (a tiny stdlib HTTP server on loopback plays each answer), and resolve's dev-mode env."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestrator import sleep_api
from orchestrator.sleep_api import SleepApiError
from tests.builders import container_of, instance


class _Answers(BaseHTTPRequestHandler):
    answers: dict = {}
    seen: list = []

    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        self.seen.append((self.command, self.path))
        status, body, delay = self.answers.get(self.path.split("?")[0], (404, b"", 0))
        time.sleep(delay)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Answers)
    httpd.daemon_threads = True
    _Answers.seen = []
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd, f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def answer(path: str, status: int = 200, body=None, delay: float = 0) -> None:
    _Answers.answers = {**_Answers.answers, path: (status, json.dumps(body).encode() if body is not None else b"", delay)}


def test_the_calls_speak_vllms_routes(server):
    _, address = server
    _Answers.answers = {}
    answer("/sleep", body={"status": "sleeping", "level": 1})
    answer("/wake_up", body={"status": "awake", "tags": None})
    answer("/is_sleeping", body={"is_sleeping": True})
    sleep_api.sleep(address)
    assert sleep_api.wake_up(address) is True
    assert sleep_api.is_sleeping(address) is True
    sleep_api.sleep(address, level=2)
    sleep_api.wake_up(address, tags=["weights"])
    assert _Answers.seen == [("POST", "/sleep?level=1"), ("POST", "/wake_up"), ("GET", "/is_sleeping"),
                             ("POST", "/sleep?level=2"), ("POST", "/wake_up?tags=weights")]


def test_a_partial_wake_reports_still_sleeping(server):
    _, address = server
    answer("/wake_up", body={"status": "sleeping", "tags": ["weights"]})
    assert sleep_api.wake_up(address, tags=["weights"]) is False


def test_no_sleep_routes_names_the_dev_mode_variable(server):
    _, address = server
    _Answers.answers = {}
    with pytest.raises(SleepApiError, match="VLLM_SERVER_DEV_MODE=1"):
        sleep_api.sleep(address)


def test_a_refusal_is_one_line_with_the_servers_words(server):
    _, address = server
    answer("/sleep", 500, {"error": "Sleep mode is not enabled"})
    with pytest.raises(SleepApiError) as caught:
        sleep_api.sleep(address)
    assert "HTTP 500" in str(caught.value) and "Sleep mode is not enabled" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_wrong_answer_shape_is_an_error(server):
    _, address = server
    answer("/is_sleeping", body={"sleeping": "yes"})
    with pytest.raises(SleepApiError, match="is_sleeping"):
        sleep_api.is_sleeping(address)


def test_a_slow_server_is_given_up_on(server):
    _, address = server
    answer("/sleep", body={"status": "sleeping", "level": 1}, delay=1.5)
    started = time.monotonic()
    with pytest.raises(SleepApiError, match="no answer in time"):
        sleep_api.sleep(address, timeout=0.3)
    assert time.monotonic() - started < 1.4


def test_nothing_listening_and_bad_input_are_errors_before_or_without_a_hang():
    with pytest.raises(SleepApiError, match="connection refused"):
        sleep_api.is_sleeping("127.0.0.1:1")
    for address in ("localhost", "host:notaport", ":80", "h:70000"):
        with pytest.raises(SleepApiError, match="not host:port"):
            sleep_api.sleep(address)
    with pytest.raises(SleepApiError, match="level"):
        sleep_api.sleep("127.0.0.1:1", level=3)
    assert issubclass(SleepApiError, sleep_api.OrchestratorError)


BASE = """
[docker]
image = "img"
{docker}
[instance.control]
gpu_ids = "none"
[instance.chat.server]
model = "/m"
{server}
"""


@pytest.mark.parametrize("docker, server, wanted", [
    ("on_demand = true", "enable_sleep_mode = true", True),
    ("on_demand = true", "", False),
    ("", "enable_sleep_mode = true", False),
    ("on_demand = false", "enable_sleep_mode = true", False),
])
def test_supports_sleep_and_the_dev_mode_env(tmp_path, docker, server, wanted):
    spec = instance(BASE.format(docker=docker, server=server), tmp_path)
    assert sleep_api.supports_sleep(spec) is wanted
    env = dict(spec.workload.env)
    assert (env.get("VLLM_SERVER_DEV_MODE") == "1") is wanted
    assert ("VLLM_SERVER_DEV_MODE" in dict(container_of(spec).env)) is wanted  # what the container gets


def test_a_users_own_dev_mode_value_is_kept(tmp_path):
    spec = instance(BASE.format(docker='on_demand = true\nenv = { VLLM_SERVER_DEV_MODE = "0" }',
                                server="enable_sleep_mode = true"), tmp_path)
    assert dict(spec.workload.env)["VLLM_SERVER_DEV_MODE"] == "0"
