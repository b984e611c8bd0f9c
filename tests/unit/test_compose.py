"""`vllm-orch compose`: the Compose file built from the plan `up` uses (no engine needed here;
tests/integration/test_compose_parity.py runs it with real Docker Compose)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from orchestrator import compose
from orchestrator.cli import main
from orchestrator.compose import OWNER_COMPOSE, TEMPLATES_DIR, TEMPLATES_ENV, render_compose, service_settings
from orchestrator.errors import OrchestratorError
from orchestrator.project import open_project
from orchestrator.labels import LABEL_INSTANCE, LABEL_OWNER, LABEL_PROJECT
from orchestrator.container import SECRET_ENTRYPOINT

API_KEY = "sk-unit-secret-123"
HF_TOKEN = "hf_unit_secret_456"

FLEET = f"""
[master]
api_server_module = "standin_vllm.api_server"

[docker]
project = "unit"
image = "example/vllm:1"
shm_size = "2g"
secret_env = ["HF_TOKEN"]
env = {{ PRICE = "cost $5 and ${{HOME}}" }}
volumes = ["models:/models:ro"]

[instance.server]
host = "0.0.0.0"
api_key = "{API_KEY}"
gpu_memory_utilization = 0.45

[instance.cpu.control]
gpu_ids = "none"
[instance.cpu.server]
port = 8001
served_model_name = "cpu-model"

[instance.pair.control]
gpu_ids = "0,1"
[instance.pair.server]
port = 8002

[instance.every.server]
port = 8003
"""


@pytest.fixture
def fleet(write_toml, tmp_path):
    (tmp_path / "models").mkdir()
    return write_toml(FLEET)


def project_of(path: Path, **kwargs):
    kwargs.setdefault("env", {"HF_TOKEN": HF_TOKEN})
    return open_project(path, strict=False, **kwargs)


def render(path: Path, **kwargs) -> str:
    return render_compose(project_of(path, **kwargs))


def test_same_inputs_give_the_same_bytes(fleet):
    first = render(fleet)
    assert render(fleet) == first
    assert render(fleet, env={"HF_TOKEN": "another value"}) == first  # secret values never enter
    assert not re.search(r"\d{4}-\d\d-\d\d", first)  # no date or time anywhere


def test_a_config_change_is_a_small_diff(fleet):
    before = render(fleet).splitlines()
    after = render(fleet, sets=["instance.pair.server.port=9002"]).splitlines()
    changed = [line for line in after if line not in before]
    assert changed and all("9002" in line or "--set" in line for line in changed)


def test_secret_values_never_land_in_the_file_or_the_output(fleet, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    text = render(fleet)
    assert API_KEY not in text and HF_TOKEN not in text
    doc = yaml.safe_load(text)
    # Secrets are Compose `secrets:` read from the environment, files at /run/secrets/<NAME> in
    # the container (as `up` mounts them), never a value or a reference in `environment:`.
    assert doc["secrets"] == {"VLLM_API_KEY": {"environment": "VLLM_API_KEY"}, "HF_TOKEN": {"environment": "HF_TOKEN"}}
    for service in doc["services"].values():
        assert service["secrets"] == [{"source": "VLLM_API_KEY", "target": "VLLM_API_KEY"},
                                      {"source": "HF_TOKEN", "target": "HF_TOKEN"}]
        assert "VLLM_API_KEY" not in service["environment"] and "HF_TOKEN" not in service["environment"]
        assert service["environment"]["VLLM_ORCH_SECRET_ENV"] == "VLLM_API_KEY"  # names only
        assert service["environment"]["HF_TOKEN_PATH"] == "/run/secrets/HF_TOKEN"
        assert not any(API_KEY in arg for arg in service["command"])
    assert "${VLLM_API_KEY" not in text and "${HF_TOKEN" not in text  # no reference left to interpolate
    header = text.split("\nname:")[0]
    assert re.search(r"^#\s+VLLM_API_KEY HF_TOKEN$", header, re.M)

    out_file = tmp_path / "docker-compose.yml"
    assert main(["-c", str(fleet), "compose"]) == 0
    assert main(["-c", str(fleet), "compose", "-o", str(out_file)]) == 0
    out, err = capsys.readouterr()
    for secret in (API_KEY, HF_TOKEN):
        assert secret not in out and secret not in err and secret not in out_file.read_text()
    assert out == out_file.read_text()


def test_dollar_signs_in_config_values_are_escaped(fleet):
    text = render(fleet)
    doc = yaml.safe_load(text)
    service = doc["services"]["cpu"]
    assert service["environment"]["PRICE"] == "cost $$5 and $${HOME}"
    assert service["entrypoint"] == [part.replace("$", "$$") for part in SECRET_ENTRYPOINT]
    # Every `$` is escaped: no secret is a reference in the file any more (top-level `secrets:`).
    for match in re.finditer(r"\$+\{?", text):
        assert match.group(0).startswith("$$")


def test_shared_settings_are_written_once_and_merged_into_each_service(fleet):
    text = render(fleet)
    doc = yaml.safe_load(text)  # PyYAML resolves the `<<` merge keys as Compose does
    common = doc["x-vllm-common"]
    assert common["image"] == "example/vllm:1" and common["shm_size"] == "2g" and common["init"] is True
    assert text.count("example/vllm:1") == 1
    assert text.count("PCI_BUS_ID") == 1
    for anchor in ("vllm-common", "vllm-environment", "vllm-labels", "vllm-healthcheck"):
        assert len(re.findall(rf"^ +<<: \*{anchor}$", text, re.M)) == 3
    project = project_of(fleet)
    for spec in project.resolved.instances:
        # What the service would be written out in full, with `$` escaped, as a reader loads it.
        full = yaml.safe_load(compose._dump(compose._escape(service_settings(spec, project.resolved.container_of(spec.name)))))
        assert doc["services"][spec.name] == full


def test_labels_mark_compose_as_the_owner(fleet):
    doc = yaml.safe_load(render(fleet))
    for name, service in doc["services"].items():
        labels = service["labels"]
        assert labels[LABEL_OWNER] == OWNER_COMPOSE
        assert labels[LABEL_PROJECT] == "unit" and labels[LABEL_INSTANCE] == name
        assert {"io.vllm-orch.gpus", "io.vllm-orch.url", "io.vllm-orch.model"} <= set(labels)
        assert "io.vllm-orch.config-hash" not in labels and "io.vllm-orch.spec" not in labels
        assert "container_name" not in service  # Compose names them <project>-<service>-1
    assert doc["name"] == "unit"


def test_gpus_become_device_reservations(fleet):
    services = yaml.safe_load(render(fleet))["services"]

    def devices(name):
        return services[name].get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")

    assert devices("cpu") is None
    assert services["cpu"]["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert devices("pair") == [{"driver": "nvidia", "capabilities": ["gpu"], "device_ids": ["0", "1"]}]
    assert "CUDA_VISIBLE_DEVICES" not in services["pair"]["environment"]
    assert devices("every") == [{"driver": "nvidia", "capabilities": ["gpu"], "count": "all"}]


def test_ports_volumes_health_and_stop_settings(fleet, tmp_path):
    services = yaml.safe_load(render(fleet))["services"]
    pair = services["pair"]
    assert pair["ports"] == [{"target": 8002, "published": "8002", "host_ip": "127.0.0.1", "protocol": "tcp"}]
    log, models, vllm_cache, hf_cache = pair["volumes"]
    assert vllm_cache == {"type": "bind", "source": str(tmp_path / "cache" / "pair" / "vllm"),
                          "target": "/vllm-orch-cache/vllm", "bind": {"create_host_path": False}}
    assert hf_cache["source"] == str(tmp_path / "cache" / "pair" / "huggingface")
    assert pair["environment"]["VLLM_CACHE_ROOT"] == "/vllm-orch-cache/vllm"
    assert pair["environment"]["HF_HOME"] == "/vllm-orch-cache/huggingface"
    assert log == {"type": "bind", "source": str(tmp_path / "logs" / "vllm-server-pair.log"),
                   "target": "/tmp/vllm-server-pair.log", "bind": {"create_host_path": False}}
    assert models == {"type": "bind", "source": str(tmp_path / "models"), "target": "/models",
                      "read_only": True, "bind": {"create_host_path": False}}
    assert pair["command"][:3] == ["python", "-m", "standin_vllm.api_server"]
    assert pair["stop_signal"] == "SIGTERM" and pair["stop_grace_period"] == "60s"
    check = pair["healthcheck"]
    assert check["test"][-1] == "http://127.0.0.1:8002/health"
    assert (check["interval"], check["timeout"], check["retries"], check["start_period"]) == ("10s", "5s", 3, "900s")
    assert pair["network_mode"] == "default"
    assert "restart" not in pair  # "no" is the engine's default, as `up` leaves it unset


def test_per_instance_settings_stay_with_their_service(write_toml):
    path = write_toml("""
        [docker]
        image = "example/vllm:1"
        restart = "unless-stopped"
        [instance.a.server]
        port = 8001
        [instance.b.server]
        port = 8002
        [instance.b.docker]
        image = "example/vllm:2"
        network_mode = "host"
        ipc = "host"
        user = "1000:1000"
        """)
    text = render_compose(project_of(path, env={}))
    doc = yaml.safe_load(text)
    assert "image" not in doc["x-vllm-common"] and doc["x-vllm-common"]["restart"] == "unless-stopped"
    a, b = doc["services"]["a"], doc["services"]["b"]
    assert (a["image"], b["image"]) == ("example/vllm:1", "example/vllm:2")
    assert b["network_mode"] == "host" and "ports" not in b and b["ipc"] == "host" and "shm_size" not in b
    assert a["network_mode"] == "default" and a["shm_size"] == "8g"
    assert b["user"] == "1000:1000" and "user" not in a
    assert "chown 1000:1000 " in text  # the header says how to prepare b's log file


def test_disabled_instances_are_kept_out_of_a_plain_up(write_toml):
    path = write_toml("""
        [docker]
        image = "example/vllm:1"
        [instance.on.server]
        port = 8001
        [instance.off.control]
        enabled = false
        [instance.off.server]
        port = 8002
        """)
    doc = yaml.safe_load(render_compose(project_of(path, env={})))
    assert "profiles" not in doc["services"]["on"]
    assert doc["services"]["off"]["profiles"] == ["disabled"]


def test_header_names_the_config_and_the_overrides(fleet):
    text = render(fleet, env={"HF_TOKEN": HF_TOKEN, "AUTO_INFER_VLLM_OVERRIDES": '{"docker": {"shm_size": "4g"}}'},
                  sets=["instance.cpu.server.port=8101"])
    header = text.split("\nname:")[0]
    assert all(line.startswith("#") for line in header.splitlines())
    assert f"config:    {fleet.resolve()}" in header
    assert "overrides: AUTO_INFER_VLLM_OVERRIDES, --set instance.cpu.server.port (in the order applied)" in header
    assert "4g" not in header  # override contents (which could hold secrets) are not copied
    assert "port is already allocated" in header
    assert f"touch {fleet.parent / 'logs' / 'vllm-server-cpu.log'}" in header


def test_names_that_yaml_would_misread_are_quoted(write_toml):
    path = write_toml("""
        [docker]
        image = "example/vllm:1"
        project = "123"
        [instance.true.server]
        port = 8001
        [instance.0755.server]
        port = 8002
        """)
    doc = yaml.safe_load(render_compose(project_of(path, env={})))
    assert doc["name"] == "123" and list(doc["services"]) == ["true", "0755"]


def test_a_project_name_compose_refuses_is_reported(fleet):
    # `-p` names are checked like `[docker] project`: before anything is rendered or run.
    with pytest.raises(OrchestratorError, match="project name 'My.Project' must match"):
        render(fleet, project_name="My.Project")


def test_adjusted_templates_are_used(fleet, tmp_path, monkeypatch):
    copy = tmp_path / "site-templates"
    shutil.copytree(TEMPLATES_DIR, copy)
    base = (copy / "base.yml").read_text()
    (copy / "base.yml").write_text(base.replace("x-vllm-common: &vllm-common\n",
                                                "x-vllm-common: &vllm-common\n  logging:\n    driver: local\n"))
    monkeypatch.setenv(TEMPLATES_ENV, str(copy))
    doc = yaml.safe_load(render(fleet))
    assert all(s["logging"] == {"driver": "local"} for s in doc["services"].values())
    assert "##" not in render(fleet)  # notes about the template stay in the template


@pytest.mark.parametrize("edit, message", [
    (lambda text: text.replace("{{ project }}", "{{ projekt }}"), "unknown placeholder {{ projekt }}"),
    (lambda text: text.replace("  {{ common }}", "  key: {{ common }}"), "must be alone on its line"),
    (lambda text: text.replace("x-vllm-common: &vllm-common\n", "x-vllm-common: &vllm-common\n  init: false\n"),
     "written twice"),
])
def test_broken_templates_are_reported(fleet, tmp_path, monkeypatch, edit, message):
    copy = tmp_path / "broken"
    shutil.copytree(TEMPLATES_DIR, copy)
    (copy / "base.yml").write_text(edit((copy / "base.yml").read_text()))
    monkeypatch.setenv(TEMPLATES_ENV, str(copy))
    with pytest.raises(OrchestratorError, match=re.escape(message)):
        render(fleet)


def test_a_template_that_changes_a_setting_is_refused(fleet, tmp_path, monkeypatch):
    copy = tmp_path / "overriding"
    shutil.copytree(TEMPLATES_DIR, copy)
    service = (copy / "service.yml").read_text()
    (copy / "service.yml").write_text(service + "  init: false\n")
    monkeypatch.setenv(TEMPLATES_ENV, str(copy))
    with pytest.raises(OrchestratorError, match=r"change or drop services\.cpu\.init"):
        render(fleet)


def test_missing_templates_name_the_fix(fleet, tmp_path, monkeypatch):
    monkeypatch.setenv(TEMPLATES_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(OrchestratorError, match=TEMPLATES_ENV):
        render(fleet)


@pytest.mark.parametrize("breaker", ["\r", "\n", "\u2028", "\u2029", "\x85", "\r\n"], ids=repr)
def test_a_line_break_in_a_value_cannot_add_keys(fleet, breaker):
    """A value reaches the YAML through the serializer or an escaped comment only: a line break
    in `served_model_name` (written into a comment) must not start `privileged: true`."""
    injected = f"cpu-model{breaker}    privileged: true{breaker}    cap_add: [ALL]"
    text = render(fleet, overrides=[json.dumps({"instance": {"cpu": {"server": {"served_model_name": injected}}}})])
    doc = yaml.safe_load(text)
    for name, service in doc["services"].items():
        assert "privileged" not in service and "cap_add" not in service, name
    assert "privileged" not in doc["x-vllm-common"]
    assert not any(line.lstrip().startswith(("privileged", "cap_add")) for line in re.split(r"[\r\n\x85\u2028\u2029]", text))
    assert "--served-model-name" in doc["services"]["cpu"]["command"]


def test_a_line_break_in_the_config_path_stays_in_its_comment(tmp_path):
    directory = tmp_path / "a\rprivileged: true"
    directory.mkdir()
    (directory / "models").mkdir()
    path = directory / "fleet.toml"
    path.write_text(FLEET)
    doc = yaml.safe_load(render(path))
    assert "privileged" not in doc and all("privileged" not in s for s in doc["services"].values())


def test_the_templates_ship_inside_the_package():
    """`pip install .` carries them: the package's own directory has them (tests/integration
    checks an installed wheel end to end)."""
    assert (Path(compose.__file__).parent / "compose_templates" / "base.yml").is_file()
    assert TEMPLATES_DIR.parent == Path(compose.__file__).resolve().parent
