"""The gateway in the Kubernetes export: a ConfigMap (the rendered configuration), a Deployment
running the gateway image, and a Service; its backends are the instances' Services.

Kubernetes has no reload path here: the pod template carries the configuration's version as an
annotation, so `kubectl apply` of a changed export rolls the gateway pod (a rolling update:
the old pod serves until the new one is ready). The key is the Secret's `VLLM_ORCH_GATEWAY_API_KEY`
(the same Secret as the instances' keys), mounted as the file HAProxy reads; never in the export.
"""

from __future__ import annotations

from typing import Any

from orchestrator.exporters import object_metadata
from orchestrator.gateway import files, haproxy
from orchestrator.gateway.routes import Route, models, routes_for
from orchestrator.gateway.settings import GATEWAY_NAME, GatewaySpec

KEY_IN_SECRET = "VLLM_ORCH_GATEWAY_API_KEY"
PORT_NAME = "http"
RUN_AS = 65534  # nobody: HAProxy needs no privilege for a port above 1023


def config_key(path: str) -> str:
    """A ConfigMap key for a rendered file (keys cannot hold '/')."""
    return path.replace("/", "__")


def manifests(gateway: GatewaySpec, instances: list, *, service_name, service_port, namespace: str | None,
              secret_name: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """ConfigMap, Deployment and Service of the gateway. `service_name(instance)` and
    `service_port(spec)` give each instance's Service, as the instances' manifests name them."""
    routes = tuple(sorted((Route(str(spec.served_model or spec.server.get("model")), spec.name,
                                 f"{service_name(spec.name)}:{service_port(spec)}")
                           for spec in instances if spec.enabled and (spec.served_model or spec.server.get("model"))),
                          key=lambda r: (r.model, r.instance)))
    routes = tuple(sorted(routes + routes_for([], remote=gateway.remote), key=lambda r: (r.model, r.instance)))
    in_pod = gateway.replace(publish_address="0.0.0.0")  # a pod listens on its own address
    draft = haproxy.render(in_pod, routes, dns_names=True)
    version = files.version_of(draft, gateway.key_digest)
    rendered = haproxy.render(in_pod, routes, version, dns_names=True)
    name = service_name(GATEWAY_NAME)
    meta_labels = {**labels, "app.kubernetes.io/component": GATEWAY_NAME}
    selector = {"app.kubernetes.io/instance": name}
    meta_labels.update(selector)

    def metadata(extra: dict | None = None) -> dict[str, Any]:
        return object_metadata(name, namespace, meta_labels, extra)

    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata(),
                  "data": {config_key(path): data.decode() for path, data in rendered.items()}}
    volumes: list[dict[str, Any]] = [{"name": "config", "configMap": {
        "name": name, "items": [{"key": config_key(path), "path": path} for path in rendered]}}]
    mounts: list[dict[str, Any]] = [{"name": "config", "mountPath": haproxy.CURRENT, "readOnly": True}]
    if gateway.api_key:
        volumes.append({"name": "key", "secret": {"secretName": secret_name, "defaultMode": 0o440, "items": [
            {"key": KEY_IN_SECRET, "path": haproxy.KEYS_FILE}]}})
        mounts.append({"name": "key", "mountPath": haproxy.SECRET_DIR, "readOnly": True})
    probe = {"httpGet": {"path": "/health", "port": PORT_NAME}, "periodSeconds": 5, "timeoutSeconds": 2}
    container = {
        "name": GATEWAY_NAME,
        "image": gateway.image,
        "ports": [{"name": PORT_NAME, "containerPort": gateway.port, "protocol": "TCP"}],
        "volumeMounts": mounts,
        "readinessProbe": probe,
        "livenessProbe": {**probe, "failureThreshold": 3},
        "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}},
    }
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": metadata({"vllm-orch.io/models": ",".join(models(routes))}),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": dict(selector)},
            "template": {
                # A new configuration is a new pod template: `kubectl apply` rolls the gateway.
                "metadata": {"labels": dict(meta_labels), "annotations": {"vllm-orch.io/gateway-config": version}},
                "spec": {"securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                                             "fsGroup": RUN_AS},
                         "containers": [container], "volumes": volumes},
            },
        },
    }
    service = {"apiVersion": "v1", "kind": "Service", "metadata": metadata(),
               "spec": {"type": "ClusterIP", "selector": dict(selector),
                        "ports": [{"name": PORT_NAME, "port": gateway.port, "targetPort": PORT_NAME, "protocol": "TCP"}]}}
    return [config_map, deployment, service]
