"""The one interface the workflows drive (backends/base.py): both backends implement it, one
function names them, and a workflow written against it alone starts, lists and stops instances.

The local backend runs real, short-lived processes (`python -c`, as test_local_backend.py does:
the server stand-in is a Python sleep that exits cleanly on SIGTERM); the Docker backend runs
against the in-memory engine of fake_engine.py (tests/integration drives the real engine)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.backends.base import BACKENDS, DOCKER, LOCAL, Backend, Removal, backend_for
from orchestrator.backends.docker import ContainerRun, DockerBackend
from orchestrator.backends.local import DISABLED, RUNNING, START, LaunchRun, LocalBackend, proc_stat
from orchestrator.errors import OrchestratorError
from orchestrator.plan import CREATE, NOOP
from orchestrator.spec import GpuRequest, InstanceSpec
from tests.builders import config, container_of, resolve_toml
from tests.unit.fake_engine import FakeEngine

SERVER = ("import signal, sys, time\n"
          "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
          "print('re' + 'ady', flush=True)\ntime.sleep(60)")


def process_spec(name: str, tmp: Path, *, enabled: bool = True) -> InstanceSpec:
    return InstanceSpec(name=name, enabled=enabled, background=True, log_file=str(tmp / "logs" / f"{name}.log"),
                        gpu=GpuRequest.parse(None), server={"model": f"m-{name}"},
                        command=(sys.executable, "-c", SERVER), env=(("PYTHONUNBUFFERED", "1"),), port=1,
                        host="127.0.0.1", disabled_by="" if enabled else "control.enabled")


def project(*specs: InstanceSpec, name: str = "unit") -> SimpleNamespace:
    return SimpleNamespace(name=name, resolved=SimpleNamespace(instances=list(specs), config_file="/x/fleet.toml"))


def wait_for_line(path: Path, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


@pytest.fixture
def local(tmp_path):
    backend = backend_for(LOCAL, state_dir=tmp_path / "state")
    yield backend
    for record in backend.store.records("unit"):  # nothing a test started may outlive it
        handle = record.handle()
        if handle:
            handle.send(9)
            handle.close()


# ---------------------------------------------------------------------- the interface
def test_both_backends_implement_it_and_backend_for_names_them(tmp_path):
    docker, local = backend_for(DOCKER, engine=FakeEngine()), backend_for(LOCAL, state_dir=tmp_path)
    assert isinstance(docker, DockerBackend) and isinstance(local, LocalBackend)
    assert isinstance(docker, Backend) and isinstance(local, Backend)
    assert (docker.name, local.name) == (DOCKER, LOCAL) and BACKENDS == (DOCKER, LOCAL)
    assert not isinstance(object(), Backend)


@pytest.mark.parametrize("name", ["kubernetes", "", "Docker", None])
def test_an_unknown_backend_is_one_clear_error(name):
    with pytest.raises(OrchestratorError) as caught:
        backend_for(name)
    assert str(caught.value) == f"unknown backend {name!r}: expected one of docker, local"


def test_the_cli_offers_exactly_the_backends_there_are(capsys):
    from orchestrator.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["ps", "--backend", "kubernetes"])
    assert caught.value.code == 2
    assert "invalid choice: 'kubernetes' (choose from 'docker', 'local')" in capsys.readouterr().err


# ---------------------------------------------------------------------- local, through the interface
def test_local_plan_apply_status_remove_through_the_interface(local: Backend, tmp_path):
    server, off = process_spec("server", tmp_path), process_spec("off", tmp_path, enabled=False)
    p = project(server, off)
    assert local.observe("unit") == []
    steps = local.plan(p, None, local.observe("unit"), LaunchRun())
    assert [(s.instance, s.kind) for s in steps] == [("off", DISABLED), ("server", START)]
    assert not local.log_file(p.resolved, server).exists()  # deciding started nothing
    assert local.missing_log(server, local.log_file(p.resolved, server)).startswith("no log yet for 'server'")

    said: list[str] = []
    assert local.preflight(p, steps, LaunchRun(said.append)) == []
    assert local.apply(p, steps, LaunchRun(said.append)) == 0
    wait_for_line(local.log_file(p.resolved, server), "\nready")  # the process runs and writes to its log
    [record] = local.observe("unit")
    assert record.instance == "server" and proc_stat(record.pid) is not None
    rows = {row["name"]: row for row in local.status("unit", p.resolved)}
    assert (rows["server"]["state"], rows["server"]["pid"]) == ("running", record.pid)
    assert rows["off"]["state"] == "disabled"
    # Planned again, it is left running rather than started twice.
    assert [(s.instance, s.kind) for s in local.plan(p, None, local.observe("unit"), LaunchRun())] == [
        ("off", DISABLED), ("server", RUNNING)]

    lines: list[str] = []
    removal = local.remove("unit", None, timeout=10, report=lines.append)
    assert isinstance(removal, Removal) and removal.json_key == "stopped" and removal.failure == ""
    assert [(r.ok, r.to_json()["name"], r.to_json()["result"]) for r in removal.results] == [
        (True, "server", "stopped")]
    assert lines[0].startswith(f"server: stopped (pid {record.pid}, SIGTERM")
    assert proc_stat(record.pid) is None and local.observe("unit") == []
    assert [r["state"] for r in local.status("unit", p.resolved)] == ["not started", "disabled"]
    assert local.remove("unit", None).results == []  # nothing left: the caller says "nothing to stop"


# ---------------------------------------------------------------------- Docker, through the interface
def test_docker_plan_apply_status_remove_through_the_interface(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_ORCH_STATE_DIR", str(tmp_path / "state"))  # remove takes the run lock there
    images = {"img:1": "sha256:" + "a" * 64}
    docker: Backend = backend_for(DOCKER, engine=FakeEngine(images))
    resolved = resolve_toml(config("a", control='gpu_ids = "none"'), tmp_path)
    specs = resolved.instances
    p = SimpleNamespace(name="fleet", resolved=resolved)

    actions = docker.plan(p, None, docker.observe("fleet"), ContainerRun(images))
    assert [(a.kind, a.instance) for a in actions] == [(CREATE, "a")]
    assert docker.log_file(p.resolved, specs[0]) == Path(container_of(specs[0]).host_log_file)
    [result] = docker.apply(p, actions, ContainerRun(images))
    assert result.ok and result.line() == "a: created"
    assert [(a.kind, a.instance) for a in docker.plan(p, None, docker.observe("fleet"), ContainerRun(images))] == [
        (NOOP, "a")]
    [row] = docker.status("fleet", p.resolved)
    assert (row["name"], row["state"]) == ("a", "running")

    lines: list[str] = []
    removal = docker.remove("fleet", None, config_file=p.resolved.config_file, report=lines.append)
    assert removal.json_key == "removed" and removal.failure == "" and removal.left == {}
    assert lines == ["a: stopped and removed (exit code 0)"]
    assert docker.observe("fleet") == []
