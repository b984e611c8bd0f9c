"""Models on demand on the real engine: HAProxy (vllm-orch/gateway) in front of on-demand stand-in
servers (tests/images/standin: not vLLM; it answers vLLM's routes, /metrics and sleep routes), with
the activator (vllm-orch/activator) starting them on a first request and stopping them when idle."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest

from tests.integration.conftest import free_port

pytestmark = pytest.mark.docker


@pytest.fixture(autouse=True)
def _images(engine):
    import docker

    for image in ("vllm-orch/activator:latest", "vllm-orch/gateway:latest"):
        try:
            engine.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {image} missing; scripts/build-images.sh activator gateway builds it")


def write(fleet, *, idle: int = 0, extra: str = "", a_args: str = "", gateway_extra: str = "") -> None:
    fleet.gateway_port = free_port()
    fleet.write(f"""
        [instance.control]
        gpu_ids = "none"
        [instance.server]
        model = "/m"
        [gateway]
        port = {fleet.gateway_port}
        policy = "round_robin"
        {gateway_extra}
        [instance.a.docker]
        on_demand = true
        idle_stop_after = {idle}
        [instance.a.server]
        served_model_name = "m1"
        port = {free_port()}
        {a_args}
        [instance.b.docker]
        on_demand = true
        idle_stop_after = {idle}
        [instance.b.server]
        served_model_name = "m2"
        port = {free_port()}
        """ + extra)


def ask(fleet, model: str, *, timeout: float = 60, stream: bool = False) -> tuple[int, dict, str]:
    connection = http.client.HTTPConnection("127.0.0.1", fleet.gateway_port, timeout=timeout)
    body = {"model": model, "prompt": "hi", "max_tokens": 3, "stream": stream}
    connection.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    answer = connection.getresponse()
    text = answer.read().decode(errors="replace")
    connection.close()
    return answer.status, {k.lower(): v for k, v in answer.getheaders()}, text


def state(fleet, instance: str) -> str:
    container = fleet.container(instance)
    container.reload()
    return container.status


def ps(fleet) -> dict[str, dict]:
    return {row["name"]: row for row in fleet.cli_json("ps")["instances"]}


def until(check, timeout: float = 30.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not within {timeout}s")


def test_up_creates_them_stopped_and_a_first_request_starts_one_and_is_answered(fleet):
    write(fleet)
    code, out, err = fleet.cli("up", "--wait", "--timeout", "60")
    assert code == 0, err
    assert "created (on demand: started on first request)" in out + err
    assert state(fleet, "a") == "created" and state(fleet, "b") == "created"
    rows = ps(fleet)
    assert rows["a"]["state"] == "stopped (on demand)"
    assert rows["activator"]["health"] == "healthy"
    # A second up changes nothing.
    code, out, err = fleet.cli("up", "--dry-run")
    assert code == 0, err
    assert "on demand (stopped): left as it is" in out + err, out + err

    started = time.monotonic()
    status, _, text = ask(fleet, "m1")
    assert status == 200, text
    assert "standin" in text or "t0" in text
    assert time.monotonic() - started < 30
    assert state(fleet, "a") == "running" and state(fleet, "b") == "created"
    # The hot path takes it over; the next requests are answered too.
    for _ in range(5):
        assert ask(fleet, "m1")[0] == 200
    rows = ps(fleet)
    assert rows["a"]["last_request"] is not None
    # A second up leaves the running on-demand instance running.
    code, out, err = fleet.cli("up")
    assert code == 0, err
    assert state(fleet, "a") == "running"

    code, out, err = fleet.cli("down")
    assert code == 0, err
    assert "activator: stopped and removed" in out + err
    assert fleet.containers() == []
