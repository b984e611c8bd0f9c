"""vLLM's sleep mode through orchestrator/sleep_api.py against the stand-in image on the real
engine (tests/images/standin: not vLLM, it implements vLLM 0.32's sleep routes; the CPU build of
vLLM has no sleep mode, so nothing real can sleep here: scripts/gpu-check.sh checks it on a GPU).

An on-demand instance with enable_sleep_mode gets VLLM_SERVER_DEV_MODE=1 from resolve, so its
server has the routes; the gateway in front still refuses them from outside."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import pytest

from orchestrator import sleep_api
from orchestrator.sleep_api import SleepApiError
from tests.integration.conftest import free_port
from tests.integration.test_gateway import GATEWAY_IMAGE, call

pytestmark = pytest.mark.docker


def completion(port: int, timeout: float = 30) -> tuple[int, float]:
    started = time.monotonic()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions",
                                     data=json.dumps({"prompt": "x"}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        answer.read()
        return answer.status, time.monotonic() - started


def running_and_healthy(fleet, name: str, port: int, timeout: float = 60) -> None:
    """`up` may leave an on-demand container created but stopped (the first request starts it):
    start it here as the on-demand machinery would, and wait for /health."""
    container = fleet.container(name)
    container.reload()
    if container.status != "running":
        container.start()
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{name} not healthy on {port}"
        time.sleep(0.3)


def test_sleep_and_wake_an_on_demand_instance(fleet):
    gateway_port, coder, plain = free_port(), free_port(), free_port()
    fleet.gateway_port = gateway_port
    fleet.write(f"""
        [instance.control]
        gpu_ids = "none"
        [instance.server]
        host = "0.0.0.0"
        [gateway]
        port = {gateway_port}
        image = "{GATEWAY_IMAGE}"
        [instance.coder.docker]
        on_demand = true
        [instance.coder.server]
        model = "/m/coder"
        port = {coder}
        enable_sleep_mode = true
        extra_args = ["--standin-sleep-delay", "0.5", "--standin-wake-delay", "0.7"]
        [instance.plain.server]
        model = "/m/plain"
        port = {plain}
        """)
    code, _, err = fleet.cli("up", "--timeout", "120")
    assert code == 0, err
    running_and_healthy(fleet, "coder", coder)
    running_and_healthy(fleet, "plain", plain)
    address = f"127.0.0.1:{coder}"

    assert sleep_api.is_sleeping(address) is False
    started = time.monotonic()
    sleep_api.sleep(address, level=1)
    assert time.monotonic() - started >= 0.5  # the call returns once the server sleeps
    assert sleep_api.is_sleeping(address) is True

    # While asleep a completion is held (vLLM queues it), /health still answers, and the wake serves it.
    held: dict = {}
    client = threading.Thread(target=lambda: held.update(result=completion(coder)))
    client.start()
    time.sleep(1.0)
    assert "result" not in held
    with urllib.request.urlopen(f"http://127.0.0.1:{coder}/health", timeout=5) as answer:
        assert answer.status == 200
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{coder}/metrics", timeout=5).read().decode()
    assert 'sleep_state="weights_offloaded"} 1.0' in metrics

    started = time.monotonic()
    assert sleep_api.wake_up(address) is True
    assert time.monotonic() - started >= 0.7
    client.join(10)
    assert held["result"][0] == 200 and held["result"][1] >= 1.7
    assert sleep_api.is_sleeping(address) is False

    # The routes are unauthenticated: from outside, the gateway refuses them.
    assert call(fleet, "POST", "/sleep", {"model": "/m/coder"}, key=None)[0] == 403
    assert sleep_api.is_sleeping(address) is False

    # An instance that is not on demand has no dev mode, so no sleep routes: one clear error.
    with pytest.raises(SleepApiError, match="VLLM_SERVER_DEV_MODE=1"):
        sleep_api.sleep(f"127.0.0.1:{plain}")
    env = dict(item.split("=", 1) for item in fleet.container("coder").attrs["Config"]["Env"])
    assert env.get("VLLM_SERVER_DEV_MODE") == "1"
    plain_env = dict(item.split("=", 1) for item in fleet.container("plain").attrs["Config"]["Env"])
    assert "VLLM_SERVER_DEV_MODE" not in plain_env


def test_a_stopped_server_is_an_error_not_a_hang(fleet):
    port = free_port()
    fleet.write(f"""
        [instance.control]
        gpu_ids = "none"
        [instance.a.server]
        model = "/m"
        host = "0.0.0.0"
        port = {port}
        """)
    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 0, err
    fleet.container("a").stop(timeout=5)
    started = time.monotonic()
    with pytest.raises(SleepApiError):
        sleep_api.is_sleeping(f"127.0.0.1:{port}")
    assert time.monotonic() - started < 5


def test_the_standins_listen_delay_stands_for_model_loading(fleet):
    """Nothing listens until the delay has passed, as vLLM binds its port only after loading."""
    port = free_port()
    fleet.write(f"""
        [instance.control]
        gpu_ids = "none"
        [instance.a.server]
        model = "/m"
        host = "0.0.0.0"
        port = {port}
        extra_args = ["--standin-listen-delay", "3"]
        """)
    code, _, err = fleet.cli("up", "--timeout", "120")
    assert code == 0, err
    returned = time.monotonic()
    refused = 0
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            refused += 1
        assert time.monotonic() - returned < 30, "never healthy"
        time.sleep(0.2)
    assert refused >= 5 and time.monotonic() - returned >= 2
