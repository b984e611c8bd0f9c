"""vllm-orch talks to the engine the Docker CLI would: DOCKER_HOST, else the current context.

The store is written here as the CLI lays it out (tests/integration/test_docker_context.py makes
one with the real `docker context create` and drives a fleet through it)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from orchestrator.backends.docker_context import current_context, engine_environment
from orchestrator.backends.engine import engine_address, engine_for_environment
from orchestrator.backends.engine_socket import SocketEngine
from orchestrator.errors import DockerUnavailable


def add_context(config: Path, name: str, host: str, *, tls: bool = False, skip_verify: bool = False) -> Path:
    context_id = hashlib.sha256(name.encode()).hexdigest()
    meta = config / "contexts" / "meta" / context_id
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(json.dumps({
        "Name": name, "Metadata": {},
        "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": skip_verify}},
    }))
    tls_dir = config / "contexts" / "tls" / context_id / "docker"
    if tls:
        tls_dir.mkdir(parents=True)
        for part in ("ca.pem", "cert.pem", "key.pem"):
            (tls_dir / part).write_text("-----BEGIN CERTIFICATE-----\n")
    return tls_dir


def use(config: Path, name: str) -> None:
    (config / "config.json").write_text(json.dumps({"auths": {}, "currentContext": name}))


def test_the_current_context_names_the_engine(tmp_path):
    add_context(tmp_path, "rootless", "unix:///run/user/1000/docker.sock")
    use(tmp_path, "rootless")
    env = {"DOCKER_CONFIG": str(tmp_path)}
    assert engine_environment(env)["DOCKER_HOST"] == "unix:///run/user/1000/docker.sock"
    assert engine_address(env) == "unix:///run/user/1000/docker.sock"
    engine = engine_for_environment(env)  # a local socket still gets the stdlib client
    assert isinstance(engine, SocketEngine) and engine.address == "unix:///run/user/1000/docker.sock"


def test_docker_host_then_docker_context_then_the_config_file(tmp_path):
    add_context(tmp_path, "a", "unix:///a.sock")
    add_context(tmp_path, "b", "ssh://me@gpu-box")
    use(tmp_path, "a")
    env = {"DOCKER_CONFIG": str(tmp_path)}
    assert current_context(env) == ("a", str(tmp_path / "config.json"))
    assert engine_environment({**env, "DOCKER_CONTEXT": "b"})["DOCKER_HOST"] == "ssh://me@gpu-box"
    assert engine_environment({**env, "DOCKER_HOST": "unix:///x.sock"})["DOCKER_HOST"] == "unix:///x.sock"
    # The default context, or no CLI config at all: the default socket, the environment untouched.
    assert engine_environment({**env, "DOCKER_CONTEXT": "default"}) == {**env, "DOCKER_CONTEXT": "default"}
    assert engine_environment({"DOCKER_CONFIG": str(tmp_path / "none")}) == {"DOCKER_CONFIG": str(tmp_path / "none")}
    assert engine_address({"DOCKER_CONFIG": str(tmp_path / "none")}) == "unix:///var/run/docker.sock"


def test_a_tls_context_becomes_the_variables_docker_py_reads(tmp_path):
    tls_dir = add_context(tmp_path, "secure", "tcp://10.0.0.2:2376", tls=True)
    add_context(tmp_path, "lax", "tcp://10.0.0.3:2376", tls=True, skip_verify=True)
    env = engine_environment({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "secure"})
    assert (env["DOCKER_HOST"], env["DOCKER_CERT_PATH"], env["DOCKER_TLS_VERIFY"]) == (
        "tcp://10.0.0.2:2376", str(tls_dir), "1")
    lax = engine_environment({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "lax"})
    assert "DOCKER_TLS_VERIFY" not in lax and lax["DOCKER_CERT_PATH"].endswith("/docker")


@pytest.mark.parametrize("setup, words", [
    (lambda config: None, r"Docker context 'gone' \(set in DOCKER_CONTEXT\) does not exist"),
    (lambda config: add_context(config, "gone", ""), "names no Docker endpoint"),
])
def test_a_context_that_cannot_be_used_is_one_clear_error(tmp_path, setup, words):
    setup(tmp_path)
    with pytest.raises(DockerUnavailable, match=words) as caught:
        engine_for_environment({"DOCKER_CONFIG": str(tmp_path), "DOCKER_CONTEXT": "gone"})
    assert caught.value.exit_code == 3 and "\n" not in str(caught.value)
