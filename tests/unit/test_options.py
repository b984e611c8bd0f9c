"""The option table: one declaration per [docker] setting, from which the schema, the defaults,
the README's reference rows, the engine body and the Compose service are all derived."""

from __future__ import annotations

import json
import re
from pathlib import Path

from orchestrator import options
from orchestrator.backends.engine_body import create_body
from orchestrator.compose import service_settings
from orchestrator.config.schema import SCHEMA
from orchestrator.container import ADDED_RECORD_KEYS as ADDED_KEYS
from orchestrator.plan import RECREATE, Observed, plan_up
from orchestrator.labels import LABEL_SPEC
from orchestrator.resolve import DOCKER_DEFAULTS
from orchestrator.container import config_digest
from tests.builders import instance

README = Path(__file__).resolve().parents[2] / "README.md"


def spec_of(tmp_path, docker: str = ""):
    return instance(f'[docker]\nimage = "img:1"\n{docker}\n[instance.a.server]\nmodel = "/m"\n', tmp_path)


def test_every_docker_key_of_the_schema_is_declared_in_the_table():
    assert list(SCHEMA["properties"]["docker"]["properties"]) == [s.key for s in options.SETTINGS]
    instance = SCHEMA["properties"]["instance"]["additionalProperties"]["properties"]["docker"]["properties"]
    assert list(instance) == [s.key for s in options.SETTINGS if not s.global_only]
    assert DOCKER_DEFAULTS == {s.key: s.default for s in options.SETTINGS if s.default is not None}


def test_the_readme_reference_is_the_tables():
    assert options.markdown_rows() in README.read_text(), \
        "regenerate the [docker] rows: python -m orchestrator.generate"


def test_the_record_holds_the_first_releases_options_always_and_later_ones_only_when_set(tmp_path):
    record = spec_of(tmp_path).container.to_json()
    for option in options.CONTAINER_OPTIONS:
        if option.since in options.RECORDS_UNSET_OPTIONS:  # as 8a54adf and 4a4232d wrote them, null included
            assert option.record in record
        else:
            assert option.record not in record, f"{option.record} is unset: it must leave the record alone"
            assert option.record in ADDED_KEYS
    assert record["cpuset"] is None and record["cpus"] is None  # release 4a4232d's bytes
    assert {"pids_limit", "ulimits"} <= set(spec_of(tmp_path, "pids_limit = 64\nulimits = { nproc = 9 }")
                                           .container.to_json())


def test_cpuset_and_cpus_reach_the_engine_and_compose(tmp_path):
    spec = spec_of(tmp_path, 'cpuset = "0-3,8"\ncpus = 2.5')
    body = create_body(spec.container)
    assert body["HostConfig"]["CpusetCpus"] == "0-3,8" and body["HostConfig"]["NanoCpus"] == 2_500_000_000
    service = service_settings(spec)
    assert service["cpuset"] == "0-3,8" and service["cpus"] == 2.5
    plain = create_body(spec_of(tmp_path).container)
    assert "CpusetCpus" not in plain["HostConfig"] and "NanoCpus" not in plain["HostConfig"]


def test_setting_cpuset_on_a_running_container_recreates_it_naming_the_option(tmp_path):
    before = spec_of(tmp_path)
    old = json.loads(json.dumps({k: v for k, v in before.container.to_json().items() if k not in ("cpuset", "cpus")}))
    observed = Observed("id", before.container.name, "a", "vllm-orch", "running", "Up", "", "",
                        {LABEL_SPEC: json.dumps(old)})
    observed = observed.replace(config_hash=config_digest(old, before.container.secret_env))  # as the release did
    unchanged = plan_up([before], [observed], image_ids={})
    assert [a.kind for a in unchanged] == ["noop"]
    after = spec_of(tmp_path, 'cpuset = "0-3"')
    [action] = plan_up([after], [observed], image_ids={})
    assert action.kind == RECREATE and action.reasons == ("cpuset: (unset) -> 0-3",)


def test_a_bad_cpuset_is_a_validate_error(write_toml, capsys):
    from orchestrator.cli import main

    path = write_toml('[docker]\nimage = "img:1"\ncpuset = "all of them"\n[instance.a.server]\nmodel = "/m"\n')
    assert main(["-c", str(path), "validate", "--offline"]) == 2
    assert re.search(r"docker\.cpuset: error", capsys.readouterr().out)
