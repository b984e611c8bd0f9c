"""`validate` on the host that runs the config (a real engine here), against the review elsewhere
(tests/unit/test_review_anywhere.py): what the host lacks or what holds its ports is an error
there, a warning for `plan` and `compose`; the project's own running containers hold their ports
without a complaint."""

from __future__ import annotations

import socket

from tests.integration.conftest import TWO_STANDINS as BODY, free_port


def write(fleet, **kwargs) -> dict[str, int]:
    ports = {"pa": free_port(), "pb": free_port()}
    fleet.write(BODY.format(**ports), **kwargs)
    return ports


def test_a_missing_image_is_a_validate_error_on_the_host_and_a_warning_for_compose(fleet):
    write(fleet, image="vllm-orch/not-built-here:1")
    code, out, _ = fleet.cli("validate")
    assert code == 2
    assert "docker.image: error: image 'vllm-orch/not-built-here:1' not found on this Docker host" in out
    code, out, err = fleet.cli("compose")
    assert code == 0 and "services:" in out
    assert "docker.image: warning: image 'vllm-orch/not-built-here:1' not found on this Docker host" in err
    code, _, err = fleet.cli("validate", "--offline")
    assert code == 0 and "not found" not in err


def test_a_port_held_by_something_else_is_a_validate_error_on_the_host(fleet):
    ports = write(fleet)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports["pb"]))
        squatter.listen()
        code, out, _ = fleet.cli("validate")
        assert code == 2
        assert f"instance.b.docker.publish_port: error: host port 127.0.0.1:{ports['pb']} is not free on this host" in out
        assert "instance.a.docker.publish_port" not in out
        code, _, err = fleet.cli("validate", "--offline")  # a review elsewhere: not this machine's ports
        assert code == 0 and "not free" not in err
    assert fleet.containers() == []


def test_the_projects_own_running_containers_do_not_make_their_ports_busy(fleet):
    write(fleet)
    code, _, err = fleet.cli("up")
    assert code == 0, err
    code, out, _ = fleet.cli("validate")
    assert code == 0, out
    assert "not free" not in out
