"""The project a command works on: instance names given on the command line (with a did-you-mean
for a typo), and which backend a file is meant for when the command line does not say."""

from __future__ import annotations

import pytest

from orchestrator.errors import ConfigError
from orchestrator.project import guess_backend, open_project
from tests.builders import config, write_config


@pytest.fixture
def project(tmp_path):
    path = write_config(config("chat", "embed", "rerank"), tmp_path)
    return open_project(path, env={}, checks=False)


def test_no_names_mean_every_instance_and_known_names_are_taken(project):
    assert project.select([]) is None
    assert project.select(["embed", "chat"]) == {"chat", "embed"}


def test_a_typo_is_a_config_error_with_a_did_you_mean(project, tmp_path):
    with pytest.raises(ConfigError) as refused:
        project.select(["chat", "embd"])
    assert str(refused.value) == (f"{tmp_path / 'fleet.toml'}: instance.embd: error: no such instance in the "
                                  "config (did you mean embed?)")
    assert refused.value.exit_code == 2


def test_a_name_like_none_of_them_lists_the_instances(project):
    with pytest.raises(ConfigError, match=r"instance.gpt: error: no such instance in the config "
                                          r"\(instances: chat, embed, rerank\)$"):
        project.select(["gpt"])


@pytest.mark.parametrize("document, backend", [
    ({"docker": {"image": "img"}, "instance": {"a": {"server": {}}}}, "docker"),
    ({"instance": {"a": {"server": {}}, "b": {"docker": {"image": "img"}}}}, "docker"),  # one instance's table
    ({"master": {"enable": True}, "instance": {"control": {"gpu_ids": "0"}, "a": {"server": {}}}}, "local"),
    ({}, "local"),
])
def test_a_file_with_container_settings_is_for_docker_and_a_contract_only_file_for_the_launcher(document, backend):
    assert guess_backend(document) == backend


def test_the_contracts_own_examples_are_for_the_launcher(examples_dir):
    for path in sorted(examples_dir.glob("*.toml")):
        assert open_project(path, env={}, backend=None, checks=False).backend == "local", path.name


def test_a_file_of_the_wrong_shape_is_refused_before_it_is_resolved(tmp_path):
    path = write_config('[docker]\nimage = "img"\n[instance.a.server]\nport = "eighty"\n', tmp_path)
    with pytest.raises(ConfigError) as refused:
        open_project(path, env={})
    assert [p.path for p in refused.value.problems] == ["instance.a.server.port"]
