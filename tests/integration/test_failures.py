"""Bad input and broken hosts: one clear line, a non-zero exit, nothing half-done."""

from __future__ import annotations

import json
import socket

import pytest

from tests.integration.conftest import STANDIN_IMAGE, TWO_STANDINS as ONE, free_port, http_json, run_cli


def write(fleet, body: str = ONE, **kwargs):
    ports = {"pa": free_port(), "pb": free_port()}
    fleet.write(body.format(**ports), **kwargs)
    return ports


def test_missing_image_names_the_fix_and_creates_nothing(fleet):
    write(fleet, image="vllm-orch/no-such-image:1")
    code, _, err = fleet.cli("up")
    assert code == 4
    assert "image 'vllm-orch/no-such-image:1' not found" in err.splitlines()[-1]
    assert "scripts/build-images.sh" in err
    assert fleet.containers() == []


def test_config_error_exits_2_and_touches_nothing(fleet):
    write(fleet)
    code, _, err = fleet.cli("up", "--set", "instance.a.control.gpu_ids=gpu0")
    assert code == 2 and "instance.a.control.gpu_ids" in err
    assert fleet.containers() == []


def test_busy_host_port_is_caught_before_anything_starts(fleet):
    ports = write(fleet)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["pb"]))
        squatter.listen()
        code, _, err = fleet.cli("up")
    assert code == 4
    assert f"127.0.0.1:{ports['pb']} is not free" in err and "instance 'b'" in err
    assert fleet.containers() == [], "instance a must not have been started either"


def test_port_published_by_another_container_is_caught_before_anything_starts(fleet, engine):
    ports = write(fleet)
    # Not ours: a container of someone else's that publishes b's port (found from the engine's
    # list, which also covers hosts where Docker publishes with iptables alone, no proxy bind).
    other = engine.containers.run(STANDIN_IMAGE, entrypoint=["sleep", "300"], detach=True, auto_remove=True,
                                  name=f"{fleet.name}-squatter", ports={"9/tcp": ("127.0.0.1", ports["pb"])})
    try:
        code, _, err = fleet.cli("up")
    finally:
        other.remove(force=True)
    assert code == 4
    assert f"127.0.0.1:{ports['pb']} is published by container {fleet.name}-squatter" in err and "instance 'b'" in err
    assert fleet.containers() == [], "instance a must not have been started either"


def test_missing_host_path_is_refused(fleet, tmp_path):
    write(fleet, docker_extra=f'volumes = ["{tmp_path}/absent:/models:ro"]\n')
    code, _, err = fleet.cli("up")
    assert code == 4 and f"instance 'a': host path {tmp_path}/absent does not exist" in err
    assert fleet.containers() == []


def test_up_reports_every_preflight_problem_in_one_run_and_creates_nothing(fleet, tmp_path):
    """Issue 20, part 3: a missing image, a busy port and a missing host path, all three named by
    one `up` (exit 4, one line each, as `validate` lists config problems), nothing created."""
    ports = write(fleet, ONE + '[instance.a.docker]\nimage = "vllm-orch/no-such-image:1"\n',
                  docker_extra=f'volumes = ["{tmp_path}/absent:/models:ro"]\n')
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["pb"]))
        squatter.listen()
        code, _, err = fleet.cli("up")
    assert code == 4, err
    lines = err.splitlines()
    assert lines[-1] == "vllm-orch: 4 preflight problems; nothing was changed"
    assert lines[:-1] == [
        "vllm-orch: error: image 'vllm-orch/no-such-image:1' not found on this Docker host (build it, e.g. "
        "scripts/build-images.sh for the bundled images, or `docker pull vllm-orch/no-such-image:1`)",
        f"vllm-orch: error: instance 'a': host path {tmp_path}/absent does not exist",
        f"vllm-orch: error: instance 'b': host path {tmp_path}/absent does not exist",
        f"vllm-orch: error: instance 'b': host port 127.0.0.1:{ports['pb']} is not free (Address already in use); "
        "set [instance.b.docker] publish_port",
    ]
    assert fleet.containers() == []


def test_bad_override_json_is_refused(fleet):
    write(fleet)
    result = run_cli("-c", str(fleet.path), "up", env={"AUTO_INFER_VLLM_OVERRIDES": "{oops"})
    assert result.returncode == 2
    assert "AUTO_INFER_VLLM_OVERRIDES" in result.stderr and "invalid JSON" in result.stderr
    assert fleet.containers() == []


@pytest.mark.parametrize("client", ["socket", "sdk"])
def test_unreachable_engine_is_one_line(fleet, client):
    write(fleet)
    result = run_cli("-c", str(fleet.path), "up",
                     env={"DOCKER_HOST": "unix:///nonexistent/docker.sock", "VLLM_ORCH_DOCKER_CLIENT": client})
    assert result.returncode == 3
    assert result.stderr.strip().splitlines()[-1].startswith("vllm-orch: error: cannot reach the Docker engine")
    assert "Traceback" not in result.stderr


def test_failing_instance_fails_wait_fast_and_shows_its_log(fleet):
    body = ONE + '[instance.b.control]\ngpu_ids = "none"\n'
    ports = write(fleet, body.replace("[instance.b.server]\n", '[instance.b.server]\nextra_args = ["--standin-exit-code", "3"]\n'))
    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 5
    assert err.strip().splitlines()[-1].startswith("vllm-orch: error: instance 'b' exited")
    assert "standin: error: refused to start (exit 3)" in err
    assert fleet.container("a").status == "running"
    status, _ = http_json(f"http://127.0.0.1:{ports['pa']}/health")
    assert status == 200


def test_api_key_is_enforced_and_never_shown(fleet):
    body = ONE.replace("[instance.a.server]\nport = {pa}", '[instance.a.server]\nport = {pa}\napi_key = "sk-test-4242"')
    ports = write(fleet, body)
    for args in (["plan"], ["plan", "--json"], ["up", "--wait", "--timeout", "120"], ["ps"], ["ps", "--json"], ["validate"]):
        code, out, err = fleet.cli(*args)
        assert code == 0, err
        assert "sk-test-4242" not in out + err
    status, _ = http_json(f"http://127.0.0.1:{ports['pa']}/v1/models")
    assert status == 401
    status, _ = http_json(f"http://127.0.0.1:{ports['pa']}/v1/models", {"Authorization": "Bearer sk-test-4242"})
    assert status == 200
    container = fleet.container("a")
    assert "sk-test-4242" not in json.dumps(container.attrs)  # not in Cmd, Env, labels: a file (secret_files.py)


def test_gpu_request_without_a_matching_runtime_is_refused_before_anything_starts(fleet):
    """The engine's answer for a GPU request it has no driver for is the same one a host without
    the NVIDIA runtime gives ("could not select device driver"); a driver name no engine has
    makes this host give it, although setup-host.sh gave it an NVIDIA hook stand-in."""
    body = ONE.replace('gpu_ids = "none"', 'gpu_ids = "0"').replace("[instance.server]", "[instance.server]\ngpu_memory_utilization = 0.4")
    write(fleet, body, docker_extra='gpu_driver = "no-such-driver"\n')
    code, _, err = fleet.cli("up")
    assert code == 4, err
    last = err.strip().splitlines()[-1]
    assert "asks for GPUs (gpu_ids = '0')" in last and 'set gpu_ids = "none"' in last
    assert fleet.containers() == []
    probes = fleet.client.containers.list(all=True, filters={"label": "io.vllm-orch.owner=vllm-orch-probe"})
    assert probes == []
