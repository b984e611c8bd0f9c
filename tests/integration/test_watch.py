"""`vllm-orch watch` on the real engine with the stand-in server: an instance whose /health fails
is restarted (same container), recorded, and shown by `ps` and `logs --restarts`; a healthy one
and a container that is not ours are never touched; a crash loop is backed off and reported; a
second watch refuses to run; SIGTERM ends it cleanly.

The stand-in's /health fails on demand (POST /standin/fail-health: until the process ends, so a
restart heals it; the file /tmp/standin-unhealthy: survives a restart, a crash loop). Docker's own
health check (every second here, 3 retries) is what marks it unhealthy, as with a real vLLM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.integration.conftest import STANDIN_IMAGE, free_port

pytestmark = pytest.mark.docker

FAST = """
    health_start_period = 0
    restart_unhealthy_after = 2
    """


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    """The run lock and watch's lock in the test's own directory (shared by the CLI in-process
    and the watch subprocess)."""
    directory = tmp_path / "state"
    monkeypatch.setenv("VLLM_ORCH_STATE_DIR", str(directory))
    return directory


def start_watch(fleet, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator", "-c", str(fleet.path), "watch", "--interval",
                             "0.5", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ))


def stop_watch(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=30)
    return process.returncode, err


def fail_health(port: int) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/standin/fail-health", data=b"", method="POST")
    urllib.request.urlopen(request, timeout=5).read()


def started_at(container) -> str:
    container.reload()
    return container.attrs["State"]["StartedAt"]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def health(container) -> str:
    container.reload()
    return container.attrs["State"].get("Health", {}).get("Status", "")


def test_restarts_only_the_unhealthy_instance_of_its_own_and_records_it(fleet, state_dir):
    sick_port, well_port, foreign_port = free_port(), free_port(), free_port()
    fleet.write(f"""
        [instance.control]
        gpu_ids = "none"
        [instance.server]
        host = "0.0.0.0"
        model = "/m"
        [instance.sick.server]
        port = {sick_port}
        [instance.well.server]
        port = {well_port}
        """, docker_extra=FAST)
    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 0, err
    sick, well = fleet.container("sick"), fleet.container("well")
    # Not ours: a Compose-export container of the same project (another owner), failing too.
    foreign = fleet.client.containers.run(
        STANDIN_IMAGE, ["python", "-m", "standin_vllm.api_server", "--port", "8000"], detach=True,
        ports={"8000/tcp": ("127.0.0.1", foreign_port)},
        labels={"io.vllm-orch.project": fleet.name, "io.vllm-orch.instance": "sick", "io.vllm-orch.owner": "compose"},
        healthcheck={"test": ["CMD", "python3", "-c", "import urllib.request as u; "
                              "u.urlopen('http://127.0.0.1:8000/health', timeout=2)"],
                     "interval": 1_000_000_000, "retries": 1})
    wait_for(lambda: health(foreign) == "healthy", 30, "the foreign container's health")
    before = {c.id: started_at(c) for c in (sick, well, foreign)}
    watcher = start_watch(fleet)
    try:
        fail_health(sick_port)
        fail_health(foreign_port)
        wait_for(lambda: started_at(sick) != before[sick.id], 60, "the restart of the unhealthy instance")
        wait_for(lambda: health(sick) == "healthy", 60, "the restarted instance to be healthy again")
        time.sleep(4)  # a few more rounds: nothing else may be touched meanwhile
        assert started_at(well) == before[well.id]
        assert health(foreign) == "unhealthy" and started_at(foreign) == before[foreign.id]
    finally:
        code, err = stop_watch(watcher)
        foreign.remove(force=True)
    assert code == 0, err
    assert "watch stopped" in err and "sick: restarting container" in err
    assert fleet.container("sick").id == sick.id  # the same container: caches and log kept

    rows = {r["name"]: r for r in fleet.cli_json("ps")["instances"] if r["owner"] == "vllm-orch"}
    assert rows["sick"]["restarts"] == 1 and "/health failing" in rows["sick"]["last_restart"]
    assert rows["well"]["restarts"] == 0 and rows["well"]["last_restart"] is None
    code, out, _ = fleet.cli("ps")
    assert "RESTARTS" in out and "last restart by watch" in out
    code, out, _ = fleet.cli("logs", "sick", "--restarts")
    assert code == 0 and "restart" in out and "/health failing" in out
    assert "standin: /health fails from now on" in out  # the log lines from before the restart
    [record] = json.loads(fleet.cli("logs", "sick", "--restarts", "--json")[1])["restarts"]
    assert record["container"] == sick.name and record["action"] == "restart"
    # the log file goes on across the restart: two starts in one file
    assert fleet.log_file("sick").read_text().count("STANDIN-START") == 2


def test_a_crash_loop_is_backed_off_then_reported_not_hammered(fleet, state_dir):
    port = free_port()
    fleet.write(f"""
        [instance.control]
        gpu_ids = "none"
        [instance.server]
        host = "0.0.0.0"
        model = "/m"
        [instance.loop.server]
        port = {port}
        """, docker_extra=FAST)
    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 0, err
    loop = fleet.container("loop")
    loop.exec_run(["touch", "/tmp/standin-unhealthy"])  # in the container's own layer: survives a restart
    watcher = start_watch(fleet, "--backoff", "3", "--max-restarts", "2")
    try:
        records = lambda: [json.loads(line) for line in  # noqa: E731
                           (fleet.dir / "logs" / "vllm-server-loop.restarts.jsonl").read_text().splitlines()] \
            if (fleet.dir / "logs" / "vllm-server-loop.restarts.jsonl").exists() else []
        wait_for(lambda: any(r["action"] == "gave up" for r in records()), 120, "the crash-loop report")
        time.sleep(6)  # it must stay given up
        done = records()
    finally:
        code, err = stop_watch(watcher)
    assert code == 0, err
    assert [r["action"] for r in done] == ["restart", "restart", "gave up"]
    first, second = (time.mktime(time.strptime(r["time"], "%Y-%m-%dT%H:%M:%SZ")) for r in done[:2])
    assert second - first >= 3  # the backoff held the second one back
    assert "crash loop" in err
    [row] = fleet.cli_json("ps")["instances"]
    assert row["restarts"] == 2 and "crash loop" in row["last_restart"]


def test_a_second_watch_refuses_with_one_line(fleet, state_dir):
    fleet.write(f"""
        [instance.control]
        gpu_ids = "none"
        [instance.a.server]
        model = "/m"
        port = {free_port()}
        """)
    first = start_watch(fleet)
    try:
        time.sleep(2)  # it holds the lock once it says so
        second = subprocess.run([sys.executable, "-m", "orchestrator", "-c", str(fleet.path), "watch"],
                                capture_output=True, text=True, timeout=60)
        assert second.returncode != 0
        assert second.stderr.strip().splitlines()[-1].startswith("vllm-orch: error: another vllm-orch watch")
        assert str(first.pid) in second.stderr
    finally:
        code, err = stop_watch(first)
    assert code == 0 and "watch stopped" in err
