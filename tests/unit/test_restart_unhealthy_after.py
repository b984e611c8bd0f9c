"""`[docker] restart_unhealthy_after`: declared in the option table, read by `watch` per instance,
and never part of the container (its record, hash, or the exports): changing it recreates nothing."""

from __future__ import annotations

import pytest

from orchestrator import options
from orchestrator.config.validate import schema_problems
from tests.builders import config, container_of, instance, instances, load_data, write_config


def test_declared_once_with_a_default_of_a_few_minutes():
    setting = options.BY_KEY["restart_unhealthy_after"]
    assert options.DEFAULTS["restart_unhealthy_after"] == 300
    assert "restart_unhealthy_after" not in {o.record for o in options.CONTAINER_OPTIONS}
    assert setting.kubernetes  # the Kubernetes export says it is not used there


def test_global_and_per_instance(tmp_path):
    text = config("a", "b", docker="restart_unhealthy_after = 120") + \
        "[instance.b.docker]\nrestart_unhealthy_after = 0\n"
    by = {s.name: s.workload.restart_unhealthy_after for s in instances(text, tmp_path)}
    assert by == {"a": 120, "b": 0}
    assert instance(config("a"), tmp_path).workload.restart_unhealthy_after == 300


def test_changing_it_changes_nothing_of_the_container(tmp_path):
    plain = instance(config("a"), tmp_path)
    watched = instance(config("a", docker="restart_unhealthy_after = 30"), tmp_path)
    assert container_of(plain).to_json() == container_of(watched).to_json()
    assert container_of(plain).config_hash() == container_of(watched).config_hash()


@pytest.mark.parametrize("value", ["-1", '"5m"', "true", "1.5"])
def test_refused_values_are_config_errors(tmp_path, value):
    path = write_config(config("a", docker=f"restart_unhealthy_after = {value}"), tmp_path)
    problems = schema_problems(load_data(path), str(path))
    assert any("restart_unhealthy_after" in p.format() and p.is_error for p in problems), problems
