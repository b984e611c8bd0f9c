"""Instances that share a GPU start in turn through the real engine; the rest start together.

The host has no GPU: as in test_gpu_path.py, the stand-in `nvidia-container-runtime-hook` that
scripts/setup-host.sh puts on dockerd's PATH lets GPU containers start; nothing of CUDA is
emulated. What is checked is the order the engine started the containers in (State.StartedAt)
against when the first one answered /health (the stand-in's --standin-health-delay).
"""

from __future__ import annotations

from datetime import datetime

from tests.integration.conftest import free_port

HEALTH_DELAY_S = 3

CONFIG = """
[instance.server]
host = "0.0.0.0"
gpu_memory_utilization = 0.3

[instance.a.control]
gpu_ids = "0"
[instance.a.server]
port = {pa}
extra_args = {a_args}

[instance.b.control]
gpu_ids = "0"
[instance.b.server]
port = {pb}

[instance.c.control]
gpu_ids = "1"
[instance.c.server]
port = {pc}
"""


def write(fleet, a_args: str) -> None:
    fleet.write(CONFIG.format(pa=free_port(), pb=free_port(), pc=free_port(), a_args=a_args))


def started_at(fleet, name: str) -> float:
    stamp = fleet.container(name).attrs["State"]["StartedAt"]  # RFC 3339 with nanoseconds
    return datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00").timestamp()


def test_a_shared_gpu_starts_in_turn_and_the_dry_run_says_why(fleet):
    write(fleet, f'["--standin-health-delay", "{HEALTH_DELAY_S}"]')
    code, out, err = fleet.cli("up", "--dry-run")
    assert code == 0, err
    assert out.splitlines()[-1] == "start b after a: both on GPU 0"
    doc = fleet.cli_json("up", "--dry-run")
    assert doc["start_order"] == [{"instance": "b", "after": "a", "shared": "GPU 0",
                                   "reason": "start b after a: both on GPU 0"}]
    assert fleet.containers() == []  # a dry run changes nothing

    code, _, err = fleet.cli("up")  # no --wait: the chain alone makes up wait for a
    assert code == 0, err
    assert "start b after a: both on GPU 0" in err
    a, b, c = (started_at(fleet, name) for name in "abc")
    assert b - a >= HEALTH_DELAY_S, "b started before a answered /health"
    assert c - a < HEALTH_DELAY_S, "c (GPU 1) waited although it shares nothing"


def test_a_failure_early_in_the_chain_keeps_the_rest_of_it_from_starting(fleet):
    write(fleet, '["--standin-exit-code", "3"]')
    code, _, err = fleet.cli("up")
    lines = err.strip().splitlines()
    assert code != 0
    assert "b: FAILED: not started: it waits for a (both on GPU 0), which did not start: instance 'a' exited" in err
    assert lines[-1].startswith("vllm-orch: error: instance 'a' exited while waiting for it to become healthy (Exited (3)")
    assert {c.labels["io.vllm-orch.instance"] for c in fleet.containers()} == {"a", "c"}  # b never created
    assert fleet.container("c").status == "running"


def test_a_new_instance_waits_for_one_an_earlier_up_left_loading(fleet):
    """`up a`, then `up` while a is still loading: b (same GPU) starts only once a answers."""
    write(fleet, f'["--standin-health-delay", "{HEALTH_DELAY_S + 2}"]')
    code, _, err = fleet.cli("up", "a")  # nothing waits for a: returns while it loads
    assert code == 0, err
    a_id = fleet.container("a").id
    code, out, err = fleet.cli("up", "--dry-run")
    assert code == 0, err
    assert "start b after a: both on GPU 0" in out.splitlines()
    code, _, err = fleet.cli("up")
    assert code == 0, err
    assert fleet.container("a").id == a_id  # left as it was
    a, b = started_at(fleet, "a"), started_at(fleet, "b")
    assert b - a >= HEALTH_DELAY_S + 2, "b started while a was still loading"


def test_a_new_instance_starts_only_once_the_orphan_on_its_gpu_is_gone(fleet):
    """A renamed instance: `up --remove-orphans` removes the old container (which here takes its
    whole stop timeout: it ignores SIGTERM) before the new one on the same GPU starts."""
    import time

    fleet.write(f"""
        [instance.old.control]
        gpu_ids = "0"
        [instance.old.server]
        port = {free_port()}
        extra_args = ["--standin-ignore-sigterm"]
        [instance.old.docker]
        stop_timeout = 3
        """)
    code, _, err = fleet.cli("up", "--wait")
    assert code == 0, err
    fleet.write(f"""
        [instance.new.control]
        gpu_ids = "0"
        [instance.new.server]
        port = {free_port()}
        """)
    code, out, err = fleet.cli("up", "--remove-orphans", "--dry-run")
    assert code == 0, err
    assert "start new after removing old: both on GPU 0" in out.splitlines()
    before = time.time()
    code, _, err = fleet.cli("up", "--remove-orphans")
    assert code == 0, err
    assert started_at(fleet, "new") - before >= 3, "new started while old still held GPU 0"
    assert {c.labels["io.vllm-orch.instance"] for c in fleet.containers()} == {"new"}
