"""Which engine client serves which DOCKER_HOST, and the socket client's stream decoding."""

from __future__ import annotations

import struct

import pytest

from orchestrator.backends.engine import EngineUnreachable, engine_for_environment, is_local_address, local_socket
from orchestrator.backends.engine_socket import SocketEngine, demultiplex
from orchestrator.errors import OrchestratorError


def test_local_unix_engines_get_the_socket_client():
    assert local_socket({}) == "/var/run/docker.sock"
    assert local_socket({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}) == "/run/user/1000/docker.sock"
    engine = engine_for_environment({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"})
    assert isinstance(engine, SocketEngine) and engine.address == "unix:///run/user/1000/docker.sock"


@pytest.mark.parametrize("env", [
    {"DOCKER_HOST": "tcp://127.0.0.1:1"},
    {"DOCKER_HOST": "unix:///nonexistent/docker.sock", "VLLM_ORCH_DOCKER_CLIENT": "sdk"},
])
def test_other_engines_go_through_the_docker_sdk(env):
    assert local_socket(env) is None or env.get("VLLM_ORCH_DOCKER_CLIENT") == "sdk"
    # The SDK client connects when made (the socket client only on its first call): nothing listens there.
    with pytest.raises(EngineUnreachable):
        engine_for_environment(env)


@pytest.mark.parametrize("address, local", [
    ("unix:///var/run/docker.sock", True), ("tcp://127.0.0.1:2375", True), ("tcp://[::1]:2376", True),
    ("ssh://localhost", True), ("tcp://10.0.0.2:2376", False), ("ssh://me@gpu-box", False), ("ssh://gpu-box:22", False),
])
def test_which_engines_share_this_machines_ports(address, local):
    # Only for these does `up` also try to bind each host port itself before starting anything.
    assert is_local_address(address) is local


def test_tls_engines_are_left_to_the_sdk():
    assert local_socket({"DOCKER_HOST": "unix:///var/run/docker.sock", "DOCKER_TLS_VERIFY": "1"}) is None
    assert local_socket({"DOCKER_HOST": "ssh://gpu-box"}) is None


@pytest.mark.parametrize("env, words", [
    ({"VLLM_ORCH_DOCKER_CLIENT": "requests"}, "use 'sdk' or 'socket'"),
    ({"VLLM_ORCH_DOCKER_CLIENT": "socket", "DOCKER_HOST": "tcp://10.0.0.2:2376"}, "needs a local unix:// engine"),
])
def test_a_client_choice_that_cannot_work_is_one_clear_error(env, words):
    with pytest.raises(OrchestratorError, match=words):
        engine_for_environment(env)


def frame(stream: int, data: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(data)) + data


def test_log_frames_are_joined_in_order():
    assert demultiplex(frame(1, b"out 1\n") + frame(2, b"err\n") + frame(1, b"out 2\n")) == b"out 1\nerr\nout 2\n"
    assert demultiplex(b"") == b""


def test_unframed_output_is_returned_as_it_is():
    assert demultiplex(b"plain text from a tty container\n") == b"plain text from a tty container\n"


def test_an_engine_that_stops_answering_fails_the_instance_in_one_line(tmp_path):
    """A real unix socket that accepts and never answers, as a hung dockerd does."""
    import socket as sockets

    from orchestrator.backends.docker import DockerBackend
    from orchestrator.plan import CREATE, Action
    from tests.builders import container_of, instance

    spec = instance("""
        [docker]
        image = "img"
        log_host_dir = "logs"
        [instance.a.server]
        port = 8000
        model = "m"
    """, tmp_path)
    silent = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    silent.bind(str(tmp_path / "docker.sock"))
    silent.listen(16)
    try:
        backend = DockerBackend(SocketEngine(str(tmp_path / "docker.sock"), timeout=0.3))
        [result] = backend.run_actions([Action(CREATE, "a", ("new",), spec, rendering=container_of(spec))])
        with pytest.raises(OrchestratorError, match="Docker engine error: no answer"):
            backend.observe("p")
    finally:
        silent.close()
    assert not result.ok
    assert result.detail.startswith("the Docker engine did not answer: no answer to POST /containers/create within 0.3s")
