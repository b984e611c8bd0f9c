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
    code, out, err = fleet.cli("up", "--dry-run")
    assert code == 0, err
    assert "create a: not created yet; created, started on first request" in out + err
    assert "create activator: not created yet" in out + err
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
    code, out, _ = fleet.cli("ps")  # the table says it too: when a and b were last asked for
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert "LAST_REQUEST" in lines["NAME"] and " ago" in lines["a"] and lines["b"].rstrip().endswith("never")
    # A second up leaves the running on-demand instance running.
    code, out, err = fleet.cli("up")
    assert code == 0, err
    assert state(fleet, "a") == "running"

    code, out, err = fleet.cli("down")
    assert code == 0, err
    assert "activator: stopped and removed" in out + err
    assert fleet.containers() == []


def activator_metrics(fleet) -> str:
    url = ps(fleet)["activator"]["url"]
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    return text


def test_concurrent_first_requests_share_one_start_and_a_stream_streams(fleet):
    write(fleet, a_args="standin_listen_delay = 2")
    assert fleet.cli("up", "--wait", "--timeout", "60")[0] == 0
    results: list[int] = []

    def one() -> None:
        results.append(ask(fleet, "m1")[0])

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [200] * 6
    assert 'vllm_orch_activator_starts_total{model="m1"} 1' in activator_metrics(fleet)
    assert fleet.container("a").attrs["RestartCount"] == 0
    status, headers, text = ask(fleet, "m1", stream=True)
    assert status == 200 and "data: [DONE]" in text


def test_a_failing_start_gives_every_waiting_client_the_reason(fleet):
    write(fleet, a_args="standin_exit_code = 3")
    assert fleet.cli("up", "--wait", "--timeout", "60")[0] == 0
    results: list[tuple[int, str]] = []

    def one() -> None:
        status, _, text = ask(fleet, "m1")
        results.append((status, text))

    threads = [threading.Thread(target=one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [s for s, _ in results] == [503] * 3
    assert all("a (m1) did not start" in text and "Exited (3)" in text for _, text in results), results
    # ps says it failed, and why; the next request gets the failure at once (no new start) with Retry-After.
    row = ps(fleet)["a"]
    assert row["state"] == "failed (on demand)" and "Exited (3)" in (row["cause"] or ""), row
    began = time.monotonic()
    status, headers, text = ask(fleet, "m1")
    assert status == 503 and "Exited (3)" in text and "retry-after" in headers, (status, headers, text)
    assert time.monotonic() - began < 2
    assert 'vllm_orch_activator_start_failures_total{model="m1"} 1' in activator_metrics(fleet)


def test_idle_instances_stop_and_the_next_request_starts_them_again(fleet):
    write(fleet, idle=2)
    assert fleet.cli("up", "--wait", "--timeout", "60")[0] == 0
    assert ask(fleet, "m1")[0] == 200
    until(lambda: state(fleet, "a") == "exited", timeout=20)
    assert ps(fleet)["a"]["state"] == "stopped (on demand)"
    assert ask(fleet, "m1")[0] == 200
    assert state(fleet, "a") == "running"


def test_a_request_during_a_stop_waits_and_is_answered(fleet):
    # The stand-in ignores SIGTERM: its stop takes the whole stop timeout (3 s here).
    fleet.gateway_port = free_port()
    fleet.write(f"""
        [instance.control]
        gpu_ids = "none"
        [instance.server]
        model = "/m"
        [gateway]
        port = {fleet.gateway_port}
        [instance.a.docker]
        on_demand = true
        idle_stop_after = 1
        stop_timeout = 3
        [instance.a.server]
        served_model_name = "m1"
        port = {free_port()}
        standin_ignore_sigterm = true
        """)
    assert fleet.cli("up", "--wait", "--timeout", "60")[0] == 0
    assert ask(fleet, "m1")[0] == 200
    # Idle after 1 s: the activator drains it (1.2 s), then stops it (3 s). Ask in the middle of it.
    time.sleep(3.5)
    status, _, text = ask(fleet, "m1")
    assert status == 200, text
    until(lambda: state(fleet, "a") == "running", timeout=20)


def test_a_budget_swaps_the_least_recently_used_out(fleet):
    write(fleet, extra="""
        [instance.a.server.x]
        [instance.b.server.x]
        """.replace("[instance.a.server.x]\n", "").replace("[instance.b.server.x]\n", ""))
    text = fleet.path.read_text().replace('served_model_name = "m1"', 'served_model_name = "m1"\ngpu_memory_utilization = 0.6')
    text = text.replace('served_model_name = "m2"', 'served_model_name = "m2"\ngpu_memory_utilization = 0.6')
    fleet.path.write_text(text)
    assert fleet.cli("up", "--wait", "--timeout", "60")[0] == 0
    assert ask(fleet, "m1")[0] == 200
    assert state(fleet, "a") == "running"
    assert ask(fleet, "m2")[0] == 200
    assert state(fleet, "b") == "running" and state(fleet, "a") == "exited"
    assert ask(fleet, "m1")[0] == 200
    assert state(fleet, "a") == "running" and state(fleet, "b") == "exited"


def test_sleep_mode_instances_sleep_when_idle_and_wake_on_a_request(fleet):
    write(fleet, idle=2, a_args="enable_sleep_mode = true\nstandin_wake_delay = 0.5")
    assert fleet.cli("up", "--wait", "--timeout", "60")[0] == 0
    assert ask(fleet, "m1")[0] == 200
    until(lambda: ps(fleet)["a"]["state"] == "sleeping", timeout=20)
    assert state(fleet, "a") == "running"  # asleep, not stopped
    status, _, text = ask(fleet, "m1")
    assert status == 200, text
    assert 'vllm_orch_activator_wake_seconds{model="m1"}' in activator_metrics(fleet)


def test_the_activator_checks_the_gateways_api_key_too(fleet):
    write(fleet, gateway_extra='api_key = "od-key-1"')
    assert fleet.cli("up", "--wait", "--timeout", "60")[0] == 0
    url = ps(fleet)["activator"]["url"]
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"model": "m1", "prompt": "hi"})
    for headers, wanted in (({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                            ({"Authorization": "Bearer od-key-1"}, 200)):
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        connection.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json", **headers})
        assert connection.getresponse().status == wanted, headers
        connection.close()
    assert state(fleet, "a") == "running"  # only the request with the key started it


def test_a_long_stream_counts_as_running_and_keeps_its_instance_from_idling_out(fleet):
    write(fleet, idle=1)
    assert fleet.cli("up", "--wait", "--timeout", "60")[0] == 0
    assert ask(fleet, "m1")[0] == 200
    url = ps(fleet)["a"]["url"]
    host, port = url.removeprefix("http://").split(":")
    result: list[str] = []

    def stream() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", fleet.gateway_port, timeout=60)
        body = {"model": "m1", "prompt": "hi", "max_tokens": 8, "stream": True, "standin_chunk_delay": 0.5}
        connection.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        result.append(connection.getresponse().read().decode())
        connection.close()

    thread = threading.Thread(target=stream)
    thread.start()
    time.sleep(1.0)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.request("GET", "/metrics")
    metrics = connection.getresponse().read().decode()
    connection.close()
    assert 'vllm:num_requests_running{model_name="m1"} 1.0' in metrics
    thread.join(30)
    assert result and "data: [DONE]" in result[0] and '"finish_reason": "abort"' not in result[0]
    assert state(fleet, "a") == "running"  # 3.5 s of stream, idle_stop_after = 1: kept
    until(lambda: state(fleet, "a") == "exited", timeout=20)  # then idle, it leaves
