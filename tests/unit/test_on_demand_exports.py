"""On-demand instances in the exports. Compose: the profile "on-demand" and a comment saying why
(Compose cannot start a service on its first request; tests/integration/test_on_demand_compose.py
runs the file with real Compose v2). Kubernetes: replicas 0 and the annotations, and either KEDA's
HTTPScaledObject, validated against the CRD's published schema (tests/fixtures/keda/, no cluster
can run here), or a warning that nothing scales it from zero."""

from __future__ import annotations

import textwrap
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from orchestrator.cli import main
from orchestrator.compose import render_compose
from orchestrator.project import open_project

KEDA_SCHEMA = Path(__file__).resolve().parents[1] / "fixtures" / "keda" / "httpscaledobject-v1alpha1.schema.yaml"

FLEET = """
[docker]
image = "vllm-orch/vllm-cpu:0.32.0"
project = "od"
{docker}
[instance.control]
gpu_ids = "none"
[instance.server]
host = "0.0.0.0"
[instance.chat.server]
model = "/m/chat"
port = 8001
[instance.coder.server]
model = "/m/coder"
served_model_name = "coder"
port = 8002
[instance.coder.docker]
on_demand = true
{coder}
"""


def write(write_toml, docker: str = "", coder: str = "idle_stop_after = 600", extra: str = "") -> Path:
    return write_toml(textwrap.dedent(FLEET).format(docker=docker, coder=coder) + textwrap.dedent(extra))


def compose_doc(path: Path) -> tuple[str, dict]:
    text = render_compose(open_project(path, env={}, target="compose", on_host=False))
    return text, yaml.safe_load(text)


def k8s(capsys, path: Path, *args: str) -> tuple[list[dict], str, str]:
    capsys.readouterr()
    assert main(["-c", str(path), "k8s", "--offline", *args]) == 0
    out, err = capsys.readouterr()
    return list(yaml.safe_load_all(out)), out, err


# ----------------------------------------------------------------------------- Compose
def test_compose_puts_an_on_demand_service_in_its_profile_with_a_comment(write_toml):
    text, doc = compose_doc(write(write_toml))
    assert doc["services"]["coder"]["profiles"] == ["on-demand"]
    assert "profiles" not in doc["services"]["chat"]
    block = text.split("\n  chat:", 1)[1].split("\n  coder:", 1)[0]
    assert "# on_demand = true: Compose cannot start a service on its first request" in block
    assert "`docker compose --profile on-demand up -d coder` starts it" in block
    assert "idle_stop_after = 600 s is vllm-orch's" in block
    assert "On demand in the config: coder." in text.split("services:", 1)[0]


def test_compose_a_disabled_on_demand_instance_is_only_disabled(write_toml):
    path = write(write_toml, coder="idle_stop_after = 600\n[instance.coder.control]\nenabled = false")
    text, doc = compose_doc(path)
    assert doc["services"]["coder"]["profiles"] == ["disabled"]
    assert "profile 'on-demand'" not in text and "on_demand = true" not in text


def test_compose_without_on_demand_says_nothing_of_it(write_toml):
    path = write_toml(textwrap.dedent(FLEET).format(docker="", coder="").replace("on_demand = true", ""))
    text, doc = compose_doc(path)
    assert "profile 'on-demand'" not in text and "on_demand = true" not in text and "On demand" not in text
    assert all("profiles" not in service for service in doc["services"].values())


# ----------------------------------------------------------------------------- Kubernetes
def _deployments(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["annotations"]["vllm-orch.io/instance"]: d for d in docs if d["kind"] == "Deployment"}


def test_k8s_on_demand_is_replicas_0_with_annotations_and_a_warning(write_toml, capsys):
    docs, out, err = k8s(capsys, write(write_toml))
    deployments = _deployments(docs)
    assert deployments["chat"]["spec"]["replicas"] == 1
    coder = deployments["coder"]
    assert coder["spec"]["replicas"] == 0
    assert coder["metadata"]["annotations"]["vllm-orch.io/on-demand"] == "true"
    assert coder["metadata"]["annotations"]["vllm-orch.io/idle-stop-after"] == "600"
    assert "vllm-orch.io/on-demand" not in deployments["chat"]["metadata"]["annotations"]
    assert not [d for d in docs if d["kind"] == "HTTPScaledObject"]
    warning = [line for line in err.splitlines() if "instance.coder.docker.on_demand" in line]
    assert len(warning) == 1 and "warning:" in warning[0]
    assert "nothing in a plain cluster scales it from zero" in warning[0] and "keda_http = true" in warning[0]
    assert "idle_stop_after" not in err  # said once, by the on_demand warning, not as "not used"
    for doc in docs:
        assert kubernetes_validate.validate(doc, "1.37", strict=True) == "1.37"


def _validate_keda(doc: dict) -> None:
    """The CRD's openAPIV3Schema, unknown fields refused (as `kubectl apply --validate=strict`),
    and its one CEL rule: a scaleTargetRef names portName or port, not both."""
    schema = yaml.safe_load(KEDA_SCHEMA.read_text())
    assert (doc["apiVersion"], doc["kind"]) == (f"{schema['group']}/{schema['version']}", schema["kind"])

    def strict(node: dict) -> dict:
        node = dict(node)
        if node.get("type") == "object" and "properties" in node:
            node["properties"] = {k: strict(v) for k, v in node["properties"].items()}
            node.setdefault("additionalProperties", False)
        if "items" in node:
            node["items"] = strict(node["items"])
        return {k: v for k, v in node.items() if not k.startswith("x-kubernetes")}

    jsonschema.validate(doc, strict(schema["openAPIV3Schema"]))
    target = doc["spec"]["scaleTargetRef"]
    assert ("portName" in target) != ("port" in target)


def test_k8s_keda_http_adds_a_valid_http_scaled_object(write_toml, capsys):
    path = write(write_toml, extra="[kubernetes]\nkeda_http = true\nnamespace = \"llm\"\n")
    docs, out, err = k8s(capsys, path)
    (scaled,) = [d for d in docs if d["kind"] == "HTTPScaledObject"]
    _validate_keda(scaled)
    deployment = _deployments(docs)["coder"]
    service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "od-coder")
    assert deployment["spec"]["replicas"] == 0
    assert scaled["metadata"]["name"] == deployment["metadata"]["name"] == "od-coder"
    assert scaled["metadata"]["namespace"] == "llm"
    assert scaled["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "od-coder",
                                                "service": "od-coder", "port": service["spec"]["ports"][0]["port"]}
    assert scaled["spec"]["replicas"] == {"min": 0, "max": 1}
    assert scaled["spec"]["scaledownPeriod"] == 600
    assert scaled["spec"]["timeouts"]["conditionWait"] == "900s"  # health_start_period: the model's load
    assert "instance.coder" not in err  # nothing to warn about
    assert "KEDA's HTTP add-on scales od-coder from 0" in out.split("---", 1)[0]


def test_k8s_keda_warns_where_it_differs(write_toml, capsys):
    path = write(write_toml, coder="idle_stop_after = 0",
                 extra="[kubernetes]\nkeda_http = true\n[gateway]\nport = 9000\n")
    docs, _, err = k8s(capsys, path)
    (scaled,) = [d for d in docs if d["kind"] == "HTTPScaledObject"]
    _validate_keda(scaled)
    assert "scaledownPeriod" not in scaled["spec"]
    assert "instance.coder.docker.idle_stop_after: warning: 0 (never) has no KEDA counterpart" in err
    assert "not through KEDA's interceptor" in err


def test_k8s_a_disabled_on_demand_instance_is_never_scaled(write_toml, capsys):
    path = write(write_toml, coder="[instance.coder.control]\nenabled = false",
                 extra="[kubernetes]\nkeda_http = true\n")
    docs, _, err = k8s(capsys, path)
    assert _deployments(docs)["coder"]["spec"]["replicas"] == 0
    assert not [d for d in docs if d["kind"] == "HTTPScaledObject"]


def test_the_published_schema_refuses_what_it_should():
    """The fixture is a real check: a misspelt field or a target with both port and portName fails."""
    good = {"apiVersion": "http.keda.sh/v1alpha1", "kind": "HTTPScaledObject", "metadata": {"name": "x"},
            "spec": {"hosts": ["x"], "scaleTargetRef": {"name": "x", "service": "x", "port": 80}}}
    _validate_keda(good)
    typo = {**good, "spec": {**good["spec"], "scaleDownPeriod": 5}}
    with pytest.raises(jsonschema.ValidationError):
        _validate_keda(typo)
    both = {**good, "spec": {**good["spec"], "scaleTargetRef": {"service": "x", "port": 80, "portName": "http"}}}
    with pytest.raises(AssertionError):
        _validate_keda(both)


def test_k8s_keda_http_without_an_on_demand_instance_says_it_makes_nothing(write_toml, capsys):
    path = write_toml(textwrap.dedent(FLEET).format(docker="", coder="").replace("on_demand = true", "")
                      + "[kubernetes]\nkeda_http = true\n")
    docs, _, err = k8s(capsys, path)
    assert not [d for d in docs if d["kind"] == "HTTPScaledObject"]
    assert "kubernetes.keda_http: warning: no enabled instance is on demand" in err
    assert all(d["spec"]["replicas"] == 1 for d in docs if d["kind"] == "Deployment")
