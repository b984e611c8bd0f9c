"""`ps`: one row per container of the project and per configured instance that has none, with
what the engine's list call says (state, exit code, uptime, health), and /health asked directly
where Docker's own check may lag."""

from __future__ import annotations

import pytest

from orchestrator.compose import OWNER_COMPOSE
from orchestrator.status import ask_health, connect_url, exit_code, ps_rows, uptime
from tests.builders import config, containers_of, instances, observed_for


@pytest.mark.parametrize("status, shown", [
    ("Up 3 minutes", "3 minutes"),
    ("Up About an hour (healthy)", "About an hour"),
    ("Up 2 seconds (health: starting)", "2 seconds"),
    ("Up 5 days (unhealthy)", "5 days"),
    ("Up Less than a second", "Less than a second"),
    ("Exited (0) 3 minutes ago", ""),
    ("Created", ""),
    ("Restarting (1) 4 seconds ago", ""),
])
def test_uptime_is_read_from_the_status_without_the_health_word(status, shown):
    assert uptime(status) == shown


def test_the_uptime_of_a_paused_container_is_its_time_only():
    assert uptime("Up 5 minutes (Paused)") == "5 minutes"


@pytest.mark.parametrize("status, code", [
    ("Exited (137) 5 seconds ago", 137), ("Exited (-1) 2 hours ago", -1), ("Up 1 second", None), ("Dead", None),
])
def test_exit_code_of_a_stopped_container(status, code):
    assert exit_code(status) == code


@pytest.fixture
def specs(tmp_path):
    text = config("chat", "embed", "spare", control='gpu_ids = "none"') + """
[instance.spare.control]
enabled = false
[instance.chat.control]
gpu_ids = "0,1"
"""
    return {s.name: s for s in instances(text, tmp_path)}


def test_rows_join_containers_with_configured_instances(specs):
    chat = observed_for(specs["chat"], status="Up 2 minutes (healthy)")
    crashed = observed_for(specs["embed"], state="exited", status="Exited (137) 10 seconds ago")
    rows = {r["name"]: r for r in ps_rows([crashed, chat], list(specs.values()), containers_of(list(specs.values())))}
    assert list(rows) == ["chat", "embed", "spare"]  # containers by name, then what has none
    assert rows["chat"] == {
        "name": "chat", "container": "fleet-chat", "owner": "vllm-orch", "state": "running", "exit_code": None,
        "health": "healthy", "gpus": "0,1", "url": "http://127.0.0.1:8001", "model": "/m",
        "uptime": "2 minutes", "status": "Up 2 minutes (healthy)", "configured": True, "cause": None,
        "restarts": 0, "last_restart": None,  # watch's record (none here)
    }
    assert (rows["embed"]["state"], rows["embed"]["exit_code"], rows["embed"]["uptime"]) == ("exited", 137, "")
    assert rows["spare"]["state"] == "disabled" and rows["spare"]["container"] == "fleet-spare"


def test_a_configured_instance_without_a_container_says_not_created_with_its_url_and_gpus(specs):
    rows = {r["name"]: r for r in ps_rows([], [specs["chat"], specs["embed"]], containers_of([specs["chat"], specs["embed"]]))}
    assert rows["chat"]["state"] == "not created" and rows["chat"]["gpus"] == "0,1"
    assert rows["embed"]["url"] == "http://127.0.0.1:8002" and rows["embed"]["gpus"] == "none"
    assert rows["chat"]["owner"] == "" and rows["chat"]["exit_code"] is None


def test_containers_no_longer_in_the_config_and_exported_ones_are_shown_as_such(specs):
    gone = observed_for(specs["chat"]).replace(instance="old", name="fleet-old")
    exported = observed_for(specs["chat"]).replace(owner=OWNER_COMPOSE, name="fleet-chat-1")
    rows = ps_rows([gone, exported], [specs["chat"]], containers_of([specs["chat"]]))
    assert [(r["name"], r["owner"], r["configured"]) for r in rows] == [
        ("chat", OWNER_COMPOSE, True), ("old", "vllm-orch", False)]


def row(health: str, url: str = "http://127.0.0.1:8001", state: str = "running") -> dict:
    return {"state": state, "health": health, "url": url}


def test_ask_health_asks_starting_rows_of_a_local_engine_at_once_and_marks_whose_word_it_is():
    rows = [row("starting"), row("starting", "http://0.0.0.0:8002"), row("healthy"), row(""),
            row("starting", state="exited"), row("starting", url="")]
    asked: list[list[str]] = []

    def probe_many(urls):
        asked.append(urls)
        return [True, False]

    ask_health(rows, probe_many, local=True)
    assert asked == [["http://127.0.0.1:8001", "http://127.0.0.1:8002"]]  # one round, wildcard on loopback
    assert [(r["health"], r["health_from"]) for r in rows] == [
        ("healthy", "/health"), ("starting", "/health"), ("healthy", "docker"), ("", ""),
        ("starting", "docker"), ("starting", "docker")]


def test_ask_health_never_probes_the_ports_of_a_remote_engine():
    rows = [row("starting")]
    ask_health(rows, lambda urls: pytest.fail(f"probed {urls}"), local=False)
    assert rows[0]["health"] == "starting"
    assert rows[0]["health_from"].startswith("docker (the engine is on another machine")


def test_ask_health_without_starting_rows_asks_nothing():
    rows = [row("healthy"), row("")]
    ask_health(rows, lambda urls: pytest.fail(f"probed {urls}"), local=True)
    assert [r["health_from"] for r in rows] == ["docker", ""]


@pytest.mark.parametrize("url, reached", [
    ("http://0.0.0.0:8000", "http://127.0.0.1:8000"),
    ("http://[::]:8000", "http://127.0.0.1:8000"),
    ("http://10.0.0.5:8000", "http://10.0.0.5:8000"),
])
def test_connect_url_reaches_a_wildcard_bind_on_loopback(url, reached):
    assert connect_url(url) == reached
