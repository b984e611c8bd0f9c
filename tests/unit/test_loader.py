"""Loading the TOML file and applying overrides in the contract's order."""

from __future__ import annotations

import pytest

from orchestrator.config.loader import OVERRIDES_ENV, deep_merge, load_config, parse_set
from orchestrator.errors import ConfigError


def test_toml_syntax_error_names_line_and_column(write_toml):
    path = write_toml("""
        [master]
        enable = true
        [instance.a.server]
        port = = 8000
    """)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    problem = info.value.problems[0]
    assert (problem.line, problem.column) == (5, 8)
    assert problem.format().startswith(f"{path}:5:8: error: TOML syntax:")


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_layers_apply_in_order_env_then_override_then_set(write_toml):
    path = write_toml("""
        [instance.a.server]
        port = 8000
        max_model_len = 1024
        served_model_name = "x"
    """)
    env = {OVERRIDES_ENV: '{"instance": {"a": {"server": {"port": 8001, "max_model_len": 2048}}}}'}
    loaded = load_config(
        path,
        env=env,
        overrides=['{"instance": {"a": {"server": {"max_model_len": 4096}}}}'],
        sets=["instance.a.server.served_model_name=y"],
    )
    server = loaded.data["instance"]["a"]["server"]
    assert server == {"port": 8001, "max_model_len": 4096, "served_model_name": "y"}
    assert loaded.layers[1:] == [OVERRIDES_ENV, "--override", "--set instance.a.server.served_model_name"]


def test_deep_merge_merges_tables_and_replaces_lists():
    base = {"server": {"extra_args": ["--a"], "port": 1}, "keep": {"x": 1}}
    merged = deep_merge(base, {"server": {"extra_args": ["--b"]}, "new": 2})
    assert merged == {"server": {"extra_args": ["--b"], "port": 1}, "keep": {"x": 1}, "new": 2}
    assert base["server"]["extra_args"] == ["--a"], "the base document must not be modified"


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"str"'])
def test_bad_override_json_is_refused(write_toml, text):
    path = write_toml("[master]\nenable = true\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={OVERRIDES_ENV: text})
    assert info.value.problems[0].source == OVERRIDES_ENV


def test_empty_override_env_is_ignored(write_toml):
    path = write_toml("[master]\nenable = true\n")
    assert load_config(path, env={OVERRIDES_ENV: "  "}).data == {"master": {"enable": True}}


@pytest.mark.parametrize(
    "assignment, expected",
    [
        ("a.b=8192", {"a": {"b": 8192}}),
        ("a.b=true", {"a": {"b": True}}),
        ("a.b=0.5", {"a": {"b": 0.5}}),
        ('a.b="0,1"', {"a": {"b": "0,1"}}),
        ("a.b=/models/x", {"a": {"b": "/models/x"}}),
        ("a.b=[1, 2]", {"a": {"b": [1, 2]}}),
    ],
)
def test_set_reads_values_as_toml_else_string(assignment, expected):
    assert parse_set(assignment) == expected


@pytest.mark.parametrize("assignment", ["novalue", "=3", "a..b=1"])
def test_set_rejects_malformed_assignments(assignment):
    with pytest.raises(ConfigError):
        parse_set(assignment)
