"""The `[kubernetes]` keys, declared once: name, JSON Schema, default, doc and where each lands.

`config/schema.py` builds the schema of `[kubernetes]` and `[instance.<name>.kubernetes]` from
`SETTINGS` (so `validate` knows every key and offers a did-you-mean), the README's reference
rows come from `markdown_rows()` (a unit test keeps them equal), and `resolve.resolve_kubernetes`
merges the tables over the defaults declared here into the `InstanceSettings` the exporter reads. Pure data: importing this module costs `validate` nothing measurable.
Values inside `tolerations`, `affinity` and `resources` are spelled as Kubernetes spells them
(camelCase), since they are passed through as they are.
"""

from __future__ import annotations

from typing import Any

from orchestrator.value import Value

# Kubernetes' own pattern for a resource quantity (k8s.io/apimachinery resource.Quantity).
QUANTITY_PATTERN = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DEFAULT_GPU_RESOURCE = "nvidia.com/gpu"

_STRING_MAP: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "string"}}
_QUANTITIES: dict[str, Any] = {
    "type": "object",
    "additionalProperties": {"type": ["string", "integer", "number"], "pattern": QUANTITY_PATTERN},
}
_TOLERATION: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "key": {"type": "string"},
        "operator": {"type": "string", "enum": ["Exists", "Equal"]},
        "value": {"type": "string"},
        "effect": {"type": "string", "enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
        "tolerationSeconds": {"type": "integer"},
    },
}
_VOLUME: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "claim": {"type": "string", "description": "PersistentVolumeClaim to mount there."},
        "host_path": {"type": "string", "description": "Path on the node to mount there."},
        "sub_path": {"type": "string", "description": "Mount only this path inside the volume."},
    },
}


class Setting(Value):
    name: str
    schema: dict
    default: Any
    doc: str
    maps_to: str  # where it lands in the manifests (for the README)


SETTINGS: tuple[Setting, ...] = (
    Setting("namespace", {"type": "string", "pattern": DNS_LABEL_PATTERN}, None,
            "namespace of every object (`--namespace` wins); unset: kubectl's current namespace",
            "`metadata.namespace`"),
    Setting("replicas", {"type": "integer", "minimum": 0}, 1,
            "pods per instance (a disabled instance, or `master.enable = false`, gets 0)", "`spec.replicas`"),
    Setting("gpu_count", {"type": "integer", "minimum": 0}, None,
            'GPUs per pod when `gpu_ids = "all"` or omitted (a cluster has no "all"; unset: the count vLLM '
            "uses, tensor x pipeline x data parallel size, with a warning); otherwise it must equal the number of ids",
            "`resources.limits.<gpu_resource>`"),
    Setting("gpu_resource", {"type": "string"}, DEFAULT_GPU_RESOURCE,
            "extended resource that counts GPUs (the NVIDIA device plugin's by default)", "`resources.limits` key"),
    Setting("resources", {"type": "object", "additionalProperties": False,
                          "properties": {"requests": _QUANTITIES, "limits": _QUANTITIES}}, None,
            "`{ requests = { cpu = \"8\", memory = \"64Gi\" }, limits = { memory = \"96Gi\" } }`",
            "container `resources`"),
    Setting("node_selector", _STRING_MAP, None, "node labels the pods must match", "`nodeSelector`"),
    Setting("tolerations", {"type": "array", "items": _TOLERATION}, None,
            "e.g. `[{ key = \"nvidia.com/gpu\", operator = \"Exists\", effect = \"NoSchedule\" }]`",
            "`tolerations`"),
    Setting("affinity", {"type": "object"}, None, "passed through as written", "`affinity`"),
    Setting("runtime_class_name", {"type": "string"}, None, 'e.g. "nvidia"', "`runtimeClassName`"),
    Setting("image_pull_secrets", {"type": "array", "items": {"type": "string"}}, None,
            "names of docker-registry Secrets", "`imagePullSecrets`"),
    Setting("secret_name", {"type": "string"}, None,
            "Secret holding `api_key` / `hf_token` / `secret_env` values (default `<project>-secrets`)",
            "`env[].valueFrom.secretKeyRef.name`"),
    Setting("volumes", {"type": "object", "additionalProperties": _VOLUME}, None,
            'container path of a `[docker] volumes` entry -> `{ claim = "NAME" }` or `{ host_path = "/PATH" }` '
            "(+ `sub_path`); unmapped entries become a hostPath of the TOML's host path",
            "`volumes` + `volumeMounts`"),
    Setting("service_type", {"type": "string", "enum": ["ClusterIP", "NodePort", "LoadBalancer"]}, "ClusterIP",
            "how the Service is exposed", "Service `spec.type`"),
    Setting("labels", _STRING_MAP, None, "extra labels (Deployment, pods, Service)", "`metadata.labels`"),
    Setting("annotations", _STRING_MAP, None, "extra annotations (Deployment and pods)", "`metadata.annotations`"),
    Setting("service_annotations", _STRING_MAP, None, "annotations of the Service (load balancer settings)",
            "Service `metadata.annotations`"),
    Setting("keda_http", {"type": "boolean"}, False,
            "per on-demand instance (`[docker] on_demand`) a KEDA HTTP add-on `HTTPScaledObject`: the cluster's "
            "KEDA scales its Deployment from 0 on the first request through KEDA's interceptor and back to 0 after "
            "`idle_stop_after`; false: replicas 0 and a warning that nothing scales it",
            "`HTTPScaledObject` (http.keda.sh/v1alpha1)"),
    Setting("prometheus_operator", {"type": "boolean"}, False,
            "for the Prometheus operator: a `ServiceMonitor` of the instance's `/metrics` (labelled `project`, `model`, "
            "`instance` like `[monitoring]`'s targets) and, once, vllm-orch's rules as a `PrometheusRule`",
            "`ServiceMonitor`, `PrometheusRule` (monitoring.coreos.com/v1)"),
)

DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS if s.default is not None}


class InstanceSettings(Value):
    """What the Kubernetes export needs of one instance beyond its neutral spec, resolved once
    with the rest of the config (resolve.py), so the exporter never walks the TOML itself."""

    settings: dict  # [kubernetes] merged with [instance.<name>.kubernetes] (tables merge), over DEFAULTS
    own_volume_keys: tuple[str, ...] = ()  # the keys of [instance.<name>.kubernetes] volumes (where a bad one was written)
    written_sources: tuple[tuple[str, str], ...] = ()  # container path -> host path as the TOML wrote it
    shm_size: Any = None  # the [docker] shm_size that applies (under ipc = "host" too: /dev/shm is an emptyDir here)
    docker_own: tuple[tuple[str, Any], ...] = ()  # the instance's own [docker] table as written (its warnings)


class KubernetesInputs(Value):
    """Every instance's InstanceSettings (by name) and the global [docker] table as written."""

    instances: dict  # name -> InstanceSettings
    docker_global: tuple[tuple[str, Any], ...] = ()


def _described(setting: Setting) -> dict[str, Any]:
    schema = dict(setting.schema)
    schema["description"] = setting.doc.replace("`", "")
    if setting.default is not None:
        schema["default"] = setting.default
    return schema


def schema_fragment(description: str) -> dict[str, Any]:
    """The JSON Schema of one `[kubernetes]` table."""
    return {
        "type": "object",
        "description": description,
        "additionalProperties": False,
        "properties": {s.name: _described(s) for s in SETTINGS},
    }


def markdown_rows() -> str:
    """The README's reference table of these keys."""
    lines = ["| key | default | Kubernetes field | meaning |", "| --- | --- | --- | --- |"]
    for s in SETTINGS:
        default = "unset" if s.default is None else f"`{s.default!r}`".replace("'", '"')
        lines.append(f"| `{s.name}` | {default} | {s.maps_to} | {s.doc.replace('|', chr(92) + '|')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # python -m orchestrator.exporters.kubernetes_settings > rows for the README
    print(markdown_rows(), end="")
