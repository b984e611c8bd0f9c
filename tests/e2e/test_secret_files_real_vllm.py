"""Secrets as files with the real vLLM CPU build: the API key reaches vLLM only through the log
wrapper reading /run/secrets/VLLM_API_KEY (vLLM then refuses requests without it), the Hugging
Face token is a file named by HF_TOKEN_PATH, and `docker inspect` shows neither."""

from __future__ import annotations

import json
import os
import uuid

import docker
import pytest

from orchestrator.cli import main
from tests.e2e.conftest import MODEL_DIR, REPO
from tests.integration.conftest import free_port, http_json

pytestmark = pytest.mark.vllm
DEMO = REPO / "configs" / "demo.toml"
API_KEY = "sk-e2e-files-61f0"
HF_TOKEN = "hf_e2e_files_2b9c"


def test_real_vllm_requires_the_key_it_read_from_its_file(vllm_image, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    project, port = "e2esec" + uuid.uuid4().hex[:6], free_port()
    args = ["-c", str(DEMO), "--set", f"docker.project={project}", "--set", f'docker.log_host_dir="{tmp_path / "logs"}"',
            "--set", f'docker.cache_host_dir="{tmp_path / "cache"}"',
            "--set", f'docker.volumes=["{MODEL_DIR}:/llm-models:ro"]', "--set", 'docker.secret_env=["HF_TOKEN"]',
            "--set", f'instance.server.api_key="{API_KEY}"', "--set", f"instance.tiny_a.server.port={port}",
            "--set", "instance.tiny_b.control.enabled=false", "--set", "monitoring.enabled=false"]
    client = docker.from_env(version="auto")
    try:
        assert main([*args, "up", "--wait", "--timeout", "300"]) == 0, capsys.readouterr().err
        out, err = capsys.readouterr()
        assert API_KEY not in out + err
        (container,) = client.containers.list(filters={"label": f"io.vllm-orch.project={project}"})
        inspect = json.dumps(container.attrs)
        assert API_KEY not in inspect and HF_TOKEN not in inspect
        assert http_json(f"http://127.0.0.1:{port}/v1/models")[0] == 401
        status, models = http_json(f"http://127.0.0.1:{port}/v1/models", {"Authorization": f"Bearer {API_KEY}"})
        assert status == 200 and [m["id"] for m in models["data"]] == ["tiny-a"]
        code, token = container.exec_run(["sh", "-c", 'cat "$HF_TOKEN_PATH"'])
        assert code == 0 and token.decode() == HF_TOKEN
        assert main([*args, "down"]) == 0
        assert not os.path.exists(os.path.join(os.environ["VLLM_ORCH_SECRETS_DIR"], project))  # files removed
    finally:
        for container in client.containers.list(all=True, filters={"label": f"io.vllm-orch.project={project}"}):
            container.remove(force=True)
