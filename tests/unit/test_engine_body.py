"""The create bodies vllm-orch sends are the ones docker-py would build for the same settings
(docker-py's own builders are the oracle), so moving the local engine calls off docker-py
changed no container."""

from __future__ import annotations

import docker
import pytest

from orchestrator.backends.engine_body import PROBE_OWNER, create_body, probe_body
from orchestrator.labels import LABEL_OWNER
from orchestrator.container import device_requests
from orchestrator.spec import Mount
from tests.builders import container_of, resolve_toml

API = docker.APIClient(version="1.41")  # a fixed version: no engine is contacted

FLEET = """
[master]
api_server_module = "standin_vllm.api_server"

[docker]
image = "vllm-orch/standin:latest"
project = "bodies"
shm_size = "1.5g"
env = {{ A = "1" }}
secret_env = ["VLLM_API_KEY"]

[instance.control]
gpu_ids = "none"

[instance.plain.server]
port = 8001
model = "m"
api_key = "sk-test"

[instance.ids.control]
gpu_ids = "0,2"
[instance.ids.server]
port = 8002
model = "m"
[instance.ids.docker]
user = "1000:1000"
restart = "unless-stopped"
volumes = ["{models}:/models:ro"]
publish_address = "0.0.0.0"
publish_port = 9002
cpuset = "0-3,8"
cpus = 2.5
pids_limit = 4096
ulimits = {{ memlock = -1, nofile = {{ soft = 65536, hard = 1048576 }} }}

[instance.all.control]
gpu_ids = "all"
[instance.all.server]
port = 8003
model = "m"
[instance.all.docker]
ipc = "host"
network_mode = "host"
health_cmd = ["NONE"]
"""


def docker_py_body(container) -> dict:
    """What docker-py's create_container would post for these settings."""
    port = container.port
    host_kwargs = dict(
        mounts=[docker.types.Mount(m.target, m.source, type="bind", read_only=m.read_only)
                for m in (*container.mounts, *container.cache_mounts, *container.secret_mounts())],
        device_requests=[docker.types.DeviceRequest(
            driver=r["Driver"], count=r["Count"], device_ids=r["DeviceIDs"], capabilities=r["Capabilities"],
            options=r["Options"]) for r in device_requests(container.gpu, container.gpu_driver)],
        init=container.init,
    )
    if port:
        host_kwargs["port_bindings"] = {f"{port.container_port}/tcp": (port.host_address, port.host_port)}
    if container.shm_size:
        host_kwargs["shm_size"] = container.shm_size
    if container.ipc_mode:
        host_kwargs["ipc_mode"] = container.ipc_mode
    if container.network_mode:
        host_kwargs["network_mode"] = container.network_mode
    if container.restart != "no":
        host_kwargs["restart_policy"] = {"Name": container.restart}
    if container.option("cpuset"):
        host_kwargs["cpuset_cpus"] = container.option("cpuset")
    if container.option("cpus"):
        host_kwargs["nano_cpus"] = int(container.option("cpus") * 1e9)
    if container.option("pids_limit") is not None:
        host_kwargs["pids_limit"] = container.option("pids_limit")
    if container.option("ulimits"):
        host_kwargs["ulimits"] = [docker.types.Ulimit(name=name, soft=limit["soft"], hard=limit["hard"])
                                  for name, limit in container.option("ulimits").items()]
    check = container.healthcheck
    ours = create_body(container)
    body = API.create_container_config(
        image=container.image,
        command=list(container.command),
        entrypoint=list(container.entrypoint),
        environment=container.environment(reveal=True),
        labels=ours["Labels"],  # hash and .spec labels: compared on their own below
        user=container.user or "",
        stop_signal=container.stop_signal,
        stop_timeout=container.stop_timeout,
        ports=[(port.container_port, "tcp")] if port else None,
        healthcheck=None if check is None else {
            "test": list(check.test), "interval": check.interval_s * 10**9, "timeout": check.timeout_s * 10**9,
            "retries": check.retries, "start_period": check.start_period_s * 10**9},
        host_config=API.create_host_config(**host_kwargs),
    )
    return {k: v for k, v in body.items() if v is not None and v is not False}


@pytest.fixture
def containers(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    resolved = resolve_toml(FLEET.format(models=models), tmp_path, env={"VLLM_API_KEY": "sk-test"})
    assert not [p for p in resolved.problems if p.is_error], resolved.problems
    return {i.name: container_of(i) for i in resolved.instances}


@pytest.mark.parametrize("name", ["plain", "ids", "all"])
def test_create_body_is_what_docker_py_builds(containers, name):
    container = containers[name]
    assert create_body(container) == docker_py_body(container)


def test_body_settings_a_user_relies_on(containers):
    ids = create_body(containers["ids"])
    assert ids["HostConfig"]["DeviceRequests"] == [
        {"Driver": "nvidia", "Count": 0, "DeviceIDs": ["0", "2"], "Capabilities": [["gpu"]], "Options": {}}]
    assert ids["HostConfig"]["PortBindings"] == {"8002/tcp": [{"HostIp": "0.0.0.0", "HostPort": "9002"}]}
    assert ids["HostConfig"]["ShmSize"] == 1536 * 1024 * 1024
    assert ids["HostConfig"]["RestartPolicy"] == {"Name": "unless-stopped"}
    assert ids["User"] == "1000:1000"
    assert (ids["HostConfig"]["CpusetCpus"], ids["HostConfig"]["NanoCpus"]) == ("0-3,8", 2_500_000_000)
    assert ids["HostConfig"]["PidsLimit"] == 4096
    assert ids["HostConfig"]["Ulimits"] == [{"Name": "memlock", "Soft": -1, "Hard": -1},
                                            {"Name": "nofile", "Soft": 65536, "Hard": 1048576}]
    plain = create_body(containers["plain"])
    assert plain["HostConfig"]["PortBindings"]["8001/tcp"][0]["HostIp"] == "127.0.0.1"
    assert plain["HostConfig"]["DeviceRequests"] == []
    assert "PidsLimit" not in plain["HostConfig"] and "Ulimits" not in plain["HostConfig"]  # the engine's own
    # The key reaches the engine as a read-only file mount only: never in Env, a label or the argv.
    assert "sk-test" not in str(plain)
    (secret,) = [m for m in plain["HostConfig"]["Mounts"] if m["Target"] == "/run/secrets/VLLM_API_KEY"]
    assert secret["ReadOnly"] is True and secret["Source"].endswith("/plain/VLLM_API_KEY")
    assert "VLLM_ORCH_SECRET_ENV=VLLM_API_KEY" in plain["Env"]
    everything = create_body(containers["all"])
    assert everything["HostConfig"]["DeviceRequests"][0]["Count"] == -1
    assert everything["HostConfig"]["NetworkMode"] == "host" and "PortBindings" not in everything["HostConfig"]
    assert "ShmSize" not in everything["HostConfig"]  # ipc=host: the host's /dev/shm


def test_probe_body_runs_argv_without_a_shell_and_without_network():
    body = probe_body("img", ["/usr/bin/python3", "-c", "print(1)"], mounts=[Mount("/h", "/c", True)],
                      env={"PYTHONUNBUFFERED": "1"})
    assert body["Entrypoint"] == ["/usr/bin/python3"] and body["Cmd"] == ["-c", "print(1)"]
    assert body["HostConfig"]["NetworkMode"] == "none"
    assert body["HostConfig"]["Mounts"] == [{"Type": "bind", "Source": "/h", "Target": "/c", "ReadOnly": True}]
    assert body["Labels"] == {LABEL_OWNER: PROBE_OWNER}
