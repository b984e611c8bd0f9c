"""One changing run per project and engine at a time: a second `up` or `down` of the same project
says that it waits, and starts only when the first has finished."""

from __future__ import annotations

import threading

import pytest

from orchestrator.errors import OrchestratorError
from orchestrator.run_lock import STATE_DIR_ENV, run_lock

ENGINE = "unix:///var/run/docker.sock"
WAIT_S = 5  # an upper bound for a hang, never reached when the lock works


def hold(project: str, env: dict, engine: str = ENGINE):
    """Take the lock in a thread of its own; returns (entered, release, thread, heard)."""
    entered, release, heard = threading.Event(), threading.Event(), []

    def run() -> None:
        with run_lock(project, engine, waiting=heard.append, env=env):
            entered.set()
            release.wait(WAIT_S)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return entered, release, thread, heard


def test_two_runs_of_one_project_take_turns_and_the_second_says_it_waits(tmp_path):
    env = {STATE_DIR_ENV: str(tmp_path)}
    order: list[str] = []
    first_in, release_first, first, _ = hold("fleet", env)
    assert first_in.wait(WAIT_S)

    heard: list[str] = []
    second_waits = threading.Event()

    def second() -> None:
        def waiting(message: str) -> None:
            heard.append(message)
            second_waits.set()

        with run_lock("fleet", ENGINE, waiting=waiting, env=env):
            order.append("second in")

    thread = threading.Thread(target=second, daemon=True)
    thread.start()
    assert second_waits.wait(WAIT_S)
    assert order == []  # it waits while the first holds the lock
    order.append("first out")
    release_first.set()
    first.join(WAIT_S)
    thread.join(WAIT_S)
    assert order == ["first out", "second in"]
    assert heard == ["waiting for another vllm-orch run on project 'fleet' to finish"]


@pytest.mark.parametrize("other_project, other_engine", [
    ("chat", ENGINE),  # another project on the same engine
    ("fleet", "ssh://gpu-2"),  # the same project name on another engine
    ("fleet_x", ENGINE),  # names that read alike once made file-name safe ...
])
def test_runs_of_other_projects_or_engines_do_not_wait(tmp_path, other_project, other_engine):
    env = {STATE_DIR_ENV: str(tmp_path)}
    project = "fleet/x" if other_project == "fleet_x" else "fleet"  # ... ("fleet/x" and "fleet_x")
    entered, release, thread, _ = hold(project, env)
    assert entered.wait(WAIT_S)
    try:
        heard: list[str] = []
        with run_lock(other_project, other_engine, waiting=heard.append, env=env):
            pass
        assert heard == []
    finally:
        release.set()
        thread.join(WAIT_S)


def test_a_lock_that_was_let_go_is_taken_without_waiting(tmp_path):
    env = {STATE_DIR_ENV: str(tmp_path)}
    heard: list[str] = []
    for _ in range(2):
        with run_lock("fleet", ENGINE, waiting=heard.append, env=env):
            pass
    assert heard == []


def test_an_unusable_state_directory_is_one_line_naming_the_setting(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OrchestratorError, match=rf"cannot create the state directory {blocker}/docker-runs: "
                                                rf"Not a directory \(set {STATE_DIR_ENV} to a writable directory\)"):
        with run_lock("fleet", ENGINE, waiting=lambda m: None, env={STATE_DIR_ENV: str(blocker)}):
            pass
