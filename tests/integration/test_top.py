"""`vllm-orch top --once` against stand-in servers on the real engine: numbers from each one's
/metrics (vLLM's names, and the older KV cache name), null for one that does not answer."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.integration.conftest import free_port

pytestmark = pytest.mark.docker


def test_top_once_json_and_text(fleet):
    ports = [free_port(), free_port(), free_port()]
    fleet.write(f"""
        [instance.control]
        gpu_ids = "none"
        [instance.server]
        host = "0.0.0.0"
        model = "/m"
        [instance.new.server]
        port = {ports[0]}
        [instance.old.server]
        port = {ports[1]}
        extra_args = ["--standin-old-metric-names"]
        [instance.gone.server]
        port = {ports[2]}
        [instance.hidden.docker]
        publish = false
        [instance.hidden.server]
        port = 8000
        """)
    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 0, err
    for _ in range(3):
        urllib.request.urlopen(urllib.request.Request(
            f"http://127.0.0.1:{ports[0]}/v1/completions", data=json.dumps({"prompt": "x"}).encode(),
            headers={"Content-Type": "application/json"}), timeout=5).read()
    fleet.container("gone").stop(timeout=5)

    doc = fleet.cli_json("top", "--once")
    assert doc["project"] == fleet.name
    rows = {r["name"]: r for r in doc["instances"]}
    assert set(rows) == {"new", "old", "gone", "hidden"}
    # Kept off the host (behind a gateway): read at its container's address, as Prometheus does.
    assert (rows["hidden"]["requests_running"], rows["hidden"]["kv_cache_usage"]) == (0, 0.0), rows["hidden"]
    assert (rows["new"]["requests_running"], rows["new"]["requests_waiting"]) == (0, 0)
    assert rows["new"]["kv_cache_usage"] == pytest.approx(0.03)  # the stand-in's: 1% per request served
    assert rows["new"]["ttft_p50_s"] is not None and rows["new"]["tokens_per_s"] is None  # one sample
    assert rows["old"]["kv_cache_usage"] == 0.0  # read under vllm:gpu_cache_usage_perc
    assert rows["gone"]["state"] == "exited"
    assert (rows["gone"]["requests_running"], rows["gone"]["requests_waiting"], rows["gone"]["kv_cache_usage"]) \
        == (None, None, None)

    doc = fleet.cli_json("top", "--once", "--window", "1")
    assert {r["name"]: r["tokens_per_s"] for r in doc["instances"]}["new"] == 0.0  # nothing generated meanwhile

    code, out, _ = fleet.cli("top", "--once")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["NAME", "STATE", "HEALTH", "MODEL"]
    assert any(line.startswith("new ") and "3.0%" in line for line in lines)


def test_top_live_view_needs_a_terminal(fleet):
    fleet.write(f"""
        [instance.control]
        gpu_ids = "none"
        [instance.a.server]
        model = "/m"
        port = {free_port()}
        """)
    code, _, err = fleet.cli("top")
    assert code != 0 and "needs a terminal" in err and len(err.strip().splitlines()) == 1
