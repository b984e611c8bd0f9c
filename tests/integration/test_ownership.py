"""Ownership includes the config's identity: two files with the same name in different
directories (both project `fleet` by default) never touch each other's containers."""

from __future__ import annotations

import textwrap
import uuid

import pytest

from orchestrator.cli import main
from tests.integration.conftest import STANDIN_IMAGE, free_port

pytestmark = pytest.mark.docker


def write(directory, stem: str, port: int, extra: str = ""):
    directory.mkdir()
    path = directory / f"{stem}.toml"
    path.write_text(textwrap.dedent(f"""
        [master]
        api_server_module = "standin_vllm.api_server"
        [docker]
        image = "{STANDIN_IMAGE}"
        shm_size = "64m"
        stop_timeout = 5
        [instance.a.control]
        gpu_ids = "none"
        [instance.a.server]
        host = "0.0.0.0"
        model = "/m"
        port = {port}
        """) + extra)
    return path


@pytest.fixture
def twins(engine, tmp_path):
    stem = "t" + uuid.uuid4().hex[:10]  # the project name both files get by default
    first = write(tmp_path / "srv-a", stem, free_port())
    second = write(tmp_path / "srv-b", stem, free_port(), "[instance.b.server]\nmodel = \"/m\"\nhost = \"0.0.0.0\"\n"
                   f"port = {free_port()}\n[instance.b.control]\ngpu_ids = \"none\"\n")
    yield stem, first, second
    for container in engine.containers.list(all=True, filters={"label": f"io.vllm-orch.project={stem}"}):
        container.remove(force=True)


def containers(engine, stem):
    found = engine.containers.list(all=True, filters={"label": f"io.vllm-orch.project={stem}"})
    return {c.name: (c.id, c.labels["io.vllm-orch.config-file"]) for c in found}


def test_a_second_config_of_the_same_name_is_refused_and_touches_nothing(engine, twins, capsys):
    stem, first, second = twins
    assert main(["-c", str(first), "up"]) == 0
    before = containers(engine, stem)
    assert list(before.values())[0][1] == str(first)
    capsys.readouterr()

    for argv in (["up"], ["up", "--remove-orphans"]):
        assert main(["-c", str(second), *argv]) == 2
        err = capsys.readouterr().err
        assert str(first) in err and "--adopt" in err and err.count("\n") == 1
        assert containers(engine, stem) == before

    # down of the second config leaves the first one's loaded model, and says so
    assert main(["-c", str(second), "down"]) == 0
    assert str(first) in capsys.readouterr().err
    assert containers(engine, stem) == before


def test_adopting_deliberately_recreates_under_the_new_config(engine, twins, capsys):
    stem, first, second = twins
    assert main(["-c", str(first), "up"]) == 0
    (old_id, _), = containers(engine, stem).values()
    capsys.readouterr()
    assert main(["-c", str(second), "up", "--adopt", "--dry-run"]) == 0
    assert f"adopted: made by {first}" in capsys.readouterr().out
    assert main(["-c", str(second), "up", "--adopt"]) == 0
    after = containers(engine, stem)
    assert {label for _, label in after.values()} == {str(second)} and len(after) == 2
    assert old_id not in {cid for cid, _ in after.values()}
    assert main(["-c", str(second), "up"]) == 0  # its own now: nothing to refuse
    assert containers(engine, stem) == after
