"""`[monitoring]` over real vLLM (the CPU build, tiny model): configs/demo.toml's Prometheus (real,
Debian's 2.42) scrapes real servers and the real gateway. After a few real requests, EVERY PromQL
expression of the dashboard and of the rules must return data from it: a renamed metric cannot
leave a panel blank unnoticed. Then an instance is added and removed: only the targets change.
The tests run in file order on one deployment."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid

import docker
import pytest

from orchestrator.cli import main
from orchestrator.monitoring import checks, dashboard, rules
from tests.e2e.conftest import MODEL_DIR, REPO
from tests.integration.conftest import free_port

pytestmark = pytest.mark.vllm
DEMO = REPO / "configs" / "demo.toml"
KEY = "e2e-monitoring-key"


class Deployment:
    def __init__(self, tmp_path_factory, image: str):
        self.image = image
        self.project = "e2emon" + uuid.uuid4().hex[:6]
        self.ports = {"tiny_a": free_port(), "tiny_b": free_port()}
        self.gateway, self.prometheus = free_port(), free_port()
        self.dir = tmp_path_factory.mktemp("monitoring")
        self.with_b = False

    def args(self) -> list[str]:
        args = ["-c", str(DEMO), "--set", f"docker.project={self.project}",
                "--set", f'docker.log_host_dir="{self.dir / "logs"}"',
                "--set", f'docker.cache_host_dir="{self.dir / "cache"}"',
                "--set", f'docker.volumes=["{MODEL_DIR}:/llm-models:ro"]',
                "--set", f"gateway.port={self.gateway}", "--set", f'gateway.api_key="{KEY}"',
                "--set", f"monitoring.port={self.prometheus}", "--set", 'monitoring.scrape_interval="1s"',
                "--set", f'monitoring.host_dir="{self.dir / "prometheus"}"',
                "--set", f"instance.tiny_b.control.enabled={'true' if self.with_b else 'false'}"]
        for name, port in self.ports.items():
            args += ["--set", f"instance.{name}.server.port={port}"]
        return args

    def query(self, expr: str) -> list[dict]:
        url = f"http://127.0.0.1:{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as answer:
            found = json.loads(answer.read())
        assert found["status"] == "success", found
        return found["data"]["result"]

    def targets(self) -> dict[tuple[str, str], str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.prometheus}/api/v1/targets", timeout=10) as answer:
            active = json.loads(answer.read())["data"]["activeTargets"]
        return {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in active}

    def wait_targets(self, wanted: dict, timeout: float = 60.0) -> None:
        deadline, seen = time.monotonic() + timeout, {}
        while time.monotonic() < deadline:
            seen = self.targets()
            if seen == wanted:
                return
            time.sleep(0.5)
        raise AssertionError(f"Prometheus' targets {seen}, never {wanted}")

    def prometheus_id(self) -> str:
        client = docker.from_env(version="auto")
        (found,) = client.containers.list(filters={"label": [f"io.vllm-orch.project={self.project}",
                                                             "io.vllm-orch.role=monitoring"]})
        return found.id


@pytest.fixture(scope="module")
def mon(vllm_image, tmp_path_factory):
    deployment = Deployment(tmp_path_factory, vllm_image)
    yield deployment
    client = docker.from_env(version="auto")
    for container in client.containers.list(all=True, filters={"label": f"io.vllm-orch.project={deployment.project}"}):
        container.remove(force=True)


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def complete(port: int, prompt: str, *, key: str | None = None, model: str = "tiny-a") -> None:
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": 8, "temperature": 0}).encode()
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=120) as answer:
        assert answer.status == 200


def test_up_runs_prometheus_and_every_server_and_the_gateway_are_up_targets(mon, capsys):
    code, _, err = run(capsys, *mon.args(), "up", "--wait", "--timeout", "600")
    assert code == 0, err
    assert "monitoring: created" in err
    mon.wait_targets({("vllm", "tiny_a"): "up", ("gateway", "gateway"): "up"})
    # `up --wait` recorded what this image's real vLLM exports: every name the dashboard and the
    # rules read is among it, so validate has nothing to say about metrics.
    recorded = checks.cached_recording(mon.image)
    assert "vllm:kv_cache_usage_perc" in json.loads(recorded.read_text())["families"]
    code, out, err = run(capsys, *mon.args(), "validate")
    assert code == 0 and "will have no data" not in out + err, out + err


def test_every_dashboard_and_rule_expression_returns_data_from_real_vllm(mon):
    shared = "The quick brown fox jumps over the lazy dog. " * 3  # repeated: prefix cache hits
    for number in range(4):
        complete(mon.ports["tiny_a"], shared + str(number))
    complete(mon.gateway, shared + "via the gateway", key=KEY)
    time.sleep(4)  # a few 1 s scrapes and rule evaluations after the requests
    expressions = {**{f"dashboard: {k}": v for k, v in dashboard.expressions("1m").items()},
                   **{f"rules: {k}": v for k, v in rules.expressions().items()}}
    deadline = time.monotonic() + 30
    empty = list(expressions)
    while empty and time.monotonic() < deadline:
        empty = [name for name in empty if not mon.query(expressions[name])]
        if empty:
            time.sleep(1)
    assert not empty, "no data for: " + "; ".join(f"{n}: {expressions[n]}" for n in empty)
    # The numbers are the servers': the prompt tokens counted, one model and instance per series.
    (kv,) = mon.query(rules.RECORDINGS[2].record)
    assert kv["metric"]["model"] == "tiny-a" and kv["metric"]["instance"] == "tiny_a"
    prompt_tokens = mon.query('sum(vllm:prompt_tokens_total{job="vllm"})')
    assert float(prompt_tokens[0]["value"][1]) > 0
    assert mon.query('up{job="gateway"}')[0]["value"][1] == "1"  # scraped with its key (a file)


def test_an_instance_added_and_removed_changes_only_the_targets(mon, capsys):
    before = mon.prometheus_id()
    mon.with_b = True
    code, out, err = run(capsys, *mon.args(), "up", "--dry-run")
    assert "retarget monitoring: targets: + tiny_b" in out + err, out + err
    code, _, err = run(capsys, *mon.args(), "up", "--wait", "--timeout", "600")
    assert code == 0, err
    mon.wait_targets({("vllm", "tiny_a"): "up", ("vllm", "tiny_b"): "up", ("gateway", "gateway"): "up"})
    assert mon.prometheus_id() == before
    complete(mon.ports["tiny_b"], "hello", model="tiny-b")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not mon.query('vllm:num_requests_running{instance="tiny_b"}'):
        time.sleep(1)
    assert mon.query('vllm:num_requests_running{instance="tiny_b"}')[0]["metric"]["model"] == "tiny-b"
    mon.with_b = False
    code, _, err = run(capsys, *mon.args(), "up")
    assert code == 0, err
    mon.wait_targets({("vllm", "tiny_a"): "up", ("gateway", "gateway"): "up"})
    assert mon.prometheus_id() == before
    code, _, err = run(capsys, *mon.args(), "down")
    assert code == 0 and "monitoring: stopped and removed (its data dir is kept)" in err
    assert (mon.dir / "prometheus" / mon.project / "data" / "wal").is_dir()
