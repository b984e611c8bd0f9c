"""`[kubernetes] prometheus_operator = true`: the `k8s` export's ServiceMonitor per instance and its
PrometheusRule, validated against the Prometheus operator's published CRD schemas (the fixture in
tests/fixtures/prometheus-operator/ says where they come from)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from orchestrator.exporters.kubernetes import render_kubernetes
from orchestrator.monitoring import rules
from orchestrator.project import open_project

SCHEMAS = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "prometheus-operator" /
                      "crd-schemas.json").read_text())

CONFIG = """
[instance.server]
model = "/m"
[instance.a.server]
port = 8001
served_model_name = "m-a"
[instance.b.server]
port = 8002
[docker]
project = "kt"
image = "img:1"
[kubernetes]
namespace = "llm"
{kubernetes}
{extra}
"""


def closed(schema):
    """The schema with every listed object closed (the API server drops unknown fields), its
    patterns in Python's regex syntax."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (node.get("type") == "object" and "properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            pattern = node.get("pattern")
            if isinstance(pattern, str) and "(?i)" in pattern:  # Go's RE2 takes a flag anywhere, Python's at the start
                node["pattern"] = "(?i)" + pattern.replace("(?i)", "")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def manifests(write_toml, kubernetes: str = "prometheus_operator = true", extra: str = "") -> list[dict]:
    project = open_project(write_toml(CONFIG.format(kubernetes=kubernetes, extra=extra)), env={}, backend="kubernetes",
                           strict=False)
    return render_kubernetes(project).manifests


def test_a_service_monitor_per_instance_and_one_prometheus_rule_valid_against_the_operator_crds(write_toml):
    docs = manifests(write_toml, extra='[monitoring]\nscrape_interval = "5s"')
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    rule_docs = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert [m["metadata"]["name"] for m in monitors] == ["kt-a", "kt-b"] and len(rule_docs) == 1
    for doc in monitors + rule_docs:
        crd = SCHEMAS[doc["kind"]]
        assert doc["apiVersion"] == f"{crd['group']}/{crd['version']}"
        jsonschema.validate(doc, closed(crd["openAPIV3Schema"]))
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    for monitor in monitors:
        service = services[monitor["metadata"]["name"]]
        selector = monitor["spec"]["selector"]["matchLabels"]
        assert selector.items() <= service["metadata"]["labels"].items()  # it selects its own Service only
        endpoint = monitor["spec"]["endpoints"][0]
        assert endpoint["port"] == service["spec"]["ports"][0]["name"] and endpoint["interval"] == "5s"
        assert monitor["metadata"]["namespace"] == "llm"
    labels = {r["targetLabel"]: r["replacement"] for r in monitors[0]["spec"]["endpoints"][0]["relabelings"]}
    assert labels == {"job": "vllm", "project": "kt", "model": "m-a", "instance": "a"}
    assert rule_docs[0]["spec"] == rules.document() and rule_docs[0]["metadata"]["namespace"] == "llm"


def test_the_crd_check_catches_a_misspelt_field():
    doc = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"},
           "spec": {"selector": {}, "endpoints": [{"port": "http", "intervall": "5s"}]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, closed(SCHEMAS["ServiceMonitor"]["openAPIV3Schema"]))


def test_without_the_switch_there_is_nothing_for_the_operator(write_toml):
    docs = manifests(write_toml, kubernetes="")
    assert not [d for d in docs if d["kind"] in ("ServiceMonitor", "PrometheusRule")]


def test_the_export_text_reads_back(write_toml):
    project = open_project(write_toml(CONFIG.format(kubernetes="prometheus_operator = true", extra="")), env={},
                           backend="kubernetes", strict=False)
    text = render_kubernetes(project).text
    assert [d["kind"] for d in yaml.safe_load_all(text)].count("ServiceMonitor") == 2


def test_monitoring_without_the_operator_switch_is_a_warning_in_the_export(write_toml):
    path = write_toml(CONFIG.format(kubernetes="", extra="[monitoring]\n"))
    project = open_project(path, env={}, backend="kubernetes", strict=False)
    assert any(p.path == "monitoring" and "prometheus_operator" in p.format() for p in project.problems)
    project = open_project(write_toml(CONFIG.format(kubernetes="prometheus_operator = true", extra="[monitoring]\n")),
                           env={}, backend="kubernetes", strict=False)
    assert not [p for p in project.problems if p.path == "monitoring"]
