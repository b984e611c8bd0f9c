"""After `docker context use`, vllm-orch drives the same engine as `docker` does.

A context made by the real Docker CLI (in a private DOCKER_CONFIG) points at a counting
pass-through proxy in front of the real engine: every request vllm-orch sends through the context
is seen there, and `docker ps` through the same context shows what `up` made.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.integration.test_api_call_shape import engine_proxy, fleet_body

pytestmark = pytest.mark.docker


@pytest.fixture
def proxy_context(tmp_path, monkeypatch):
    proxy = engine_proxy.EngineProxy()  # forwards to the engine DOCKER_HOST (or the default socket) names
    config = tmp_path / "docker-config"
    config.mkdir()
    env = {**os.environ, "DOCKER_CONFIG": str(config)}
    env.pop("DOCKER_HOST", None)
    for argv in (["context", "create", "through-proxy", "--docker", f"host={proxy.docker_host}"],
                 ["context", "use", "through-proxy"]):
        subprocess.run(["docker", *argv], env=env, check=True, capture_output=True, text=True)
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    yield proxy, env
    proxy.close()


@pytest.mark.parametrize("client", ["socket", "sdk"])
def test_up_ps_down_follow_the_docker_clis_current_context(fleet, proxy_context, monkeypatch, client):
    proxy, cli_env = proxy_context
    monkeypatch.setenv("VLLM_ORCH_DOCKER_CLIENT", client)
    fleet.write(fleet_body(1))
    # The image's option table is asked for through the context too (a throwaway container, once).
    code, out, err = fleet.cli("validate")
    assert code == 0 and "vLLM options: image vllm-orch/standin" in out, err
    assert sum(proxy.counts().values()) > 0
    proxy.reset()
    code, _, err = fleet.cli("up")
    assert code == 0, err
    calls = proxy.counts()
    assert calls["POST /containers/create"] == 1 and calls["POST /containers/{id}/start"] == 1, calls

    seen = subprocess.run(["docker", "ps", "--filter", f"label=io.vllm-orch.project={fleet.name}",
                           "--format", "{{json .Labels}}"], env=cli_env, check=True, capture_output=True, text=True)
    assert len(seen.stdout.splitlines()) == 1 and "io.vllm-orch.instance=i0" in seen.stdout
    proxy.reset()
    assert [i["name"] for i in fleet.cli_json("ps")["instances"]] == ["i0"]
    assert proxy.counts()["GET /containers/json"] == 1

    code, _, err = fleet.cli("down")
    assert code == 0, err
    assert fleet.containers() == []
    assert proxy.counts()["DELETE /containers/{id}"] == 1


def test_a_missing_context_is_one_line_and_touches_nothing(fleet, proxy_context, monkeypatch):
    proxy, _ = proxy_context
    monkeypatch.setenv("DOCKER_CONTEXT", "no-such-context")
    fleet.write(fleet_body(1))
    code, out, err = fleet.cli("up")
    assert code == 3
    assert err.strip().splitlines() == [
        "vllm-orch: error: Docker context 'no-such-context' (set in DOCKER_CONTEXT) does not exist; "
        "`docker context ls` lists the contexts"]
    assert fleet.containers() == [] and sum(proxy.counts().values()) == 0
