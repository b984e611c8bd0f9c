"""up / ps / logs / down against a real engine, with the stand-in vLLM server image."""

from __future__ import annotations

import json

import pytest

from tests.integration.conftest import free_port, http_json

TWO = """
[instance.control]
gpu_ids = "none"

[instance.server]
host = "0.0.0.0"
max_model_len = 2048

[instance.alpha.server]
port = {pa}
model = "/models/alpha"
served_model_name = "alpha-model"

[instance.beta.server]
port = {pb}
model = "/models/beta"
"""


def write_two(fleet, **extra):
    ports = {"pa": free_port(), "pb": free_port()}
    fleet.write(TWO.format(**ports), **extra)
    return ports


# The socket client serves the local engine by default; the Docker SDK serves remote engines and
# anyone who sets VLLM_ORCH_DOCKER_CLIENT=sdk. The whole cycle runs through each.
@pytest.mark.parametrize("client", ["socket", "sdk"])
def test_up_ps_logs_down(fleet, monkeypatch, client):
    monkeypatch.setenv("VLLM_ORCH_DOCKER_CLIENT", client)
    ports = write_two(fleet)
    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 0, err
    assert "alpha: created" in err and "beta: created" in err

    rows = {r["name"]: r for r in fleet.cli_json("ps")["instances"]}
    assert rows["alpha"]["state"] == "running" and rows["alpha"]["owner"] == "vllm-orch"
    assert rows["alpha"]["url"] == f"http://127.0.0.1:{ports['pa']}"
    assert rows["alpha"]["model"] == "alpha-model" and rows["alpha"]["gpus"] == "none"

    status, models = http_json(f"http://127.0.0.1:{ports['pa']}/v1/models")
    assert status == 200 and models["data"][0]["id"] == "alpha-model"
    assert models["data"][0]["max_model_len"] == 2048

    # Published on loopback only, on the server port.
    bindings = fleet.container("alpha").attrs["HostConfig"]["PortBindings"]
    assert bindings == {f"{ports['pa']}/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(ports["pa"])}]}

    code, out, _ = fleet.cli("logs", "alpha", "--tail", "50")
    assert code == 0 and "STANDIN-START" in out
    start = json.loads(out.split("STANDIN-START ", 1)[1].splitlines()[0])
    assert start["argv"][start["argv"].index("--served-model-name") + 1] == "alpha-model"
    assert start["env"]["PYTHONUNBUFFERED"] == "1"

    code, table, _ = fleet.cli("ps")
    assert "NAME" in table and "alpha" in table and "running" in table

    result = fleet.cli_json("down")
    assert sorted(r["instance"] for r in result["removed"]) == ["alpha", "beta"]
    assert all(r["exit_code"] == 0 for r in result["removed"]), result  # SIGTERM -> clean exit
    assert fleet.containers() == []
    # Logs outlive the containers.
    log = fleet.log_file("alpha").read_text()
    assert "STANDIN-START" in log and "STANDIN-SHUTDOWN" in log
    code, out, _ = fleet.cli("logs", "alpha")
    assert code == 0 and "STANDIN-SHUTDOWN" in out


SAME_CONTAINER = {
    "Config": ("Image", "Entrypoint", "Cmd", "Env", "Labels", "Healthcheck", "StopSignal", "StopTimeout", "User",
               "ExposedPorts", "AttachStdout", "AttachStderr"),
    "HostConfig": ("Mounts", "PortBindings", "ShmSize", "Init", "DeviceRequests", "NetworkMode", "RestartPolicy",
                   "IpcMode"),
}


def test_both_engine_clients_make_the_same_container(fleet, monkeypatch):
    write_two(fleet)
    made = {}
    for client in ("sdk", "socket"):
        monkeypatch.setenv("VLLM_ORCH_DOCKER_CLIENT", client)
        assert fleet.cli("up")[0] == 0
        attrs = fleet.container("alpha").attrs
        made[client] = {part: {k: attrs[part].get(k) for k in keys} for part, keys in SAME_CONTAINER.items()}
        other = "socket" if client == "sdk" else "sdk"
        monkeypatch.setenv("VLLM_ORCH_DOCKER_CLIENT", other)
        plan = fleet.cli_json("up", "--dry-run")  # the other client sees nothing to change
        assert {a["action"] for a in plan["actions"]} == {"noop"}, plan
        monkeypatch.setenv("VLLM_ORCH_DOCKER_CLIENT", client)
        assert fleet.cli("down")[0] == 0
    assert made["socket"] == made["sdk"]


def test_second_up_changes_nothing(fleet):
    write_two(fleet)
    assert fleet.cli("up", "--wait", "--timeout", "120")[0] == 0
    before = {c.name: (c.id, c.attrs["State"]["StartedAt"]) for c in fleet.containers()}
    code, _, err = fleet.cli("up")
    assert code == 0 and "nothing to do" in err
    after = {c.name: (c.id, c.attrs["State"]["StartedAt"]) for c in fleet.containers()}
    assert after == before
    plan = fleet.cli_json("up", "--dry-run")
    assert {a["action"] for a in plan["actions"]} == {"noop"}


def test_changed_instance_is_recreated_alone_and_its_log_appended(fleet):
    write_two(fleet)
    assert fleet.cli("up", "--wait", "--timeout", "120")[0] == 0
    alpha_id, beta_id = fleet.container("alpha").id, fleet.container("beta").id

    code, out, _ = fleet.cli("up", "--dry-run", "--set", "instance.alpha.server.max_model_len=4096")
    assert "recreate alpha: command: --max-model-len 2048 -> 4096" in out
    assert "noop beta" in out
    assert fleet.container("alpha").id == alpha_id, "--dry-run changed something"

    code, _, err = fleet.cli("up", "--wait", "--timeout", "120", "--set", "instance.alpha.server.max_model_len=4096")
    assert code == 0, err
    assert fleet.container("alpha").id != alpha_id
    assert fleet.container("beta").id == beta_id
    log = fleet.log_file("alpha").read_text()
    assert log.count("vllm-orch: starting instance alpha") == 2
    assert log.count("STANDIN-START") == 2


def test_stopped_instance_is_started_again(fleet):
    write_two(fleet)
    assert fleet.cli("up", "--wait", "--timeout", "120")[0] == 0
    container = fleet.container("beta")
    container.stop(timeout=10)
    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 0 and "beta: started" in err
    assert fleet.container("beta").id == container.id


def test_orphans_are_reported_then_removed_on_request(fleet):
    ports = write_two(fleet)
    assert fleet.cli("up")[0] == 0
    fleet.write(TWO.format(**ports).split("[instance.beta.server]")[0])
    code, _, err = fleet.cli("up")
    assert code == 0 and "beta: orphan" in err
    assert fleet.container("beta").status == "running"
    code, _, err = fleet.cli("up", "--remove-orphans")
    assert code == 0
    assert [c.labels["io.vllm-orch.instance"] for c in fleet.containers()] == ["alpha"]


def test_down_touches_only_what_we_own(fleet, engine):
    write_two(fleet)
    assert fleet.cli("up")[0] == 0
    # Same project label but another owner (a Compose deployment of the export), and a
    # container without any of our labels: neither is ours to remove.
    foreign = engine.containers.create(
        "vllm-orch/standin:latest", ["sleep", "60"], entrypoint=[],
        labels={"io.vllm-orch.project": fleet.name, "io.vllm-orch.owner": "compose", "io.vllm-orch.instance": "x"},
    )
    unlabeled = engine.containers.create("vllm-orch/standin:latest", ["sleep", "60"], entrypoint=[],
                                         name=f"{fleet.name}-gamma")
    try:
        fleet.cli_json("down")
        remaining = {c.id for c in fleet.containers()}
        assert remaining == {foreign.id}
        unlabeled.reload()
    finally:
        foreign.remove(force=True)
        unlabeled.remove(force=True)


def test_down_by_name(fleet):
    write_two(fleet)
    assert fleet.cli("up")[0] == 0
    fleet.cli_json("down", "beta")
    assert [c.labels["io.vllm-orch.instance"] for c in fleet.containers()] == ["alpha"]


def test_runs_as_a_bare_uid_with_a_writable_home_and_log(fleet):
    ports = write_two(fleet, docker_extra='user = "4321:4321"\n')
    code, _, err = fleet.cli("up", "--wait", "--timeout", "120", "alpha")
    assert code == 0, err
    status, info = http_json(f"http://127.0.0.1:{ports['pa']}/standin/info")
    assert status == 200 and info["uid"] == 4321
    assert info["env"]["HOME"] == "/tmp"  # Docker's HOME=/ for a uid without passwd entry is not writable
    log = fleet.log_file("alpha")
    assert log.stat().st_uid == 4321 and "STANDIN-START" in log.read_text()
