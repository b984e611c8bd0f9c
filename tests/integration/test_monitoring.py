"""`[monitoring]` on the real engine: real Prometheus (Debian's 2.42, in vllm-orch/monitoring) run
by `up` over stand-in servers (tests/images/standin: not vLLM; they serve a few of vLLM's metrics
on /metrics) and the real gateway (HAProxy, its /metrics behind its API key). Also `promtool check
rules` and `promtool test rules` of the shipped rules, inside the same image."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from orchestrator.monitoring import rules
from tests.integration.conftest import free_port

pytestmark = pytest.mark.docker

MONITORING_IMAGE = os.environ.get("VLLM_ORCH_MONITORING_IMAGE", "vllm-orch/monitoring:latest")
GATEWAY_IMAGE = os.environ.get("VLLM_ORCH_GATEWAY_IMAGE", "vllm-orch/gateway:latest")
KEY = "mon-gw-key-71c2"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "monitoring" / "rules-test.yml"


@pytest.fixture(autouse=True)
def _images(engine):
    import docker

    for image in (MONITORING_IMAGE, GATEWAY_IMAGE):
        try:
            engine.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"image {image} missing; scripts/build-images.sh monitoring gateway builds it")


def write(fleet, *, names=("a", "b"), interval: str = "1s", extra: str = "", gateway: bool = True,
          image: str = MONITORING_IMAGE) -> None:
    if not hasattr(fleet, "prom_port"):
        fleet.prom_port, fleet.gw_port = free_port(), free_port()
        fleet.ports = {}
    body = f"""
        [instance.control]
        gpu_ids = "none"
        [instance.server]
        model = "/m"
        [monitoring]
        port = {fleet.prom_port}
        scrape_interval = "{interval}"
        image = "{image}"
        {extra}
        """
    if gateway:
        body += f"""
        [gateway]
        port = {fleet.gw_port}
        image = "{GATEWAY_IMAGE}"
        api_key = "{KEY}"
        """
    for name in names:
        port = fleet.ports.setdefault(name, free_port())
        body += f"""
        [instance.{name}.server]
        served_model_name = "m-{name}"
        port = {port}
        """
    fleet.write(body)


def prom(fleet, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{fleet.prom_port}{path}", timeout=5) as answer:
        return json.loads(answer.read())


def targets(fleet) -> dict[tuple[str, str], str]:
    """(job, instance label) -> health, of Prometheus' active targets."""
    found = prom(fleet, "/api/v1/targets")["data"]["activeTargets"]
    return {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in found}


def wait_targets(fleet, wanted: dict[tuple[str, str], str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    seen: dict = {}
    while time.monotonic() < deadline:
        try:
            seen = targets(fleet)
        except OSError:
            seen = {}
        if seen == wanted:
            return
        time.sleep(0.5)
    raise AssertionError(f"targets {seen} never became {wanted}")


def up(fleet, *args: str) -> str:
    code, out, err = fleet.cli("up", "--wait", "--timeout", "120", *args)
    assert code == 0, err
    return out + err


def host_dir(fleet) -> Path:
    return fleet.dir / ".vllm-orch" / "monitoring" / fleet.name


def prometheus_container(fleet):
    found = [c for c in fleet.containers() if c.labels.get("io.vllm-orch.role") == "monitoring"]
    return found[0] if found else None


def test_up_runs_prometheus_over_every_instance_and_the_gateway_and_a_second_up_changes_nothing(fleet):
    write(fleet)
    out = up(fleet)
    assert "monitoring: created" in out
    wait_targets(fleet, {("vllm", "a"): "up", ("vllm", "b"): "up", ("gateway", "gateway"): "up"})
    container = prometheus_container(fleet)
    assert container.name == f"{fleet.name}-monitoring" and container.labels["io.vllm-orch.owner"] == "vllm-orch"
    # The gateway's key reaches Prometheus as a file only: not in its config, argv or environment.
    inspected = json.dumps(container.attrs)
    assert KEY not in inspected and KEY not in (host_dir(fleet) / "config" / "prometheus.yml").read_text()
    rows = {r["name"]: r for r in fleet.cli_json("ps")["instances"]}
    assert rows["monitoring"]["state"] == "running" and rows["monitoring"]["health"] == "healthy"
    # Labels a dashboard filters by, on vLLM's own metric (the stand-in exports it under vLLM's name).
    result = prom(fleet, "/api/v1/query?query=vllm:num_requests_running")["data"]["result"]
    assert {(r["metric"]["project"], r["metric"]["model"], r["metric"]["instance"]) for r in result} == {
        (fleet.name, "m-a", "a"), (fleet.name, "m-b", "b")}
    page = urllib.request.urlopen(f"http://127.0.0.1:{fleet.prom_port}/classic/targets", timeout=5).read().decode()
    assert "vllm" in page and "gateway" in page  # the page the demo points a newcomer to
    # `up --wait` recorded what the image's servers export: the stand-in has no prefix cache, ITL or
    # end-to-end latency metrics, and validate says which panels that leaves without data.
    code, out, err = fleet.cli("validate")
    for missing in ("prefix cache hits", "itl", "e2e latency"):
        assert f"the dashboard's and rules' {missing} will have no data" in out + err, out + err
    assert "kv cache usage will" not in out + err
    code, out, err = fleet.cli("up", "--dry-run")
    assert code == 0 and "noop monitoring: up to date" in out + err, out + err
    code, out, err = fleet.cli("up")
    assert code == 0 and "nothing to do" in out + err, out + err
    assert prometheus_container(fleet).id == container.id


def test_the_activator_is_scraped_and_counts_a_first_request_start_per_model(fleet):
    """With an on-demand instance, Prometheus also scrapes the activator: the cold start a first
    request caused is a per-model series there."""
    fleet.prom_port, fleet.gw_port = free_port(), free_port()
    fleet.write(f"""
        [instance.control]
        gpu_ids = "none"
        [instance.server]
        model = "/m"
        [monitoring]
        port = {fleet.prom_port}
        scrape_interval = "1s"
        image = "{MONITORING_IMAGE}"
        [gateway]
        port = {fleet.gw_port}
        image = "{GATEWAY_IMAGE}"
        [instance.a.docker]
        on_demand = true
        [instance.a.server]
        served_model_name = "m-a"
        port = {free_port()}
        """)
    up(fleet)
    wait_targets(fleet, {("vllm", "a"): "down", ("gateway", "gateway"): "up", ("activator", "activator"): "up"})
    body = json.dumps({"model": "m-a", "prompt": "hi", "max_tokens": 2}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{fleet.gw_port}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200
    deadline, found = time.monotonic() + 30, []
    while time.monotonic() < deadline and not found:
        found = prom(fleet, "/api/v1/query?query=vllm_orch_activator_cold_start_seconds")["data"]["result"]
        time.sleep(0.5)
    assert [(r["metric"]["model"], r["metric"]["job"]) for r in found] == [("m-a", "activator")], found
    assert float(found[0]["value"][1]) > 0
    wait_targets(fleet, {("vllm", "a"): "up", ("gateway", "gateway"): "up", ("activator", "activator"): "up"})
    # Both side containers' output through `logs`, as the instances' and the gateway's.
    code, out, err = fleet.cli("logs", "activator")
    assert code == 0 and "a (m-a): starting for a request" in out and "a (m-a): serving after" in out, err
    code, out, err = fleet.cli("logs", "monitoring", "-n", "200")
    assert code == 0 and "Server is ready to receive web requests" in out, err


def test_adding_and_removing_an_instance_changes_only_the_targets_file(fleet):
    write(fleet, gateway=False)
    up(fleet)
    wait_targets(fleet, {("vllm", "a"): "up", ("vllm", "b"): "up"})
    ids = {c.name: c.id for c in fleet.containers()}
    config = host_dir(fleet) / "config" / "prometheus.yml"
    before = config.stat()
    loaded = prom(fleet, "/api/v1/status/runtimeinfo")["data"]["lastConfigTime"]
    write(fleet, names=("a", "b", "c"), gateway=False)
    code, out, err = fleet.cli("up", "--dry-run")
    assert "retarget monitoring: targets: + c" in out + err, out + err
    out = up(fleet)
    assert "monitoring: targets written" in out
    wait_targets(fleet, {("vllm", "a"): "up", ("vllm", "b"): "up", ("vllm", "c"): "up"})
    write(fleet, names=("a", "c"), gateway=False)
    up(fleet, "--remove-orphans")
    wait_targets(fleet, {("vllm", "a"): "up", ("vllm", "c"): "up"})
    after = {c.name: c.id for c in fleet.containers()}
    for name in (f"{fleet.name}-monitoring", f"{fleet.name}-a"):
        assert after[name] == ids[name], f"{name} was recreated"
    assert config.stat().st_ino == before.st_ino and config.stat().st_mtime == before.st_mtime
    assert prom(fleet, "/api/v1/status/runtimeinfo")["data"]["lastConfigTime"] == loaded  # no reload either


def test_a_new_scrape_interval_reloads_in_place_and_a_new_retention_recreates_prometheus_alone(fleet):
    write(fleet, names=("a",), gateway=False)
    up(fleet)
    container = prometheus_container(fleet)
    instance = fleet.container("a").id
    write(fleet, names=("a",), interval="2s", gateway=False)
    code, out, err = fleet.cli("up", "--dry-run")
    assert "reload monitoring: prometheus.yml changed" in out + err, out + err
    out = up(fleet)
    assert "monitoring: reloaded in place" in out
    assert prometheus_container(fleet).id == container.id
    assert "scrape_interval: 2s" in prom(fleet, "/api/v1/status/config")["data"]["yaml"]
    write(fleet, names=("a",), interval="2s", extra='retention = "2d"', gateway=False)
    out = up(fleet)
    assert "monitoring: recreated" in out
    assert prometheus_container(fleet).id != container.id and fleet.container("a").id == instance
    assert prom(fleet, "/api/v1/status/flags")["data"]["storage.tsdb.retention.time"] == "2d"


def test_down_removes_prometheus_and_keeps_its_data_dir(fleet):
    write(fleet, names=("a",), gateway=False)
    up(fleet)
    wait_targets(fleet, {("vllm", "a"): "up"})
    code, out, err = fleet.cli("down")
    assert code == 0 and "monitoring: stopped and removed (its data dir is kept)" in out + err
    assert prometheus_container(fleet) is None
    assert (host_dir(fleet) / "data" / "wal").is_dir()
    up(fleet)  # the same data dir, taken up again by a new container
    wait_targets(fleet, {("vllm", "a"): "up"})


def test_a_busy_port_and_a_missing_image_stop_up_before_anything_starts(fleet):
    write(fleet, names=("a",), gateway=False)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", fleet.prom_port))
        taken.listen(1)
        code, out, err = fleet.cli("up")
    assert code == 4 and f"monitoring: host port 127.0.0.1:{fleet.prom_port} is not free" in err, err
    assert fleet.containers() == []
    write(fleet, names=("a",), gateway=False, image="vllm-orch/monitoring:no-such-tag")
    code, out, err = fleet.cli("up")
    assert code == 4 and "scripts/build-images.sh monitoring" in err, err
    assert fleet.containers() == []


def test_promtool_checks_the_rules_and_their_unit_tests_pass(tmp_path):
    shutil.copy(FIXTURE, tmp_path / "rules-test.yml")
    (tmp_path / "rules.yml").write_text(rules.text())
    base = ["docker", "run", "--rm", "--network", "none", "--user", f"{os.getuid()}:{os.getgid()}",
            "--entrypoint", "promtool", "-v", f"{tmp_path}:/t:ro",
            "-w", "/t", MONITORING_IMAGE]
    checked = subprocess.run(base + ["check", "rules", "rules.yml"], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0 and f"SUCCESS: {len(rules.RECORDINGS) + len(rules.ALERTS)} rules found" in \
        checked.stdout, checked.stdout + checked.stderr
    tested = subprocess.run(base + ["test", "rules", "rules-test.yml"], capture_output=True, text=True, timeout=120)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
