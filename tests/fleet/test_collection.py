"""The collection itself: installs offline from ./ansible, its plugins' documentation parses,
and ansible-lint (production profile) passes. Needs no test hosts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`ansible-galaxy collection install ./ansible`, as the README says, into a fresh path."""
    path = tmp_path_factory.mktemp("collections")
    result = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "install", "-p", str(path),
                             str(REPO / "ansible")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return path


@pytest.mark.parametrize("plugin, kind, options", [
    ("vllm_orch.fleet.project", "module",
     {"config", "content", "overrides", "state", "instances", "remove_orphans", "wait", "wait_timeout",
      "docker_host", "executable"}),
    ("vllm_orch.fleet.project_info", "module",
     {"config", "content", "overrides", "ps", "validate", "probe", "instances", "api_key", "probe_retries",
      "docker_host", "executable"}),
    ("vllm_orch.fleet.fleet_table", "filter", {"_input", "hostvars", "result"}),
    ("vllm_orch.fleet.gateway_routes", "filter", {"_input", "hostvars", "result"}),
])
def test_plugin_documentation_parses_and_lists_every_option(installed, plugin, kind, options):
    result = subprocess.run([str(BIN / "ansible-doc"), "-t", kind, "-j", plugin], capture_output=True, text=True,
                            timeout=120, env={"ANSIBLE_COLLECTIONS_PATH": str(installed), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)[plugin]["doc"]
    assert set(doc["options"]) == options


def test_module_documentation_matches_its_argument_spec():
    """What ansible-test's validate-modules checks first (ansible-test itself needs files from
    ci-files.testing.ansible.com, which this machine cannot reach): every option in the argument
    spec is documented with the same type and default, and nothing else is."""
    import ast

    import yaml

    common = _dict_literal(REPO / "ansible/plugins/module_utils/vllm_orch_cli.py", "COMMON_OPTIONS")
    for name in ("project", "project_info"):
        path = REPO / "ansible/plugins/modules" / f"{name}.py"
        tree = ast.parse(path.read_text())
        doc = yaml.safe_load(next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                                  and n.targets[0].id == "DOCUMENTATION"))
        spec = dict(common)
        for fragment in doc.get("extends_documentation_fragment", []):  # vllm_orch.fleet.<file>
            fragment_file = REPO / "ansible/plugins/doc_fragments" / f"{fragment.split('.')[-1]}.py"
            fragment_tree = ast.parse(fragment_file.read_text())
            text = next(ast.literal_eval(n.value) for n in ast.walk(fragment_tree) if isinstance(n, ast.Assign)
                        and getattr(n.targets[0], "id", "") == "DOCUMENTATION")
            doc["options"].update(yaml.safe_load(text)["options"])
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "update" \
                    and getattr(node.func.value, "id", "") == "argument_spec":
                spec.update({kw.arg: _literal_kwargs(kw.value) for kw in node.keywords})
        assert set(spec) == set(doc["options"]), name
        for option, arguments in spec.items():
            documented = doc["options"][option]
            assert documented["type"] == arguments["type"], (name, option)
            assert documented.get("default") == arguments.get("default"), (name, option)
            assert documented.get("required", False) == arguments.get("required", False), (name, option)


def _dict_literal(path: Path, name: str) -> dict:
    import ast

    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == name:
            return {kw.arg: _literal_kwargs(kw.value) for kw in node.value.keywords}
    raise AssertionError(f"{name} not in {path}")


def _literal_kwargs(call) -> dict:
    import ast

    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}


def test_ansible_lint_passes_on_the_collection():
    result = subprocess.run([str(BIN / "ansible-lint"), "--offline", "--nocolor", "--profile", "production"],
                            cwd=REPO / "ansible", capture_output=True, text=True, timeout=600,
                            env={"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(Path.home())})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_the_license_is_in_the_repository_the_collection_and_its_built_artifact(tmp_path):
    """Apache-2.0, as pyproject.toml and galaxy.yml declare: the full text at the repository's root,
    the same file in ansible/, and `ansible-galaxy collection build` ships it."""
    import tarfile

    import yaml

    text = (REPO / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"] and "END OF TERMS AND CONDITIONS" in text
    assert (REPO / "ansible/LICENSE").read_text() == text
    assert yaml.safe_load((REPO / "ansible/galaxy.yml").read_text())["license"] == ["Apache-2.0"]
    assert 'license = { text = "Apache-2.0" }' in (REPO / "pyproject.toml").read_text()
    result = subprocess.run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path),
                             str(REPO / "ansible")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (artifact,) = tmp_path.glob("vllm_orch-fleet-*.tar.gz")
    with tarfile.open(artifact) as tar:
        assert tar.extractfile("LICENSE").read().decode() == text
        manifest = json.loads(tar.extractfile("MANIFEST.json").read())
    assert manifest["collection_info"]["license"] == ["Apache-2.0"]


def test_every_option_that_can_carry_a_secret_is_no_log():
    """The config's text, its overrides and the probe's API key never show in a task's output."""
    import ast

    common = _dict_literal(REPO / "ansible/plugins/module_utils/vllm_orch_cli.py", "COMMON_OPTIONS")
    assert common["content"].get("no_log") is True and common["overrides"].get("no_log") is True
    tree = ast.parse((REPO / "ansible/plugins/modules/project_info.py").read_text())
    api_key = next(kw.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                   and getattr(node.func, "attr", "") == "update" for kw in node.keywords if kw.arg == "api_key")
    assert _literal_kwargs(api_key).get("no_log") is True


def _gateway_routes_filter():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gateway_routes", REPO / "ansible/plugins/filter/gateway_routes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FilterModule().filters()["gateway_routes"]


def test_the_fleet_gateway_s_routes_are_every_reachable_instance_at_its_host_s_address():
    """What the fleet gateway is given from each host's `project_info` result: a server published
    on every interface at the host's inventory address, replicas of one model side by side; left
    out and said why: a loopback-published server, a host that failed or never answered; never a
    route: a host's own gateway, a disabled or unconfigured instance."""
    def row(name, url, model, **more):
        return {"name": name, "url": url, "model": model, "configured": True, "state": "running", **more}

    hostvars = {
        "a": {"ansible_host": "10.0.0.1", "vllm_orch_ps": {"instances": [
            row("chat", "http://0.0.0.0:8001", "chat"), row("gateway", "http://127.0.0.1:8000", "chat,embed"),
            row("embed", "http://10.0.0.1:8002", "embed"), row("old", "http://0.0.0.0:8003", "old", state="disabled"),
            row("stray", "http://0.0.0.0:8004", "stray", configured=False)]}},
        "b": {"ansible_host": "10.0.0.2", "vllm_orch_ps": {"instances": [
            row("chat", "http://[::]:8001", "chat", state="exited"), row("local", "http://127.0.0.1:8009", "local")]}},
        "c": {"ansible_host": "10.0.0.3", "vllm_orch_ps": {"failed": True, "msg": "Docker engine not reachable"}},
        "d": {"ansible_host": "10.0.0.4"},
    }
    found = _gateway_routes_filter()(["a", "b", "c", "d"], hostvars)
    assert found["routes"] == [{"model": "chat", "url": "http://10.0.0.1:8001"},
                               {"model": "chat", "url": "http://10.0.0.2:8001"},
                               {"model": "embed", "url": "http://10.0.0.1:8002"}]
    assert [line.split(":")[0] for line in found["skipped"]] == ["b/local", "c", "d"]
    assert "127.0.0.1, which other hosts cannot reach" in found["skipped"][0]
    assert "Docker engine not reachable" in found["skipped"][1]
