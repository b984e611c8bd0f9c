"""The option table: one declaration per [docker] setting, from which the schema, the defaults,
the README's reference rows, the engine body and the Compose service are all derived."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from orchestrator import options
from orchestrator.backends.engine_body import create_body
from orchestrator.compose import service_settings
from orchestrator.config.schema import SCHEMA
from orchestrator.container import ADDED_RECORD_KEYS as ADDED_KEYS
from orchestrator.plan import RECREATE, Observed, plan_up
from orchestrator.labels import LABEL_SPEC
from orchestrator.resolve import DOCKER_DEFAULTS
from orchestrator.container import config_digest
from tests.builders import container_of, containers_of, instance, observed_for

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
    record = container_of(spec_of(tmp_path)).to_json()
    for option in options.CONTAINER_OPTIONS:
        if option.since in options.RECORDS_UNSET_OPTIONS:  # as 8a54adf and 4a4232d wrote them, null included
            assert option.record in record
        else:
            assert option.record not in record, f"{option.record} is unset: it must leave the record alone"
            assert option.record in ADDED_KEYS
    assert record["cpuset"] is None and record["cpus"] is None  # release 4a4232d's bytes
    assert {"pids_limit", "ulimits"} <= set(container_of(spec_of(tmp_path, "pids_limit = 64\nulimits = { nproc = 9 }"))
                                           .to_json())


def test_cpuset_and_cpus_reach_the_engine_and_compose(tmp_path):
    spec = spec_of(tmp_path, 'cpuset = "0-3,8"\ncpus = 2.5')
    body = create_body(container_of(spec))
    assert body["HostConfig"]["CpusetCpus"] == "0-3,8" and body["HostConfig"]["NanoCpus"] == 2_500_000_000
    service = service_settings(spec, container_of(spec))
    assert service["cpuset"] == "0-3,8" and service["cpus"] == 2.5
    plain = create_body(container_of(spec_of(tmp_path)))
    assert "CpusetCpus" not in plain["HostConfig"] and "NanoCpus" not in plain["HostConfig"]


def test_setting_cpuset_on_a_running_container_recreates_it_naming_the_option(tmp_path):
    before = spec_of(tmp_path)
    old = json.loads(json.dumps({k: v for k, v in container_of(before).to_json().items() if k not in ("cpuset", "cpus")}))
    observed = Observed("id", container_of(before).name, "a", "vllm-orch", "running", "Up", "", "",
                        {LABEL_SPEC: json.dumps(old)})
    observed = observed.replace(config_hash=config_digest(old, container_of(before).secret_env))  # as the release did
    unchanged = plan_up([before], [observed], containers=containers_of([before]), image_ids={})
    assert [a.kind for a in unchanged] == ["noop"]
    after = spec_of(tmp_path, 'cpuset = "0-3"')
    [action] = plan_up([after], [observed], containers=containers_of([after]), image_ids={})
    assert action.kind == RECREATE and action.reasons == ("cpuset: (unset) -> 0-3",)


def test_a_bad_cpuset_is_a_validate_error(write_toml, capsys):
    from orchestrator.cli import main

    path = write_toml('[docker]\nimage = "img:1"\ncpuset = "all of them"\n[instance.a.server]\nmodel = "/m"\n')
    assert main(["-c", str(path), "validate", "--offline"]) == 2
    assert re.search(r"docker\.cpuset: error", capsys.readouterr().out)


# ----------------------------------------------------------------------------- pids_limit and ulimits
LIMITS = 'pids_limit = 4096\nulimits = { memlock = -1, nofile = { soft = 65536, hard = 1048576 }, nproc = 512 }'


def test_pids_limit_and_ulimits_reach_the_engine_and_compose(tmp_path):
    spec = spec_of(tmp_path, LIMITS)
    host = create_body(container_of(spec))["HostConfig"]
    assert host["PidsLimit"] == 4096
    assert host["Ulimits"] == [{"Name": "memlock", "Soft": -1, "Hard": -1},
                               {"Name": "nofile", "Soft": 65536, "Hard": 1048576},
                               {"Name": "nproc", "Soft": 512, "Hard": 512}]
    service = service_settings(spec, container_of(spec))
    assert service["pids_limit"] == 4096
    assert service["ulimits"] == {"memlock": -1, "nofile": {"soft": 65536, "hard": 1048576}, "nproc": 512}
    plain = create_body(container_of(spec_of(tmp_path)))["HostConfig"]
    assert "PidsLimit" not in plain and "Ulimits" not in plain
    plain_spec = spec_of(tmp_path)
    assert "pids_limit" not in service_settings(plain_spec, container_of(plain_spec))


def test_docker_run_spelling_of_ulimits_is_the_same_container(tmp_path):
    table = container_of(spec_of(tmp_path, 'ulimits = { nofile = { soft = 1024, hard = 2048 }, memlock = -1 }'))
    docker_run = container_of(spec_of(tmp_path, 'ulimits = ["nofile=1024:2048", "memlock=-1"]'))
    assert table.to_json() == docker_run.to_json() and table.config_hash() == docker_run.config_hash()
    assert create_body(table) == create_body(docker_run)


def test_instance_ulimits_merge_with_the_global_table(tmp_path):
    spec = instance('[docker]\nimage = "img:1"\nulimits = { memlock = -1, nproc = 100 }\n'
                    '[instance.a.server]\nmodel = "/m"\n[instance.a.docker]\nulimits = { nproc = 200 }\n', tmp_path)
    assert container_of(spec).to_json()["ulimits"] == {"memlock": {"soft": -1, "hard": -1},
                                                   "nproc": {"soft": 200, "hard": 200}}


def running(spec):
    """A running container made from `spec` by this release."""
    return observed_for(spec)


def test_setting_and_then_removing_a_limit_recreates_naming_it(tmp_path):
    plain = spec_of(tmp_path)
    limited = spec_of(tmp_path, 'pids_limit = 100\nulimits = { memlock = -1 }')
    assert [a.kind for a in plan_up([plain], [running(plain)], containers=containers_of([plain]), image_ids={})] == ["noop"]
    [action] = plan_up([limited], [running(plain)], containers=containers_of([limited]), image_ids={})
    assert action.kind == RECREATE
    assert action.reasons == ("pids_limit: (unset) -> 100", 'ulimits: (unset) -> {"memlock": {"soft": -1, "hard": -1}}')
    [back] = plan_up([plain], [running(limited)], containers=containers_of([plain]), image_ids={})
    assert back.kind == RECREATE
    assert back.reasons == ("pids_limit: 100 -> (unset)", 'ulimits: {"memlock": {"hard": -1, "soft": -1}} -> (unset)')
    assert [a.kind for a in plan_up([limited], [running(limited)], containers=containers_of([limited]), image_ids={})] == ["noop"]


@pytest.mark.parametrize("setting, message", [
    ("pids_limit = 0", r"docker\.pids_limit: error: 0 would mean unlimited: write -1 for that, or a positive number"),
    ("pids_limit = -2", r"docker\.pids_limit: error: must be >= -1, got -2"),
    ("ulimits = { nofle = 1024 }", r"docker\.ulimits\.nofle: error: unknown key .*did you mean nofile\?"),
    ("ulimits = { as = 1024 }", r"docker\.ulimits\.as: error: unknown key"),
    ("ulimits = { nofile = { soft = 4096, hard = 1024 } }",
     r"docker\.ulimits: error: nofile: the soft limit \(4096\) is above the hard limit \(1024\)"),
    ("ulimits = { memlock = { soft = -1, hard = 1024 } }",
     r"docker\.ulimits: error: memlock: the soft limit \(-1\) is above the hard limit \(1024\)"),
    ("ulimits = { core = -5 }", r"docker\.ulimits\.core: error: must be >= -1, got -5"),
    ("ulimits = { nofile = -1 }", r"docker\.ulimits: error: nofile cannot be unlimited"),
    ("ulimits = { nproc = { soft = 10 } }", r"docker\.ulimits: error: nproc: give both soft and hard"),
    ('ulimits = ["nofile=65536:1024"]', r"docker\.ulimits: error: nofile: the soft limit \(65536\) is above"),
    ('ulimits = ["nofiles=1024"]',
     r"docker\.ulimits: error: 'nofiles' is not a limit the engine knows \(did you mean nofile\?\)"),
    ('ulimits = ["nofile 1024"]', r"docker\.ulimits: error: 'nofile 1024' is not NAME=SOFT\[:HARD\]"),
    ('ulimits = ["nproc=1", "nproc=2"]', r"docker\.ulimits: error: nproc is given twice"),
])
def test_a_limit_no_engine_would_take_is_one_validate_error(write_toml, capsys, setting, message):
    from orchestrator.cli import main

    path = write_toml(f'[docker]\nimage = "img:1"\n{setting}\n[instance.a.server]\nmodel = "/m"\n')
    assert main(["-c", str(path), "validate", "--offline"]) == 2
    out = capsys.readouterr().out
    errors = [line for line in out.splitlines() if ": error: " in line]
    assert len(errors) == 1 and re.search(message, errors[0]), out


def test_a_refused_limit_writes_no_export(write_toml, capsys):
    from orchestrator.cli import main

    path = write_toml('[docker]\nimage = "img:1"\nulimits = { nofile = { soft = 9, hard = 1 } }\n'
                      '[instance.a.server]\nmodel = "/m"\n')
    out = path.parent / "docker-compose.yml"
    assert main(["-c", str(path), "compose", "--offline", "-o", str(out)]) == 2
    assert "the soft limit (9) is above the hard limit (1)" in capsys.readouterr().err and not out.exists()


def test_a_refused_value_is_blamed_where_it_is_written(write_toml, capsys):
    """Once at docker.<key> for the global table (not once per instance), and at the instance's
    own table where that one sets it."""
    from orchestrator.cli import main

    path = write_toml('[docker]\nimage = "img:1"\npids_limit = 0\n[instance.control]\ngpu_ids = "none"\n'
                      '[instance.a.server]\nmodel = "/m"\n[instance.b.server]\nmodel = "/m"\nport = 8001\n'
                      '[instance.b.docker]\nulimits = { nproc = { soft = 9, hard = 1 } }\n')
    assert main(["-c", str(path), "validate", "--offline"]) == 2
    errors = [line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines() if ": error: " in line]
    assert errors == ["docker.pids_limit: error: 0 would mean unlimited: write -1 for that, or a positive number",
                      "instance.b.docker.ulimits: error: nproc: the soft limit (9) is above the hard limit (1)"]
