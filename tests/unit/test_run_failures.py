"""How a partly failed `up`/`down` ends, and what `ps` makes of a stopped container's status:
the exit codes and lines the fault suite (tests/integration/test_faults.py) sees end to end."""

from __future__ import annotations

import os

import pytest

from orchestrator.backends import docker_preflight
from orchestrator.backends.docker import ActionResult
from orchestrator.backends.docker_preflight import check_log_space
from orchestrator.app import raise_for_failures
from orchestrator.errors import OrchestratorError
from orchestrator.errors import DockerUnavailable, PreflightError
from orchestrator.plan import CREATE, START, Action
from orchestrator.status import exit_code


def _run_failed(command: str, results: list, message: str) -> OrchestratorError:
    with pytest.raises(OrchestratorError) as raised:
        raise_for_failures(command, results, message)
    return raised.value


def result(name: str, ok: bool, code: int = 0) -> ActionResult:
    return ActionResult(Action(CREATE, name), ok, "created" if ok else "failed", error_exit_code=code)


def test_engine_lost_part_way_is_exit_3_naming_what_was_done_and_what_was_not():
    error = _run_failed("up", [result("a", True), result("b", False, 3), result("c", False, 1)], "unused")
    assert isinstance(error, DockerUnavailable) and error.exit_code == 3
    assert str(error) == ("lost the Docker engine part-way: 1 of 3 instance(s) done (a); not done: b, c; "
                          "run `up` again once the engine is back")


def test_failures_that_agree_keep_their_exit_code_and_mixed_ones_are_1():
    assert _run_failed("up", [result("a", False, 4), result("b", False, 4)], "2 failed").exit_code == 4
    assert _run_failed("up", [result("a", False, 4), result("b", False, 1)], "2 failed").exit_code == 1
    assert _run_failed("down", [result("a", False, 0)], "1 failed").exit_code == 1


@pytest.mark.parametrize("status, code", [
    ("Exited (137) 5 seconds ago", 137), ("Exited (0) About a minute ago", 0), ("Up 3 minutes (healthy)", None),
    ("Created", None), ("", None),
])
def test_ps_reads_the_exit_code_from_the_engines_status(status, code):
    assert exit_code(status) == code


class _Container:
    def __init__(self, log: str):
        self.host_log_file = log


def test_a_full_log_filesystem_is_refused_naming_the_directory(tmp_path, monkeypatch):
    log_dir = tmp_path / "logs" / "not-made-yet"
    action = Action(START, "a", rendering=_Container(str(log_dir / "vllm-server-a.log")))  # type: ignore[arg-type]
    real = os.statvfs(tmp_path)

    class Full:
        f_bavail, f_frsize = 3, real.f_frsize

    monkeypatch.setattr(docker_preflight.os, "statvfs", lambda path: Full)
    with pytest.raises(PreflightError, match=f"log directory {log_dir}: no space left on its filesystem"):
        check_log_space([action])
    monkeypatch.setattr(docker_preflight.os, "statvfs", lambda path: real)
    check_log_space([action])  # room enough: nothing raised


def test_nothing_failed_raises_nothing():
    raise_for_failures("up", [result("a", True)], "unused")
