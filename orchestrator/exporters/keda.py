"""On-demand instances (`[docker] on_demand`) in the Kubernetes export.

A cluster has no vllm-orch gateway to start a Deployment on its first request, so an on-demand
instance's Deployment is written with `replicas: 0` and annotations saying what it is
(`vllm-orch.io/on-demand`, `vllm-orch.io/idle-stop-after`, for KubeAI-style controllers or a
person's own scaler). With `[kubernetes] keda_http = true` it also gets the object KEDA's HTTP
add-on scales it by: an `HTTPScaledObject` (http.keda.sh/v1alpha1) naming the Deployment and its
Service. KEDA's interceptor then holds a request while the Deployment scales from 0 (for up to
`health_start_period`, the model's load), and KEDA scales it back to 0 after `idle_stop_after`
seconds without a request. The add-on routes by the request's Host header (it cannot read the
model from an OpenAI body): clients send `Host: <the Service's name>` to the interceptor.
"""

from __future__ import annotations

from typing import Any

from orchestrator.exporters import object_metadata

ANNOTATION_ON_DEMAND = "vllm-orch.io/on-demand"
ANNOTATION_IDLE_STOP_AFTER = "vllm-orch.io/idle-stop-after"
KEDA_API_VERSION = "http.keda.sh/v1alpha1"
KEDA_KIND = "HTTPScaledObject"
# The [docker] keys this module speaks for (the exporter's generic "not used" warnings skip them).
KEYS = ("on_demand", "idle_stop_after")


def deployment_annotations(spec: Any) -> dict[str, str]:
    """The Deployment's annotations of an on-demand instance (values are strings in Kubernetes)."""
    return {ANNOTATION_ON_DEMAND: "true", ANNOTATION_IDLE_STOP_AFTER: str(spec.workload.idle_stop_after)}


def http_scaled_object(spec: Any, name: str, namespace: str | None, labels: dict[str, str], service_port: int,
                       max_replicas: int) -> dict[str, Any]:
    """KEDA's HTTP add-on object that scales the Deployment `name` (and routes to its Service of
    the same name) between 0 and `max_replicas`."""
    body: dict[str, Any] = {
        "hosts": [name],
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "service": name,
                           "port": service_port},
        "replicas": {"min": 0, "max": max(1, max_replicas)},
    }
    if spec.workload.idle_stop_after:  # 0 ("never") has no counterpart: KEDA's default applies (a warning)
        body["scaledownPeriod"] = spec.workload.idle_stop_after
    # The interceptor holds the first request until a pod is ready: as long as the model may load.
    body["timeouts"] = {"conditionWait": f"{spec.workload.health.start_period_s}s"}
    return {"apiVersion": KEDA_API_VERSION, "kind": KEDA_KIND,
            "metadata": object_metadata(name, namespace, labels, {}), "spec": body}


def warnings(spec: Any, keda: bool, has_gateway: bool) -> list[tuple[str, str, str]]:
    """(key path, message, hint) of what Kubernetes does differently with this on-demand instance."""
    path = f"instance.{spec.name}.docker"
    if not keda:
        return [(f"{path}.on_demand",
                 "exported with replicas: 0 and nothing in a plain cluster scales it from zero: it serves no request "
                 "until something scales it up",
                 "set [kubernetes] keda_http = true (KEDA's HTTP add-on), or `kubectl scale --replicas=1` it yourself")]
    found = []
    if not spec.workload.idle_stop_after:
        found.append((f"{path}.idle_stop_after", "0 (never) has no KEDA counterpart: KEDA's own scaledownPeriod "
                      "(300 s by default) scales it back to 0", "set idle_stop_after to the seconds you want"))
    if has_gateway:
        found.append((f"{path}.on_demand", "the gateway routes to its Service directly, not through KEDA's "
                      "interceptor: a request through the gateway does not scale it from 0",
                      "send its requests to KEDA's interceptor with the Service's name as Host"))
    return found
