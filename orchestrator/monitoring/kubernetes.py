"""`[kubernetes] prometheus_operator = true`: what the Prometheus operator reads, beside the
instances' Deployments and Services. A ServiceMonitor per instance (its Service's `/metrics`, with
the `project`, `model`, `instance` and `job` labels `up`'s Prometheus gives its targets, so the
rules and the dashboard work unchanged) and the rules as one PrometheusRule. Checked against the
operator's published CRD schemas (tests/fixtures/prometheus-operator/, tests/unit/test_monitoring_k8s.py).
"""

from __future__ import annotations

from typing import Any

from orchestrator.monitoring import rules
from orchestrator.monitoring.queries import JOB_VLLM

API_VERSION = "monitoring.coreos.com/v1"


def _metadata(name: str, namespace: str | None, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = dict(labels)
    return meta


def service_monitor(name: str, namespace: str | None, selector: dict[str, str], labels: dict[str, str], *,
                    project: str, instance: str, model: str, port_name: str,
                    interval: str | None = None) -> dict[str, Any]:
    """The ServiceMonitor of one instance's Service (`selector`: the labels only its Service has)."""
    def set_label(target: str, value: str) -> dict[str, Any]:
        return {"action": "replace", "targetLabel": target, "replacement": value}

    endpoint: dict[str, Any] = {"port": port_name, "path": "/metrics", "scheme": "http"}
    if interval:
        endpoint["interval"] = interval
    endpoint["relabelings"] = [set_label("job", JOB_VLLM), set_label("project", project),
                               set_label("model", model), set_label("instance", instance)]
    return {"apiVersion": API_VERSION, "kind": "ServiceMonitor", "metadata": _metadata(name, namespace, labels),
            "spec": {"selector": {"matchLabels": dict(selector)}, "endpoints": [endpoint]}}


def prometheus_rule(project: str, namespace: str | None, labels: dict[str, str]) -> dict[str, Any]:
    """The shipped rules (rules.py) as one PrometheusRule."""
    return {"apiVersion": API_VERSION, "kind": "PrometheusRule",
            "metadata": _metadata(f"{project}-vllm-rules".lower().replace("_", "-"), namespace, labels),
            "spec": rules.document()}
