"""The `project` module run by a real `ansible-playbook` on this machine (connection local, the
real vllm-orch of .venv): what a failed run reports, and that no secret of its input shows.
Needs no test hosts; the engine case needs no engine either (it names a socket that is not
there). The same behaviour over SSH on three hosts: tests/fleet/test_fleet.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SECRET = "sk-local-secret-4711"
GOOD = textwrap.dedent(f"""\
    [docker]
    image = "vllm-orch/standin:latest"
    project = "ansible-local-test"

    [instance.a.server]
    model = "/models/alpha"
    api_key = "{SECRET}"
    """)


@pytest.fixture(scope="module")
def collections(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("collections")
    result = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "-p", str(path),
                             str(REPO / "ansible")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return path


def play(collections: Path, tmp_path: Path, args: dict, *flags: str) -> tuple[dict, str]:
    """One task of the module on localhost; (its result, everything ansible-playbook printed)."""
    playbook = tmp_path / "play.yml"
    task = {"name": "module", "vllm_orch.fleet.project": {"executable": str(BIN / "vllm-orch"), **args},
            "register": "out"}
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [task]}]))
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "ANSIBLE_COLLECTIONS_PATH": str(collections),
           "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
           "ANSIBLE_REMOTE_TEMP": str(tmp_path / "tmp"), "ANSIBLE_NOCOLOR": "1"}
    result = subprocess.run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                             "-e", json.dumps({"ansible_python_interpreter": sys.executable}), str(playbook), *flags],
                            capture_output=True, text=True, env=env, timeout=300)
    doc = json.loads(result.stdout)
    return doc["plays"][0]["tasks"][0]["hosts"]["localhost"], result.stdout + result.stderr


def test_a_config_error_reports_changed_false_and_keeps_the_file(collections, tmp_path):
    config = tmp_path / "fleet.toml"
    config.write_text(GOOD)
    bad = GOOD.replace('model = "/models/alpha"', 'model = "/models/alpha"\ngpu_idz = 1').replace(
        "[instance.a.server]", "[instance.a.control]\ngpu_idz = 1\n[instance.a.server]")
    result, output = play(collections, tmp_path, {"config": str(config), "content": bad}, "--diff")
    assert result["failed"] is True and result["changed"] is False and result["config_changed"] is False
    assert "(exit 2: config error; nothing was changed)" in result["msg"]
    assert config.read_text() == GOOD and "diff" not in result
    assert SECRET not in output
    assert result["invocation"]["module_args"]["content"] == "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER"
    # A first run whose file's directories do not exist yet leaves none behind either.
    result, _ = play(collections, tmp_path, {"config": str(tmp_path / "new/etc/fleet.toml"), "content": bad})
    assert result["failed"] is True and result["changed"] is False and not (tmp_path / "new").exists()


def test_an_unreachable_engine_reports_changed_false_and_keeps_the_file(collections, tmp_path):
    config = tmp_path / "fleet.toml"
    config.write_text(GOOD)
    new = GOOD.replace('model = "/models/alpha"', 'model = "/models/alpha"\nmax_model_len = 2048')
    overrides = {"instance": {"a": {"server": {"hf_token": "hf_localsecret", "max_model_len": 4096}}}}
    result, output = play(collections, tmp_path, {"config": str(config), "content": new, "overrides": overrides,
                                                  "docker_host": f"unix://{tmp_path}/no-engine.sock"}, "--diff")
    assert result["failed"] is True and result["changed"] is False and result["config_changed"] is False
    assert "exit 3: Docker engine not reachable" in result["msg"]
    assert config.read_text() == GOOD
    assert SECRET not in output and "hf_localsecret" not in output
    # Of the no_log overrides only the secret is masked: the option's value stays readable.
    shown = result["invocation"]["module_args"]["overrides"]["instance"]["a"]["server"]
    assert shown == {"hf_token": "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER", "max_model_len": 4096}
