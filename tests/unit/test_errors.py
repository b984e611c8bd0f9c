"""The one line a user reads for each problem, and the exit code a script sees for each error."""

from __future__ import annotations

import pytest

from orchestrator.errors import (
    ConfigError,
    DockerUnavailable,
    InstanceFailed,
    OrchestratorError,
    OwnedElsewhere,
    PreflightError,
    Problem,
)


@pytest.mark.parametrize("problem, line", [
    (Problem("error", "instance.a.server.port", "must be an integer", hint="e.g. 8000", source="fleet.toml",
             line=12, column=8),
     "fleet.toml:12:8: instance.a.server.port: error: must be an integer (e.g. 8000)"),
    (Problem("warning", "docker.shm_size", "larger than the host's memory", source="fleet.toml", line=3),
     "fleet.toml:3: docker.shm_size: warning: larger than the host's memory"),
    (Problem("error", "", "config file not found", source="/etc/vllm/fleet.toml"),
     "/etc/vllm/fleet.toml: error: config file not found"),
    (Problem("error", "master.enable", "must be a boolean"),  # no source: an override layer, say
     "config: master.enable: error: must be a boolean"),
    (Problem("error", "x", "bad", source="AUTO_INFER_VLLM_OVERRIDES", column=4),  # a column without a line is noise
     "AUTO_INFER_VLLM_OVERRIDES: x: error: bad"),
])
def test_a_problem_is_one_line_saying_where_what_and_how_to_fix_it(problem, line):
    assert problem.format() == line and "\n" not in problem.format()


def test_a_problem_as_json_has_every_field():
    problem = Problem("error", "p", "m", hint="h", source="s", line=1, column=2)
    assert problem.to_json() == {"severity": "error", "path": "p", "message": "m", "hint": "h", "source": "s",
                                 "line": 1, "column": 2}
    assert problem.is_error and not problem.replace(severity="warning").is_error


def problems(errors: int, warnings: int = 0) -> list[Problem]:
    found = [Problem("warning", f"w{i}", "odd", source="f.toml") for i in range(warnings)]
    return found + [Problem("error", f"e{i}", "wrong", source="f.toml") for i in range(errors)]


@pytest.mark.parametrize("errors, warnings, message", [
    (1, 0, "f.toml: e0: error: wrong"),
    (3, 2, "f.toml: e0: error: wrong (and 2 more error(s))"),  # the first error, whatever came before it
    (0, 2, "invalid configuration"),
])
def test_a_config_error_shows_its_first_error_and_counts_the_others(errors, warnings, message):
    error = ConfigError(problems(errors, warnings))
    assert str(error) == message and error.details == ""
    assert len(error.problems) == errors + warnings  # all of them, for `validate` to list


@pytest.mark.parametrize("error, code", [
    (OrchestratorError("x"), 1), (ConfigError([]), 2), (OwnedElsewhere("x"), 2), (DockerUnavailable("x"), 3),
    (PreflightError("x"), 4), (InstanceFailed("x"), 5),
])
def test_each_kind_of_error_has_the_exit_code_the_readme_documents(error, code):
    assert error.exit_code == code and isinstance(error, OrchestratorError)


def test_details_are_kept_apart_from_the_one_line():
    error = InstanceFailed("instance 'a' exited (1)", details="last log lines\nTraceback ...")
    assert str(error) == "instance 'a' exited (1)" and error.details.startswith("last log lines")
