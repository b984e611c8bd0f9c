"""Adding a setting to the option table changes nothing for configs that do not use it.

A dummy pass-through option is added to the table the way a new release would declare one
(`since="next"`), and every existing config's outputs are compared before and after: the
container record and config_hash (inside `plan --json`), the create body `up` sends, the Compose
file and the Kubernetes manifests, byte for byte. Containers made before it are left alone.
Then the dummy is set, to show it was in the table all along (else the comparison proves nothing).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator import container as container_module
from orchestrator import options
from orchestrator.backends.engine_body import create_body
from orchestrator.cli import main
from orchestrator.config.schema import SCHEMA
from orchestrator.plan import NOOP, plan_up
from tests.builders import container_of, containers_of, observed_for, resolve_file

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"

DUMMY_SETTING = options.Setting(
    "oom_score_adj", {"type": "integer", "minimum": -1000, "maximum": 1000},
    "a setting a later release adds (this test's)", kubernetes="not used: (a test's dummy)")
DUMMY_OPTION = options.ContainerOption(
    "oom_score_adj", lambda d: d.get("oom_score_adj"),
    lambda v: {"HostConfig.OomScoreAdj": v} if v is not None else {},
    lambda v: {"oom_score_adj": v} if v is not None else {},
    since="next")
# One whose resolve gives a default when unset (the engine's 0), the value older containers had.
DEFAULTED_OPTION = options.ContainerOption(
    "oom_score_adj", lambda d: d.get("oom_score_adj", 0),
    lambda v: {"HostConfig.OomScoreAdj": v} if v else {},
    lambda v: {"oom_score_adj": v} if v else {},
    since="next", unset=0)

EVERY_SETTING = """
[docker]
image = "img:1"
shm_size = "2g"
user = "1000:1000"
restart = "unless-stopped"
stop_timeout = 30
cpuset = "0-3"
cpus = 2.5
pids_limit = 4096
ulimits = { memlock = -1, nofile = 65536 }
labels = { team = "a" }
env = { A = "1" }
[instance.control]
gpu_ids = "none"
[instance.a.server]
model = "/m"
[instance.b.server]
model = "/m"
port = 8001
[instance.b.docker]
ipc = "host"
network_mode = "host"
"""


def add_dummy_option(monkeypatch, option: options.ContainerOption = DUMMY_OPTION) -> None:
    """Declare the dummy as a release would: one Setting and one ContainerOption in the table
    (and what the modules derived from the table at import: the schema, the upgrade rules)."""
    monkeypatch.setattr(options, "SETTINGS", (*options.SETTINGS, DUMMY_SETTING))
    monkeypatch.setitem(options.BY_KEY, DUMMY_SETTING.key, DUMMY_SETTING)
    monkeypatch.setitem(options.DOCKER_ONLY, DUMMY_SETTING.key, DUMMY_SETTING.kubernetes)
    monkeypatch.setattr(options, "CONTAINER_OPTIONS", (*options.CONTAINER_OPTIONS, option))
    monkeypatch.setitem(options.OPTIONS_ADDED_LATER, option.record, option.unset)
    monkeypatch.setitem(container_module.ADDED_RECORD_KEYS, option.record, lambda c: option.unset)
    for table in (SCHEMA["properties"]["docker"],
                  SCHEMA["properties"]["instance"]["additionalProperties"]["properties"]["docker"]):
        monkeypatch.setitem(table["properties"], DUMMY_SETTING.key, DUMMY_SETTING.schema)


@pytest.fixture
def corpus(tmp_path) -> list[tuple[Path, list[str]]]:
    """The configs there are: the demo's, the release fixture's, the contract's two real
    examples, and one setting every option of the table; each with what it needs on this host."""
    configs = []
    (tmp_path / "configs").mkdir()
    (tmp_path / ".demo" / "models" / "tiny-llama").mkdir(parents=True)
    demo = shutil.copy(ROOT / "configs" / "demo.toml", tmp_path / "configs" / "demo.toml")
    configs.append((Path(demo), []))
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    configs.append((Path(shutil.copy(FIXTURES / "releases" / "upgrade.toml", tmp_path / "upgrade.toml")), []))
    for example in sorted((FIXTURES / "contract-examples").glob("*.toml")):
        copy = Path(shutil.copy(example, tmp_path / example.name))
        configs.append((copy, ["--set", 'docker.image="img:1"', "--set", "kubernetes.gpu_count=8"]))
    every = tmp_path / "every.toml"
    every.write_text(EVERY_SETTING)
    configs.append((every, []))
    return configs


COMMANDS = [("plan", "--json", "--offline"), ("compose", "--offline"), ("k8s", "--offline")]


def outputs(capsys, monkeypatch, configs: list[tuple[Path, list[str]]]) -> dict:
    monkeypatch.setenv("UPGRADE_FIXTURE_TOKEN", "fixture-token-value")
    seen = {}
    for config, extra in configs:
        for command in COMMANDS:
            code = main(["-c", str(config), *extra, *command])
            out, err = capsys.readouterr()
            assert code == 0, (config.name, command, err)
            seen[config.name, command] = (out, err)
        resolved = resolve_file(config, env={"UPGRADE_FIXTURE_TOKEN": "fixture-token-value"})
        seen[config.name, "create bodies"] = [create_body(container_of(i)) for i in resolved.instances]
    return seen


@pytest.mark.parametrize("option", [DUMMY_OPTION, DEFAULTED_OPTION], ids=["unset-is-none", "unset-is-a-default"])
def test_a_new_unset_option_changes_no_record_hash_plan_or_export(capsys, monkeypatch, corpus, option):
    before = outputs(capsys, monkeypatch, corpus)
    made_before = {config: resolve_file(config, env={"UPGRADE_FIXTURE_TOKEN": "x"}).instances
                   for config, _ in corpus}
    add_dummy_option(monkeypatch, option)
    after = outputs(capsys, monkeypatch, corpus)
    assert after.keys() == before.keys()
    for key in before:
        assert after[key] == before[key], f"{key}: adding an option changed what a config without it gives"
    for config, specs in made_before.items():  # containers made before it: nothing to do
        now = resolve_file(config, env={"UPGRADE_FIXTURE_TOKEN": "x"}).instances
        actions = plan_up(now, [observed_for(s) for s in specs if s.enabled], containers=containers_of(now), image_ids={})
        assert {a.kind for a in actions if a.spec is None or a.spec.enabled} == {NOOP}, config.name


def test_the_dummy_is_in_the_table_when_set(capsys, monkeypatch, tmp_path):
    config = tmp_path / "fleet.toml"
    config.write_text(EVERY_SETTING)
    made_before = resolve_file(config).instance("b")
    add_dummy_option(monkeypatch)
    config.write_text(EVERY_SETTING.replace("[instance.b.docker]\n", "[instance.b.docker]\noom_score_adj = 500\n"))
    [a, b] = resolve_file(config).instances
    assert "oom_score_adj" not in container_of(a).to_json() and container_of(b).to_json()["oom_score_adj"] == 500
    assert create_body(container_of(b))["HostConfig"]["OomScoreAdj"] == 500
    [action] = plan_up([b], [observed_for(made_before)], containers=containers_of([b]), image_ids={})
    assert action.reasons == ("oom_score_adj: (unset) -> 500",)
    assert main(["-c", str(config), "compose", "--offline"]) == 0
    assert "oom_score_adj: 500" in capsys.readouterr().out
    assert main(["-c", str(config), "k8s", "--offline"]) == 0
    assert "instance.b.docker.oom_score_adj: warning: not used: (a test's dummy)" in capsys.readouterr().err
