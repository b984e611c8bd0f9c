"""Secrets as files (orchestrator/secret_files.py and their use by the Docker backend and the
plan): what is written on the host, with which modes, when, and when it is removed; what a
container made by an earlier release (secrets in its environment) is compared with."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from orchestrator import secret_files
from orchestrator.backends.docker import ContainerRun, DockerBackend
from orchestrator.backends.engine_body import create_body
from orchestrator.errors import PreflightError
from orchestrator.plan import NOOP, RECREATE, REMOVE, START, plan_up
from tests.builders import config, container_of, containers_of, instances
from tests.unit.fake_engine import FakeEngine

IMAGES = {"img:1": "sha256:" + "a" * 64}
KEY = "sk-files-4d1e"


def fleet(tmp_path, *, key: str = KEY, docker: str = "", **kwargs):
    return instances(config("a", control='gpu_ids = "none"', server=f'api_key = "{key}"', docker=docker, **kwargs),
                     tmp_path, env={"HF_TOKEN": "hf_files"})


def up(backend: DockerBackend, specs):
    actions = plan_up(specs, backend.observe("fleet"), containers=containers_of(specs), image_ids=IMAGES)
    backend.preflight(None, actions, ContainerRun(IMAGES))
    return actions, backend.run_actions(actions)


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_makes_a_root_only_directory_of_0400_files_renamed_into_place(tmp_path, monkeypatch):
    monkeypatch.setenv(secret_files.SECRETS_DIR_ENV, str(tmp_path / "root"))
    directory = secret_files.instance_dir("proj", "a")
    assert directory == str(tmp_path / "root" / "proj" / "a")
    secret_files.write(directory, [("VLLM_API_KEY", "one"), ("OLD", "x")], user=None)
    secret_files.write(directory, [("VLLM_API_KEY", "two")], user="1234:5678")
    assert sorted(os.listdir(directory)) == ["VLLM_API_KEY"]  # no temporary left, a dropped secret removed
    path = os.path.join(directory, "VLLM_API_KEY")
    assert Path(path).read_text() == "two"
    assert mode(directory) == 0o700 and mode(os.path.dirname(directory)) == 0o700 and mode(path) == 0o400
    assert mode(str(tmp_path / "root")) == 0o700  # the root too, where this made it
    assert (os.stat(path).st_uid, os.stat(path).st_gid) == (1234, 5678)  # the server's user can read it
    secret_files.write(directory, [("VLLM_API_KEY", "two")], user="vllm")  # a name: its uid is the image's
    assert mode(path) == 0o444


def test_remove_touches_only_a_directory_under_the_secrets_root(tmp_path, monkeypatch):
    monkeypatch.setenv(secret_files.SECRETS_DIR_ENV, str(tmp_path / "root"))
    elsewhere = tmp_path / "elsewhere" / "proj" / "a"
    elsewhere.mkdir(parents=True)
    secret_files.remove(str(elsewhere))  # e.g. a label edited by hand
    assert elsewhere.is_dir()
    directory = secret_files.instance_dir("proj", "a")
    secret_files.write(directory, [("K", "v")], user=None)
    secret_files.remove(directory)
    assert not os.path.exists(os.path.dirname(directory))


def test_the_default_root_is_persistent_for_root_and_per_user_otherwise(monkeypatch):
    monkeypatch.delenv(secret_files.SECRETS_DIR_ENV)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert secret_files.root() == "/var/lib/vllm-orch/secrets"  # restart policies outlive a reboot
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert secret_files.root({"XDG_STATE_HOME": "/home/u/.state"}) == "/home/u/.state/vllm-orch/secrets"


def test_up_writes_the_files_before_the_create_and_down_removes_them(tmp_path):
    engine = FakeEngine(IMAGES)
    backend = DockerBackend(engine=engine)
    (spec,) = fleet(tmp_path, docker='secret_env = ["HF_TOKEN"]\nuser = "1000:1000"')
    up(backend, [spec])
    body = engine.by_name("fleet-a").body
    assert KEY not in json.dumps(body) and "hf_files" not in json.dumps(body)
    mounts = {m["Target"]: m for m in body["HostConfig"]["Mounts"]}
    for name, value in (("VLLM_API_KEY", KEY), ("HF_TOKEN", "hf_files")):
        mount = mounts[f"/run/secrets/{name}"]
        assert mount["ReadOnly"] and Path(mount["Source"]).read_text() == value
        assert os.stat(mount["Source"]).st_uid == 1000 and mode(mount["Source"]) == 0o400
    assert "VLLM_ORCH_SECRET_ENV=VLLM_API_KEY" in body["Env"]  # HF_TOKEN stays a file:
    assert "HF_TOKEN_PATH=/run/secrets/HF_TOKEN" in body["Env"]
    directory = container_of(spec).secret_dir

    os.unlink(os.path.join(directory, "VLLM_API_KEY"))  # lost while the container was stopped
    engine.by_name("fleet-a").state = "exited"
    actions, results = up(backend, [spec])
    assert [a.kind for a in actions] == [START] and results[0].ok
    assert Path(directory, "VLLM_API_KEY").read_text() == KEY

    results, _ = backend.down("fleet", None)
    assert [r.action.kind for r in results] == [REMOVE] and results[0].ok
    assert not os.path.exists(directory)


def test_a_changed_secret_recreates_and_rewrites_the_file_without_showing_it(tmp_path):
    engine = FakeEngine(IMAGES)
    backend = DockerBackend(engine=engine)
    up(backend, fleet(tmp_path))
    actions, _ = up(backend, fleet(tmp_path))
    assert [a.kind for a in actions] == [NOOP]
    actions, results = up(backend, fleet(tmp_path, key="sk-rotated"))
    assert [(a.kind, a.reasons) for a in actions] == [(RECREATE, ("a secret value changed",))] and results[0].ok
    assert Path(container_of(actions[0].spec).secret_dir, "VLLM_API_KEY").read_text() == "sk-rotated"
    assert "sk-rotated" not in json.dumps([a.to_json() for a in actions])


@pytest.mark.parametrize("rotated", [False, True])
def test_a_container_with_secrets_in_its_environment_is_left_alone_until_something_changes(tmp_path, rotated):
    """As releases before the files made it (tests/unit/test_upgrade.py replays the real ones)."""
    engine = FakeEngine(IMAGES)
    backend = DockerBackend(engine=engine)
    (old,) = fleet(tmp_path)
    engine.add(container_of(old).name, body=create_body(container_of(old).secrets_in_env()))
    assert f"VLLM_API_KEY={KEY}" in engine.by_name("fleet-a").body["Env"]
    actions, results = up(backend, fleet(tmp_path, key="sk-rotated" if rotated else KEY))
    if not rotated:
        assert [a.kind for a in actions] == [NOOP]
        return
    assert [a.kind for a in actions] == [RECREATE] and results[0].ok
    body = engine.by_name("fleet-a").body  # recreated into the file form
    assert "sk-rotated" not in json.dumps(body) and "VLLM_ORCH_SECRET_ENV=VLLM_API_KEY" in body["Env"]


def test_a_container_without_secrets_keeps_the_record_of_every_release(tmp_path):
    (spec,) = instances(config("a", control='gpu_ids = "none"'), tmp_path)
    record = container_of(spec).to_json()
    assert "secret_files" not in record and container_of(spec).secret_mounts() == ()
    assert container_of(spec).entrypoint == container_of(spec).secrets_in_env().entrypoint


class _Table:
    def __init__(self, version: str):
        self.vllm_version = version


@pytest.mark.parametrize("version, warned", [("0.27.1", True), ("0.28.0", False), ("0.32.0", False), ("unknown", False)])
def test_an_api_key_beside_a_host_compile_cache_of_an_old_vllm_is_a_warning(tmp_path, version, warned):
    from orchestrator.project import open_project
    from tests.builders import write_config

    path = write_config(config("a", "b", control='gpu_ids = "none"', server=f'api_key = "{KEY}"',
                               docker='cache_host_dir = "cache"'), tmp_path)
    first = open_project(path, checks=False)
    problems = secret_files.problems(first.resolved.instances, first.resolved.containers, {"img:1": _Table(version)}, str(path))
    lines = [p.format() for p in problems]
    assert len(lines) == (2 if warned else 0), lines
    if warned:
        assert "vLLM 0.27.1 in image img:1 writes the API key in plain text" in lines[0]
        assert "vllm-project/vllm#52523" in lines[0] and KEY not in "".join(lines)


def test_no_cache_on_the_host_or_no_known_version_says_nothing(tmp_path):
    (spec,) = instances(config("a", control='gpu_ids = "none"', server=f'api_key = "{KEY}"',
                               docker="cache_host_dir = false"), tmp_path)
    assert secret_files.problems([spec], containers_of([spec]), {"img:1": _Table("0.20.0")}, "f") == []
    (spec,) = fleet(tmp_path)
    assert secret_files.problems([spec], containers_of([spec]), {}, "f") == []


def test_a_secret_name_no_shell_can_export_stays_a_file_and_says_so(tmp_path):
    (spec,) = instances(config("a", control='gpu_ids = "none"', docker='secret_env = ["MY-KEY", "OK_KEY"]'),
                        tmp_path, env={"MY-KEY": "v", "OK_KEY": "w"})
    (problem,) = secret_files.problems([spec], containers_of([spec]), {}, "f")
    assert not problem.is_error
    assert "'MY-KEY' is not a name a shell can export: the server gets it as the file /run/secrets/MY-KEY" in problem.message
    assert container_of(spec).environment()["VLLM_ORCH_SECRET_ENV"] == "OK_KEY"  # the wrapper never word-splits it
    assert "/run/secrets/MY-KEY" in [m.target for m in container_of(spec).secret_mounts()]


def test_a_secrets_directory_that_cannot_be_written_stops_up_before_anything_changes(tmp_path, monkeypatch):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    monkeypatch.setenv(secret_files.SECRETS_DIR_ENV, str(blocked / "secrets"))
    engine = FakeEngine(IMAGES)
    backend = DockerBackend(engine=engine)
    with pytest.raises(PreflightError, match=r"instance 'a': cannot write its secret files in .*VLLM_ORCH_SECRETS_DIR"):
        up(backend, fleet(tmp_path))
    assert engine.writes() == []


def test_the_record_and_hash_do_not_depend_on_where_this_host_keeps_the_files(tmp_path, monkeypatch):
    """`plan --json` rendered on a review machine (another user, another root) is the one `up`
    labels on the host: the directory is a label of its own, set at create."""
    from orchestrator.labels import LABEL_SECRETS

    monkeypatch.setenv(secret_files.SECRETS_DIR_ENV, str(tmp_path / "here"))
    (here,) = fleet(tmp_path)
    monkeypatch.setenv(secret_files.SECRETS_DIR_ENV, str(tmp_path / "there"))
    (there,) = fleet(tmp_path)
    assert container_of(here).secret_dir != container_of(there).secret_dir
    assert container_of(here).to_json() == container_of(there).to_json()
    assert container_of(here).config_hash() == container_of(there).config_hash()
    assert container_of(here).to_json()["secret_files"] == {"target": "/run/secrets"}
    assert create_body(container_of(there))["Labels"][LABEL_SECRETS] == str(tmp_path / "there" / "fleet" / "a")


def _run_loader(tmp_path, files: dict[str, str], names: str, show: str):
    """The container's wrapper run by the real /bin/sh, its /run/secrets moved to a temp dir."""
    import subprocess

    from orchestrator.container import SECRET_ENTRYPOINT

    for name, value in files.items():
        (tmp_path / name).write_text(value)
    script = SECRET_ENTRYPOINT[2].replace("/run/secrets/", f"{tmp_path}/")
    env = {"VLLM_ORCH_SECRET_ENV": names, "VLLM_ORCH_LOG_FILE": str(tmp_path / "log"), "VLLM_ORCH_INSTANCE": "a",
           "PATH": os.environ["PATH"]}
    done = subprocess.run(["/bin/sh", "-c", script, "vllm-orch-log", "sh", "-c", show], env=env,
                          capture_output=True, text=True, timeout=10)
    return done.returncode, (tmp_path / "log").read_text()


def test_the_wrapper_exports_each_value_as_it_is_and_leaves_no_variable_of_its_own(tmp_path):
    value = "a b $HOME 'q' \"d\" `x` \\ end"
    code, log = _run_loader(tmp_path, {"VLLM_API_KEY": value, "name": "n"}, "VLLM_API_KEY name",
                            'printf "%s|%s|%s" "$VLLM_API_KEY" "$name" "${VLLM_ORCH_SECRET_ENV-unset}"')
    assert code == 0 and log.splitlines()[-1] == f"{value}|n|unset"


def test_a_secret_file_that_cannot_be_read_ends_the_start_with_a_line_in_the_log(tmp_path):
    code, log = _run_loader(tmp_path, {}, "VLLM_API_KEY", "echo started")
    assert code == 78 and "started" not in log
    assert f"vllm-orch: cannot read the secret file {tmp_path}/VLLM_API_KEY as uid {os.getuid()}" in log


@pytest.mark.parametrize("name", ["../../etc/x", "..", "a/b", ".hidden"])
def test_a_secret_name_never_leaves_its_directory(tmp_path, monkeypatch, name):
    monkeypatch.setenv(secret_files.SECRETS_DIR_ENV, str(tmp_path / "root"))
    directory = secret_files.instance_dir("proj", "a")
    secret_files.write(directory, [(name, "v")], user=None)
    (written,) = os.listdir(directory)
    assert "/" not in written and not written.startswith(".")
    assert secret_files.target(name) == f"/run/secrets/{written}"
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["proj"]
