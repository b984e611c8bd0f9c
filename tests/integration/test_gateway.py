"""The gateway on the real engine: HAProxy in the vllm-orch/gateway image in front of stand-in
servers (tests/images/standin: not vLLM; they answer vLLM's OpenAI routes, stream SSE and name
the container that answered in `X-Standin-Server`). Two replicas of `m1` (a, b) and `m2` (c)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import stat
import time

import pytest

from tests.integration.conftest import free_port

pytestmark = pytest.mark.docker

GATEWAY_IMAGE = os.environ.get("VLLM_ORCH_GATEWAY_IMAGE", "vllm-orch/gateway:latest")
KEY = "gw-secret-3f9a"


@pytest.fixture(autouse=True)
def _gateway_image(engine):
    import docker

    try:
        engine.images.get(GATEWAY_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"image {GATEWAY_IMAGE} missing; scripts/build-images.sh gateway builds it")


def write(fleet, *, policy: str = "round_robin", extra: str = "", key: bool = True, docker_extra: str = "",
          gateway_extra: str = "") -> int:
    port = free_port()
    fleet.gateway_port = port
    fleet.write(f"""
        [instance.control]
        gpu_ids = "none"
        [instance.server]
        model = "/m"
        [gateway]
        port = {port}
        policy = "{policy}"
        image = "{GATEWAY_IMAGE}"
        {f'api_key = "{KEY}"' if key else ''}
        {gateway_extra}
        [instance.a.server]
        served_model_name = "m1"
        port = {free_port()}
        [instance.b.server]
        served_model_name = "m1"
        port = {free_port()}
        [instance.c.server]
        served_model_name = "m2"
        port = {free_port()}
        """ + extra, docker_extra=docker_extra)
    return port


def up(fleet, *args: str) -> str:
    code, out, err = fleet.cli("up", "--wait", "--timeout", "120", *args)
    assert code == 0, err
    return out + err


def call(fleet, method: str, path: str, body=None, *, key: str | None = KEY, raw: bytes | None = None,
         headers: dict | None = None) -> tuple[int, dict, dict]:
    """(status, headers, JSON body or {}) through the gateway."""
    connection = http.client.HTTPConnection("127.0.0.1", fleet.gateway_port, timeout=10)
    sent = {"Content-Type": "application/json", **(headers or {})}
    if key:
        sent["Authorization"] = f"Bearer {key}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    connection.request(method, path, body=data, headers=sent)
    answer = connection.getresponse()
    text = answer.read()
    connection.close()
    try:
        parsed = json.loads(text) if text else {}
    except ValueError:
        parsed = {"text": text.decode(errors="replace")}
    return answer.status, {k.lower(): v for k, v in answer.getheaders()}, parsed


def served_by(fleet, headers: dict) -> str:
    """The instance whose container answered (its hostname is its id's first 12 characters)."""
    host = headers["x-standin-server"]
    return next(c.labels["io.vllm-orch.instance"] for c in fleet.containers() if c.id.startswith(host)
                and "io.vllm-orch.instance" in c.labels)


def gateway_container(fleet):
    found = [c for c in fleet.containers() if c.labels.get("io.vllm-orch.role") == "gateway"]
    assert len(found) == 1
    return found[0]


def test_one_url_routes_by_model_lists_the_union_and_balances_replicas(fleet):
    write(fleet)
    up(fleet)
    status, _, models = call(fleet, "GET", "/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == ["m1", "m2"] and models["object"] == "list"

    status, headers, body = call(fleet, "POST", "/v1/chat/completions",
                                 {"model": "m2", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and body["model"] == "m2" and served_by(fleet, headers) == "c"
    status, headers, body = call(fleet, "POST", "/v1/completions", {"model": "m2", "prompt": "hi"})
    assert status == 200 and body["object"] == "text_completion" and served_by(fleet, headers) == "c"

    replicas = [served_by(fleet, call(fleet, "POST", "/v1/completions", {"model": "m1", "prompt": f"p{i}"})[1])
                for i in range(8)]
    assert sorted(set(replicas)) == ["a", "b"] and abs(replicas.count("a") - replicas.count("b")) <= 1

    rows = {r["name"]: r for r in fleet.cli_json("ps")["instances"]}
    assert rows["gateway"]["url"] == f"http://127.0.0.1:{fleet.gateway_port}"
    assert rows["gateway"]["state"] == "running" and rows["gateway"]["health"] == "healthy"
    assert rows["gateway"]["model"] == "m1,m2"


def test_prefix_policy_keeps_a_shared_prompt_prefix_on_one_replica(fleet):
    write(fleet, policy="prefix")
    up(fleet)
    system = {"role": "system", "content": "You are the support bot of ACME. " * 4}
    replicas = {served_by(fleet, call(fleet, "POST", "/v1/chat/completions", {
        "model": "m1", "messages": [system, {"role": "user", "content": f"question {i}"}]})[1]) for i in range(6)}
    assert len(replicas) == 1
    spread = {served_by(fleet, call(fleet, "POST", "/v1/completions",
                                    {"model": "m1", "prompt": f"{i} different prompt"})[1]) for i in range(12)}
    assert spread == {"a", "b"}


def test_what_the_gateway_refuses_and_that_it_survives_it(fleet):
    write(fleet)
    up(fleet)
    assert call(fleet, "GET", "/v1/models", key=None)[0] == 401
    status, _, body = call(fleet, "GET", "/v1/models", key="wrong")
    assert status == 401 and body["error"]["type"] == "AuthenticationError"
    assert call(fleet, "GET", "/health", key=None)[0] == 200  # load balancers ask without a key

    for path in ("/sleep", "/wake_up", "/collective_rpc", "/v1/load_lora_adapter", "/v1/load%5Flora%5Fadapter",
                 "/v1/unload_lora_adapter/", "/reset_prefix_cache"):
        status, _, body = call(fleet, "POST", path, {"model": "m1"})
        assert status == 403 and "admin" in body["error"]["message"], path

    status, _, body = call(fleet, "POST", "/v1/completions", {"model": "nope", "prompt": "x"})
    assert status == 404 and "m1, m2" in body["error"]["message"]
    status, _, body = call(fleet, "POST", "/v1/completions", raw=b"not json at all")
    assert status == 400 and "model" in body["error"]["message"]
    # The model can be read from a truncated body: the server gets it and says what is wrong.
    status, _, body = call(fleet, "POST", "/v1/completions", raw=b'{"model": "m1", "prompt": ')
    assert status == 400 and body["error"]["message"]
    status, _, body = call(fleet, "POST", "/v1/completions", {"prompt": "no model"})
    assert status == 400
    status, _, body = call(fleet, "POST", "/v1/completions", raw=b'{"model":"m1","prompt":"' + b"x" * (2 << 20) + b'"}')
    assert status == 413 and "KiB" in body["error"]["message"]

    # A client that goes away mid-stream.
    sock = socket.create_connection(("127.0.0.1", fleet.gateway_port), timeout=5)
    payload = json.dumps({"model": "m1", "prompt": "x", "stream": True, "max_tokens": 50,
                          "standin_chunk_delay": 0.05}).encode()
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
    assert b"data:" in sock.recv(4096)
    sock.close()

    assert call(fleet, "POST", "/v1/completions", {"model": "m1", "prompt": "still here"})[0] == 200
    assert gateway_container(fleet).attrs["RestartCount"] == 0


def test_streams_pass_through_unbuffered(fleet):
    write(fleet)
    up(fleet)
    connection = http.client.HTTPConnection("127.0.0.1", fleet.gateway_port, timeout=10)
    started = time.monotonic()
    connection.request("POST", "/v1/chat/completions", body=json.dumps({
        "model": "m2", "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 4,
        "standin_chunk_delay": 0.6}), headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
    answer = connection.getresponse()
    assert answer.status == 200 and answer.getheader("Content-Type") == "text/event-stream"
    first = answer.readline()
    first_at = time.monotonic() - started
    rest = answer.read()
    total = time.monotonic() - started
    assert first.startswith(b"data: {") and b"chat.completion.chunk" in first
    assert rest.rstrip().endswith(b"data: [DONE]")
    # The server sends the first chunk at once and the last after 3 x 0.6 s: a buffering
    # proxy would deliver the first only with the last.
    assert first_at < 0.5 < 1.7 < total


@pytest.mark.parametrize("retry", ["", "retry_unanswered = false"])
def test_a_dead_replica_costs_no_request_and_rejoins_after_up(fleet, retry):
    # A refused connection is retried on another replica whatever retry_unanswered says.
    write(fleet, gateway_extra=retry)
    up(fleet)
    fleet.container("a").kill()
    results = [call(fleet, "POST", "/v1/completions", {"model": "m1", "prompt": f"p{i}"}) for i in range(10)]
    assert [r[0] for r in results] == [200] * 10
    assert {served_by(fleet, r[1]) for r in results} == {"b"}

    fleet.container("c").kill()  # the only replica of m2
    time.sleep(2)
    status, _, body = call(fleet, "POST", "/v1/completions", {"model": "m2", "prompt": "x"})
    assert status == 503 and "no replica" in body["error"]["message"]

    out = up(fleet)
    assert "a: started" in out and "c: started" in out
    time.sleep(1.5)  # the gateway's health check (every second) brings it back
    replicas = {served_by(fleet, call(fleet, "POST", "/v1/completions", {"model": "m1", "prompt": f"q{i}"})[1])
                for i in range(6)}
    assert replicas == {"a", "b"}


def test_route_changes_reload_in_place_without_restarting_anything(fleet):
    write(fleet)
    up(fleet)
    gateway = gateway_container(fleet)
    servers = {name: fleet.container(name).attrs["State"]["StartedAt"] for name in "abc"}

    fleet.path.write_text(fleet.path.read_text() + f"""
[instance.d.server]
served_model_name = "m3"
port = {free_port()}
""")
    code, out, _ = fleet.cli("up", "--dry-run")
    assert code == 0 and "reload gateway: routes: + d (m3)" in out

    # A client keeps sending while the routes change: a reload in place drops nothing.
    import threading

    statuses: list = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            try:
                statuses.append(call(fleet, "POST", "/v1/completions", {"model": "m1", "prompt": "x"})[0])
            except OSError as exc:
                statuses.append(repr(exc))

    worker = threading.Thread(target=client, daemon=True)
    worker.start()
    try:
        output = up(fleet)
    finally:
        stop.set()
        worker.join(30)
    assert "gateway: reloaded in place" in output
    assert len(statuses) > 5 and set(statuses) == {200}, statuses
    assert [m["id"] for m in call(fleet, "GET", "/v1/models")[2]["data"]] == ["m1", "m2", "m3"]
    assert served_by(fleet, call(fleet, "POST", "/v1/completions", {"model": "m3", "prompt": "x"})[1]) == "d"

    fleet.path.write_text(fleet.path.read_text().replace("[instance.c.server]", "[instance.c.control]\nenabled = false\n[instance.c.server]"))
    up(fleet)
    status, _, body = call(fleet, "POST", "/v1/completions", {"model": "m2", "prompt": "x"})
    assert status == 404 and "m1, m3" in body["error"]["message"]

    after = gateway_container(fleet)
    assert after.id == gateway.id and after.attrs["State"]["StartedAt"] == gateway.attrs["State"]["StartedAt"]
    assert {n: fleet.container(n).attrs["State"]["StartedAt"] for n in "ab"} == {n: servers[n] for n in "ab"}

    code, _, err = fleet.cli("up")
    assert code == 0 and "nothing to do" in err


def test_the_key_is_never_in_argv_inspect_or_output_and_down_removes_the_gateway(fleet):
    write(fleet)
    output = up(fleet)
    code, out, err = fleet.cli("ps", "--json")
    dry = fleet.cli("up", "--dry-run", "--json")
    inspected = json.dumps(gateway_container(fleet).attrs)
    for text in (output, out, err, dry[1], dry[2], inspected):
        assert KEY not in text
    secret = fleet.dir / ".vllm-orch" / "gateway" / fleet.name / "secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o700
    assert stat.S_IMODE((secret / "keys").stat().st_mode) == 0o400

    code, out, err = fleet.cli("logs", "gateway")
    assert code == 0 and "serving configuration" in out

    code, _, err = fleet.cli("down")
    assert code == 0 and "gateway: stopped and removed" in err
    assert fleet.containers() == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", fleet.gateway_port), timeout=1).close()


def test_the_compose_export_runs_the_gateway_with_the_key_from_the_environment(fleet):
    import subprocess

    write(fleet, docker_extra="cache_host_dir = false\n")
    compose_file = fleet.dir / "docker-compose.yml"
    code, _, err = fleet.cli("compose", "-o", str(compose_file))
    assert code == 0, err
    assert KEY not in compose_file.read_text()
    for name in "abc":  # the export's header: the log files must exist before `docker compose up`
        fleet.log_file(name).parent.mkdir(exist_ok=True)
        fleet.log_file(name).touch()
    env = {**os.environ, "VLLM_ORCH_GATEWAY_API_KEY": KEY}
    compose = ["docker", "compose", "-f", str(compose_file)]
    try:
        done = subprocess.run([*compose, "up", "-d"], capture_output=True, text=True, env=env, timeout=180)
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 30
        while True:
            try:
                status, headers, _ = call(fleet, "POST", "/v1/completions", {"model": "m2", "prompt": "x"})
                if status == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the exported gateway did not route within 30 s"
            time.sleep(0.5)
        assert call(fleet, "GET", "/v1/models", key=None)[0] == 401
        rows = {r["name"]: r for r in fleet.cli_json("ps")["instances"]}
        assert rows["gateway"]["owner"] == "compose" and rows["gateway"]["state"] == "running"
    finally:
        subprocess.run([*compose, "down", "-t", "2"], capture_output=True, env=env, timeout=180)


def test_enabled_false_removes_the_gateway_and_leaves_the_servers(fleet):
    write(fleet)
    up(fleet)
    servers = {n: fleet.container(n).id for n in "abc"}
    fleet.path.write_text(fleet.path.read_text().replace("[gateway]\n", "[gateway]\nenabled = false\n"))
    code, out, _ = fleet.cli("up", "--dry-run")
    assert code == 0 and "remove gateway" in out
    output = up(fleet)
    assert "gateway: stopped and removed" in output
    assert not [c for c in fleet.containers() if c.labels.get("io.vllm-orch.role") == "gateway"]
    assert {n: fleet.container(n).id for n in "abc"} == servers
    rows = {r["name"] for r in fleet.cli_json("ps")["instances"]}
    assert "gateway" not in rows


def test_another_served_name_of_an_instance_is_listed_and_reaches_it(fleet):
    write(fleet)
    fleet.path.write_text(fleet.path.read_text().replace('served_model_name = "m2"',
                                                         'served_model_name = ["m2", "m2-latest"]'))
    up(fleet)
    assert [m["id"] for m in call(fleet, "GET", "/v1/models")[2]["data"]] == ["m1", "m2", "m2-latest"]
    status, headers, _ = call(fleet, "POST", "/v1/completions", {"model": "m2-latest", "prompt": "x"})
    assert status == 200 and served_by(fleet, headers) == "c"


def test_session_policy_pins_a_session_header_to_one_replica(fleet):
    write(fleet, policy="session")
    up(fleet)
    for session in ("alice", "bob", "carol"):
        replicas = {served_by(fleet, call(fleet, "POST", "/v1/completions", {"model": "m1", "prompt": f"q{i}"},
                                          headers={"X-Session-ID": session})[1]) for i in range(5)}
        assert len(replicas) == 1, session
    spread = {served_by(fleet, call(fleet, "POST", "/v1/completions", {"model": "m1", "prompt": "x"},
                                    headers={"X-Session-ID": f"s{i}"})[1]) for i in range(12)}
    assert spread == {"a", "b"}


def test_a_server_outside_the_project_is_routed_and_drops_out_when_it_dies(fleet):
    from tests.integration.conftest import STANDIN_IMAGE

    far_port = free_port()
    # Another host's server, as a fleet gateway sees it: a stand-in this project did not make
    # (labelled with the project only so that the test's cleanup removes it).
    far = fleet.client.containers.run(
        STANDIN_IMAGE, ["python", "-m", "standin_vllm.api_server", "--served-model-name", "far", "--port", "8000"],
        detach=True, ports={"8000/tcp": ("127.0.0.1", far_port)}, labels={"io.vllm-orch.project": fleet.name})
    write(fleet)
    # The [gateway] table is the one before [instance.a.server].
    text = fleet.path.read_text().replace("[instance.a.server]",
                                          f'routes = [{{ model = "far", url = "http://127.0.0.1:{far_port}" }}]\n'
                                          "[instance.a.server]", 1)
    fleet.path.write_text(text)
    up(fleet)
    assert [m["id"] for m in call(fleet, "GET", "/v1/models")[2]["data"]] == ["far", "m1", "m2"]
    status, headers, body = call(fleet, "POST", "/v1/completions", {"model": "far", "prompt": "x"})
    assert status == 200 and body["model"] == "far" and headers["x-standin-server"] == far.id[:12]

    far.kill()
    time.sleep(4)  # three missed health checks
    status, _, body = call(fleet, "POST", "/v1/completions", {"model": "far", "prompt": "x"})
    assert status == 503 and "no replica" in body["error"]["message"]
    assert call(fleet, "POST", "/v1/completions", {"model": "m1", "prompt": "x"})[0] == 200
