"""A config reviewed on a machine that is not its GPU host (a laptop, CI): what that machine lacks
(the volumes' and pixi project's host paths, model directories, the image, an engine) is a
warning for `plan`, `compose`, `k8s` and `validate --offline`, which write what they would write
on the host; `validate` without --offline (the check on the host) keeps them as errors, as `up`
does (tests/integration/test_failures.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from orchestrator.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NOWHERE = "unix:///nonexistent/vllm-orch-review/docker.sock"

LAPTOP = """
[master]
pixi_project_dir = "/workspace/pixi"

[instance.control]
gpu_ids = [0, 1]
log_dir = "/var/log/vllm"

[instance.server]
model = "/models/llama"
tensor_parallel_size = 2
api_key = "sk-review-secret"

[instance.big.server]
port = 8001

[docker]
image = "registry.example/vllm:not-on-this-machine"
volumes = ["{srv}/models:/models:ro"]
pixi_project_host_dir = "{srv}/pixi"
log_host_dir = "{srv}/logs"
cache_host_dir = "{srv}/cache"
"""

REVIEWS = [["plan", "--offline"], ["plan", "--json", "--offline"], ["compose", "--offline"],
           ["k8s", "--offline"], ["validate", "--offline"]]


@pytest.fixture
def laptop(tmp_path, monkeypatch):
    """The config of a GPU host whose /srv-like tree is not on this machine, and no engine here."""
    monkeypatch.setenv("DOCKER_HOST", NOWHERE)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    srv = tmp_path / "srv"
    path = tmp_path / "fleet.toml"
    path.write_text(LAPTOP.format(srv=srv))
    return path, srv


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", REVIEWS, ids=" ".join)
def test_a_review_elsewhere_succeeds_with_warnings_and_the_hosts_output(capsys, laptop, command):
    path, srv = laptop
    code, away, err = run(capsys, "-c", path, *command)
    said = err + (away if command[0] == "validate" else "")
    assert code == 0, said
    if command[0] != "k8s":  # a pod's hostPath is a node's, never this machine's
        assert f"instance.big.docker: warning: host path {srv}/models does not exist" in said
        assert f"host path {srv}/pixi does not exist" in said
    assert "sk-review-secret" not in away + err
    assert not srv.exists(), "a review must not make the host's directories (logs, caches) here"
    # On the host the same command writes the same thing, without the warnings.
    for sub in ("models/llama", "pixi"):
        (srv / sub).mkdir(parents=True)
    code, on_host, err = run(capsys, "-c", path, *command)
    assert code == 0 and "does not exist" not in err + on_host
    if command[0] == "validate":
        assert "ok: 1 instance(s), 1 enabled" in away and "ok: 1 instance(s), 1 enabled" in on_host
    elif command[:2] == ["plan", "--json"]:
        away_doc, host_doc = json.loads(away), json.loads(on_host)
        assert away_doc.pop("problems") != host_doc.pop("problems")
        assert away_doc == host_doc
    else:
        assert away == on_host


def test_validate_on_the_host_refuses_what_the_host_lacks(capsys, laptop):
    path, srv = laptop
    code, out, _ = run(capsys, "-c", path, "validate")
    assert code == 2
    assert f"instance.big.docker: error: host path {srv}/models does not exist" in out
    assert f"instance.big.docker: error: host path {srv}/pixi does not exist" in out
    # The engine was not reachable: the image could not be asked, and validate says so.
    assert "image check skipped (cannot reach the Docker engine" in out


def test_a_model_directory_missing_under_its_volume_is_a_warning_elsewhere_and_an_error_on_the_host(capsys, laptop):
    path, srv = laptop
    (srv / "models" / "other").mkdir(parents=True)
    (srv / "pixi").mkdir()
    message = f"/models/llama is {srv}/models/llama on this host (volume {srv}/models:/models), which does not exist"
    code, out, _ = run(capsys, "-c", path, "validate", "--offline")
    assert code == 0 and f"instance.big.server.model: warning: {message}" in out
    code, out, _ = run(capsys, "-c", path, "validate")
    assert code == 2 and f"instance.big.server.model: error: {message}" in out


def test_validate_json_offline_lists_host_facts_as_warnings(capsys, laptop):
    path, srv = laptop
    code, out, _ = run(capsys, "-c", path, "validate", "--offline", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] is True
    host = [p for p in doc["problems"] if "does not exist" in p["message"]]
    assert {p["severity"] for p in host} == {"warning"} and len(host) == 2


def test_compose_without_offline_and_without_an_engine_says_why_the_image_was_not_asked(capsys, laptop):
    path, _ = laptop
    code, out, err = run(capsys, "-c", path, "compose")
    assert code == 0 and out.startswith("#")
    assert "vLLM options: image check skipped (cannot reach the Docker engine" in err


def test_the_demo_config_exports_before_its_model_is_made(capsys, tmp_path, monkeypatch):
    """scripts/demo.sh makes ../.demo/models; a reviewer's checkout has none of it."""
    monkeypatch.setenv("DOCKER_HOST", NOWHERE)
    configs = tmp_path / "configs"
    configs.mkdir()
    shutil.copy(CONFIGS / "demo.toml", configs / "demo.toml")
    for command in REVIEWS:
        code, _, err = run(capsys, "-c", configs / "demo.toml", *command)
        assert code == 0, (command, err)
    assert not (tmp_path / ".demo").exists()
