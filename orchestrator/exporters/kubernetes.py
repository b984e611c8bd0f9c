"""Resolved plan -> Kubernetes manifests: per instance a Deployment and a Service.

Pure, and on resolved data only: the checked project's neutral specs (the argv exactly as `plan`
shows it, through the image's vLLM option table when one was known) and its `[kubernetes]`
settings as `resolve` merged them (`Resolved.kubernetes`) go in, never the TOML itself; a list
of manifest dicts comes out, and text through `yaml.safe_dump_all`. No value ever reaches the YAML as text: the only hand-written text is the
header, whose lines are comments with every line break inside a value escaped, and the text is
read back and must give the manifests it was made from.

Choices, each for a reason a reviewer would ask about:

* the container runs the vLLM argv itself (`command` + `args`), not Docker's `/bin/sh` log
  wrapper: vLLM's output goes to stdout, where `kubectl logs` and the cluster's log collector
  read it; `shareProcessNamespace` makes the pod's pause process PID 1, which reaps vLLM's
  worker processes as `init: true` (tini) does under Docker;
* rollout `RollingUpdate` with `maxSurge: 0, maxUnavailable: 1`: a new pod is created only after
  an old one is gone, so a rollout never needs a free GPU on a fully booked node (a surge pod
  would wait for GPUs its own predecessor holds); with several replicas the others keep serving,
  which `Recreate` would not;
* disabled instances (and all of them when `master.enable = false`) keep their Deployment with
  `replicas: 0`, as `up` removes a disabled instance's container and the Compose export puts it
  in a `disabled` profile: a plain `kubectl apply -f` then stops a pod that ran before, where a
  missing Deployment would be left running (unless `--prune`);
* probes GET `/health` (a startupProbe allowing `health_start_period` for model loading, then
  readiness and liveness). Not `/v1/models`: vLLM listens only once the model is loaded, so it
  says nothing `/health` does not, and with `api_key` it answers 401 (a probe header would put
  the key into the manifest);
* `enableServiceLinks: false`: Kubernetes would otherwise put `<SERVICE>_PORT=tcp://...` variables
  for every Service of the namespace into the environment, and vLLM reads `VLLM_PORT` and
  friends as its own settings;
* secrets only as `secretKeyRef`s to one Secret per project (or `secret_name`); the header shows
  how to create it, naming the keys, never the values.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from typing import Any, Mapping

import yaml

from orchestrator import __version__, options
from orchestrator.config.validate import parallel_sizes
from orchestrator.errors import ConfigError, OrchestratorError, Problem
from orchestrator.exporters import comment_text, keda, object_metadata, safe_loader
from orchestrator.exporters.kubernetes_settings import DNS_LABEL_PATTERN, InstanceSettings, KubernetesInputs
from orchestrator.spec import InstanceSpec, Mount, parse_size
from orchestrator.value import Value, field

ANNOTATION_PREFIX = "vllm-orch.io"
CONTAINER_NAME = "vllm"
PORT_NAME = "http"
SHM_VOLUME = "dshm"
PROBE_TIMEOUT_S = 5
PROBE_FAILURES = 3  # as the Docker health check's retries

_DNS_LABEL = re.compile(DNS_LABEL_PATTERN)
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")  # Service names: a letter first
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_SECRET_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")
_USER_IDS = re.compile(r"^(\d+)(?::(\d+))?$")
_WILDCARD_HOSTS = ("0.0.0.0", "::", "")

# [docker] keys with no Kubernetes counterpart (declared in the option table): a warning where the TOML sets them.
# (on_demand and idle_stop_after are skipped where it is read: exporters/keda.py says what becomes of them.)
_DOCKER_ONLY: dict[str, str] = options.DOCKER_ONLY


class Rendering(Value, frozen=False):
    """What `vllm-orch k8s` writes (`text`) and says (`warnings`, one line each)."""

    manifests: list[dict[str, Any]]
    warnings: list[Problem]
    text: str = ""
    instances: int = 0


class _Context(Value, frozen=False):
    project: Any
    source: str
    inputs: KubernetesInputs  # the resolved [kubernetes] settings (Resolved.kubernetes)
    problems: list[Problem] = field(factory=list)
    # (namespace, Secret) -> key -> (first instance, sha256 of its value): one Secret, one value
    secrets: dict[tuple[Any, str], dict[str, tuple[str, str]]] = field(factory=dict)
    volume_keys: dict[str, str] = field(factory=dict)  # mapped container path -> where it was written
    volume_targets: set[str] = field(factory=set)

    def error(self, path: str, message: str, hint: str = "") -> None:
        self.problems.append(Problem("error", path, message, hint=hint, source=self.source))

    def warn(self, path: str, message: str, hint: str = "") -> None:
        self.problems.append(Problem("warning", path, message, hint=hint, source=self.source))

    def blocking(self, blocks: bool, path: str, message: str, hint: str = "") -> None:
        """An error where it `blocks` (an instance that will run), else a warning: a disabled
        instance (replicas: 0) never stops the export of the others."""
        (self.error if blocks else self.warn)(path, message, hint)


# ----------------------------------------------------------------------------- names
def kubernetes_name(project: str, instance: str) -> str:
    """`<project>-<instance>`, as the Docker container is named, in the characters Kubernetes allows."""
    return re.sub(r"[_.]+", "-", f"{project}-{instance}".lower())


# ----------------------------------------------------------------------------- one instance
def _labels(ctx: _Context, path: str, name: str, settings: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(selector labels, all labels). The selector is immutable in a Deployment, so it holds only
    what never changes for an instance: its name."""
    selector = {"app.kubernetes.io/name": "vllm", "app.kubernetes.io/instance": name}
    labels = {
        **selector,
        "app.kubernetes.io/component": "inference-server",
        "app.kubernetes.io/part-of": ctx.project.resolved.project,
        "app.kubernetes.io/managed-by": "vllm-orch",
    }
    for key, value in (settings.get("labels") or {}).items():
        if key in selector:
            ctx.error(f"{path}.labels.{key}", "is set by vllm-orch: it selects the instance's pods")
            continue
        labels[key] = value
    for key, value in labels.items():
        _check_key(ctx, f"{path}.labels.{key}", key)
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            ctx.error(f"{path}.labels.{key}", f"label value {value!r} is not valid in Kubernetes",
                      hint="at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit")
    return selector, labels


def _check_key(ctx: _Context, path: str, key: str) -> None:
    prefix, slash, name = key.rpartition("/")
    if not _LABEL_NAME.match(name) or len(name) > 63 or (slash and (not _DNS_SUBDOMAIN.match(prefix) or len(prefix) > 253)):
        ctx.error(path, f"{key!r} is not a valid Kubernetes label or annotation key",
                  hint="[prefix/]name: a DNS subdomain prefix, a name of up to 63 letters, digits, '-', '_', '.'")


_PARALLEL_FLAGS = {  # vLLM's spellings of the three sizes, as extra_args may carry them
    "--tensor-parallel-size": 0, "-tp": 0, "--pipeline-parallel-size": 1, "-pp": 1,
    "--data-parallel-size": 2, "-dp": 2,
}


def vllm_gpu_count(spec: InstanceSpec) -> tuple[int, str] | None:
    """(GPUs the server uses, how: "tensor 2 x pipeline 1 x data 1"): the three parallel sizes
    of its server table, an extra_args flag winning as it does in vLLM's parser (the last one
    given); None when a size is not a whole number (then no count can be known)."""
    sizes = parallel_sizes(spec.server)
    if sizes is None:
        return None
    found = list(sizes)
    args = list(spec.extra_args)
    for index, token in enumerate(args):
        if token == "--":
            break
        flag, equals, value = token.partition("=")
        if flag not in _PARALLEL_FLAGS:
            continue
        if not equals:
            value = args[index + 1] if index + 1 < len(args) else ""
        if not value.isdigit():
            return None
        found[_PARALLEL_FLAGS[flag]] = int(value)
    tp, pp, dp = found
    return tp * pp * dp, f"tensor {tp} x pipeline {pp} x data {dp}"


def _gpu_limit(ctx: _Context, spec: InstanceSpec, settings: dict[str, Any], enabled: bool) -> int:
    """GPUs per pod: the ids' count, or for "all" (also the default) `gpu_count`, else the
    count vLLM uses. Errors only where the pod will run: a disabled instance warns."""
    path = f"instance.{spec.name}"
    count = settings.get("gpu_count")
    gpu = spec.gpu
    if gpu.mode == "all":
        return _all_gpus(ctx, spec, count, enabled)
    if count is not None and count != (gpu.count or 0):
        ctx.blocking(enabled, f"{path}.kubernetes.gpu_count", f"{count} contradicts gpu_ids = {gpu.describe()!r} "
                     f"({gpu.count} GPU(s))", hint='gpu_count is for gpu_ids = "all"')
    if gpu.mode == "ids":
        ctx.warn(f"{path}.control.gpu_ids", f"{gpu.describe()}: Kubernetes picks which {gpu.count} GPU(s) of the "
                 f"node the pod gets; the ids are kept only in the annotation {ANNOTATION_PREFIX}/gpu-ids")
    return gpu.count or 0


def _all_gpus(ctx: _Context, spec: InstanceSpec, count: int | None, enabled: bool) -> int:
    """gpu_ids = "all" (or omitted): a cluster has no "all", so a number of GPUs per pod."""
    path = f"instance.{spec.name}"
    uses = vllm_gpu_count(spec)
    if count is not None:
        tp, pp = spec.server.get("tensor_parallel_size", 1), spec.server.get("pipeline_parallel_size", 1)
        if isinstance(tp, int) and isinstance(pp, int) and tp * pp > count:
            ctx.blocking(enabled, f"{path}.kubernetes.gpu_count", f"{count} GPU(s) but vLLM needs {tp * pp} "
                         f"(tensor {tp} x pipeline {pp})")
        return count
    if uses is None:
        ctx.blocking(enabled, f"{path}.control.gpu_ids", '"all" has no count in Kubernetes, and the parallel sizes '
                     "do not give one: set [kubernetes] gpu_count"
                     + ("" if enabled else " (until then its pod would get no GPU)"),
                     hint=f"e.g. [instance.{spec.name}.kubernetes] gpu_count = 1")
        return 0
    number, how = uses
    ctx.warn(f"{path}.control.gpu_ids", f'"all": each pod asks for {number} GPU(s), the count vLLM uses ({how})',
             hint=f"set [instance.{spec.name}.kubernetes] gpu_count for another number")
    return number


def _quantity(size: Any) -> str:
    """A Kubernetes quantity for a Docker size ("8g" -> "8Gi", "1.5g" -> "1536Mi")."""
    number = parse_size(size)
    for suffix, unit in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if number and number % unit == 0:
            return f"{number // unit}{suffix}"
    return str(number)


def _env(ctx: _Context, spec: InstanceSpec, namespace: str | None, secret_name: str, gpus: int) -> list[dict[str, Any]]:
    work = spec.workload
    path = f"instance.{spec.name}"
    env = dict(work.env)
    if gpus == 0:
        # Where the NVIDIA runtime is a node's default, a pod without a GPU limit would see every
        # GPU of the node; "void" hides them (as for gpu_ids = "none" under Docker).
        env["NVIDIA_VISIBLE_DEVICES"] = "void"
    elif "CUDA_VISIBLE_DEVICES" in env or "NVIDIA_VISIBLE_DEVICES" in env:
        key = "CUDA_VISIBLE_DEVICES" if "CUDA_VISIBLE_DEVICES" in env else "NVIDIA_VISIBLE_DEVICES"
        ctx.error(f"{path}.docker.env.{key}", "the device plugin decides which GPUs a pod sees",
                  hint="choose the number of GPUs with gpu_ids / gpu_count instead")
    items: list[dict[str, Any]] = [{"name": key, "value": value} for key, value in env.items()]
    for key, value in work.secret_env:
        if not _SECRET_KEY.match(key):
            ctx.error(f"{path}.docker.secret_env", f"{key!r} cannot be a key of a Kubernetes Secret")
        items.append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}})
        if value is not None:
            seen = ctx.secrets.setdefault((namespace, secret_name), {})
            digest = hashlib.sha256(value.encode()).hexdigest()
            first = seen.setdefault(key, (spec.name, digest))
            if first[1] != digest:
                ctx.error(f"{path}.kubernetes.secret_name", f"instances {first[0]!r} and {spec.name!r} read {key} from "
                          f"the Secret {secret_name!r} but the config gives them different values",
                          hint=f"give one of them its own [instance.{spec.name}.kubernetes] secret_name")
    return items


def _volumes(ctx: _Context, spec: InstanceSpec, inputs: InstanceSettings) -> tuple[list, list]:
    path = f"instance.{spec.name}"
    written = dict(inputs.written_sources)  # container path -> host path as the TOML writes it
    settings = inputs.settings
    mapping = settings.get("volumes") or {}
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    names = {SHM_VOLUME}
    for mount in spec.workload.mounts:  # the log goes to stdout here: no log file to mount
        ctx.volume_targets.add(mount.target)
        name = _volume_name(mount, names)
        entry = mapping.get(mount.target)
        volume: dict[str, Any] = {"name": name}
        if entry is not None:
            where = f"{path}.kubernetes.volumes.{mount.target}"
            if ("claim" in entry) == ("host_path" in entry):
                ctx.error(where, "needs exactly one of claim or host_path")
                continue
            if "claim" in entry:
                if not _DNS_SUBDOMAIN.match(entry["claim"]):
                    ctx.error(f"{where}.claim", f"{entry['claim']!r} is not a valid claim name")
                claim: dict[str, Any] = {"claimName": entry["claim"]}
                if mount.read_only:
                    claim["readOnly"] = True
                volume["persistentVolumeClaim"] = claim
            else:
                if not str(entry["host_path"]).startswith("/"):
                    ctx.error(f"{where}.host_path", "must be an absolute path on the node")
                volume["hostPath"] = {"path": entry["host_path"]}
        else:
            raw = written.get(mount.target, "")
            if raw and not raw.startswith(("/", "~")):
                ctx.warn(f"{path}.docker.volumes", f"{mount.target}: hostPath {mount.source}, resolved from the relative "
                         f"{raw!r} on this machine; every node that may run the pod needs it there",
                         hint=f'map it in [kubernetes] volumes: "{mount.target}" = {{ claim = "NAME" }}')
            volume["hostPath"] = {"path": mount.source}
        volumes.append(volume)
        item: dict[str, Any] = {"name": name, "mountPath": mount.target}
        if mount.read_only:
            item["readOnly"] = True
        if entry is not None and entry.get("sub_path"):
            sub_path = str(entry["sub_path"])
            if sub_path.startswith("/") or ".." in sub_path.split("/"):  # the API server refuses both
                ctx.error(f"{path}.kubernetes.volumes.{mount.target}.sub_path",
                          f"{sub_path!r} must be a relative path inside the volume, without '..'")
            item["subPath"] = sub_path
        mounts.append(item)
    return volumes, mounts


def _volume_name(mount: Mount, taken: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", mount.target.lower()).strip("-")[:50].strip("-") or "root"
    name, number = base, 2
    while name in taken:
        name, number = f"{base}-{number}", number + 1
    taken.add(name)
    return name


def _probes(spec: InstanceSpec) -> dict[str, Any]:
    health = spec.workload.health  # a [docker] health_cmd is Docker's: the probes GET the path
    interval, start = health.interval_s, health.start_period_s
    get = {"path": health.path, "port": PORT_NAME}
    # failureThreshold x periodSeconds >= health_start_period: model loading may take that long.
    startup_failures = max(PROBE_FAILURES, math.ceil(start / interval))
    return {
        "startupProbe": {"httpGet": get, "periodSeconds": interval, "timeoutSeconds": PROBE_TIMEOUT_S,
                         "failureThreshold": startup_failures},
        "readinessProbe": {"httpGet": dict(get), "periodSeconds": interval, "timeoutSeconds": PROBE_TIMEOUT_S,
                           "failureThreshold": PROBE_FAILURES},
        "livenessProbe": {"httpGet": dict(get), "periodSeconds": interval, "timeoutSeconds": PROBE_TIMEOUT_S,
                          "failureThreshold": PROBE_FAILURES},
    }


def _resources(ctx: _Context, spec: InstanceSpec, settings: dict[str, Any], gpus: int) -> dict[str, Any]:
    gpu_resource = settings["gpu_resource"]
    resources: dict[str, Any] = {}
    table = settings.get("resources") or {}
    for kind in ("requests", "limits"):
        values = {key: str(value) for key, value in (table.get(kind) or {}).items()}
        if gpu_resource in values:
            ctx.error(f"instance.{spec.name}.kubernetes.resources.{kind}.{gpu_resource}",
                      "GPUs come from gpu_ids (and gpu_count for \"all\")")
        if kind == "limits" and gpus:
            values[gpu_resource] = gpus  # extended resources: the request defaults to the limit
        if values:
            resources[kind] = values
    return resources


def _instance_manifests(ctx: _Context, spec: InstanceSpec, namespace: str | None) -> list[dict[str, Any]]:
    """The instance's Deployment and Service, with its problems collected in `ctx`."""
    inputs: InstanceSettings = ctx.inputs.instances[spec.name]
    settings = inputs.settings
    name = kubernetes_name(ctx.project.resolved.project, spec.name)
    enabled = spec.enabled and ctx.project.resolved.master.enable
    ns = namespace or settings.get("namespace")
    secret_name = settings.get("secret_name") or f"{ctx.project.resolved.project}-secrets"
    _check_names(ctx, spec, name, settings, secret_name)
    gpus = _gpu_limit(ctx, spec, settings, enabled)
    selector, labels = _labels(ctx, f"instance.{spec.name}.kubernetes", name, settings)
    for key in list(settings.get("annotations") or {}) + list(settings.get("service_annotations") or {}):
        _check_key(ctx, f"instance.{spec.name}.kubernetes.annotations.{key}", key)
    volumes, volume_mounts = _volumes(ctx, spec, inputs)
    volumes.insert(0, _shm_volume(spec, inputs))
    volume_mounts.insert(0, {"name": SHM_VOLUME, "mountPath": "/dev/shm"})
    container = _container(ctx, spec, settings, ns, secret_name, gpus, volume_mounts)
    pod = _pod(ctx, spec, settings, container, volumes)
    deployment = _deployment(spec, settings, name, ns, selector, labels, pod, enabled)
    service = _service(spec, settings, name, ns, selector, labels)
    _docker_only_warnings(ctx, spec, inputs)
    scaler = _on_demand(ctx, spec, settings, deployment, service, enabled) if spec.workload.on_demand else []
    scaler += _service_monitor(ctx, spec, settings, name, ns, selector, labels)
    for key in settings.get("volumes") or {}:
        ctx.volume_keys.setdefault(key, f"instance.{spec.name}.kubernetes.volumes" if key in inputs.own_volume_keys
                                   else "kubernetes.volumes")
    return [deployment, service, *scaler]


def _keda_unused(ctx: _Context, manifests: list[dict[str, Any]]) -> None:
    """keda_http written where no instance is on demand: it makes nothing, say so once."""
    inputs = ctx.inputs.instances
    if any(doc["kind"] == keda.KEDA_KIND for doc in manifests):
        return
    if any(inputs[spec.name].settings.get("keda_http") is True for spec in ctx.project.resolved.instances):
        ctx.warn("kubernetes.keda_http", "no enabled instance is on demand, so there is nothing for KEDA to scale",
                 hint="set [docker] on_demand = true where an instance should start on its first request")


def _on_demand(ctx: _Context, spec: InstanceSpec, settings: dict[str, Any], deployment: dict[str, Any],
               service: dict[str, Any], enabled: bool) -> list[dict[str, Any]]:
    """An on-demand instance: replicas 0 and its annotations; with keda_http its HTTPScaledObject,
    else a warning that nothing scales it (exporters/keda.py). A disabled one stays at 0 unscaled."""
    deployment["spec"]["replicas"] = 0
    deployment["metadata"]["annotations"].update(keda.deployment_annotations(spec))
    if not enabled:
        return []
    use_keda = settings.get("keda_http") is True
    for path, message, hint in keda.warnings(spec, use_keda, ctx.project.resolved.gateway is not None):
        ctx.warn(path, message, hint)
    if not use_keda:
        return []
    meta = service["metadata"]
    return [keda.http_scaled_object(spec, meta["name"], meta.get("namespace"), dict(meta.get("labels") or {}),
                                    service["spec"]["ports"][0]["port"], settings["replicas"])]


def _check_names(ctx: _Context, spec: InstanceSpec, name: str, settings: dict[str, Any], secret_name: str) -> None:
    """What the API server would refuse in the instance's names, image and address."""
    path = f"instance.{spec.name}"
    if len(name) > 63 or not _DNS_1035.match(name):
        ctx.error(path, f"the Kubernetes name {name!r} (<project>-<instance>) is not a valid Service name",
                  hint="at most 63 characters, a letter first; shorten the instance or project name (-p)")
    if not spec.workload.image:
        ctx.error(f"{path}.docker.image", "no image: set [docker] image (or per instance)")
    if spec.host and spec.host not in _WILDCARD_HOSTS:
        ctx.error(f"{path}.server.host", f"vLLM would listen on {spec.host} only; the Service and the probes reach "
                  "the pod's own address", hint='use host = "0.0.0.0" or leave it unset')
    if spec.workload.secret_env and (len(secret_name) > 253 or not _DNS_SUBDOMAIN.match(secret_name)):
        ctx.error(f"{path}.kubernetes.secret_name", f"{secret_name!r} is not a valid Secret name")
    for pull in settings.get("image_pull_secrets") or []:
        if not _DNS_SUBDOMAIN.match(pull):
            ctx.error(f"{path}.kubernetes.image_pull_secrets", f"{pull!r} is not a valid Secret name")


def _shm_volume(spec: InstanceSpec, inputs: InstanceSettings) -> dict[str, Any]:
    """/dev/shm as an in-memory emptyDir of shm_size (also under ipc = "host", which has no counterpart)."""
    shm = spec.workload.shm_size if spec.workload.shm_size is not None else inputs.shm_size
    try:
        shm_limit = _quantity(shm)
    except ValueError:  # reported by validate as docker.shm_size
        shm_limit = None
    return {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", **({"sizeLimit": shm_limit} if shm_limit else {})}}


def _container(ctx: _Context, spec: InstanceSpec, settings: dict[str, Any], ns: str | None, secret_name: str,
               gpus: int, volume_mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """The pod's one container: vLLM's argv itself (launcher `command`, server flags `args`)."""
    command, args = list(spec.command), []
    if spec.server_args and tuple(spec.command[-len(spec.server_args):]) == spec.server_args:
        command, args = list(spec.command[: len(spec.command) - len(spec.server_args)]), list(spec.server_args)
    container: dict[str, Any] = {"name": CONTAINER_NAME, "image": spec.workload.image, "command": command}
    if args:
        container["args"] = args
    container["ports"] = [{"name": PORT_NAME, "containerPort": spec.port, "protocol": "TCP"}]
    container["env"] = _env(ctx, spec, ns, secret_name, gpus)
    resources = _resources(ctx, spec, settings, gpus)
    if resources:
        container["resources"] = resources
    container["volumeMounts"] = volume_mounts
    container.update(_probes(spec))
    return container


def _pod(ctx: _Context, spec: InstanceSpec, settings: dict[str, Any], container: dict[str, Any],
         volumes: list[dict[str, Any]]) -> dict[str, Any]:
    work = spec.workload
    pod: dict[str, Any] = {
        "enableServiceLinks": False,
        "shareProcessNamespace": True,
        "terminationGracePeriodSeconds": work.stop_timeout,
    }
    if work.user:
        ids = _USER_IDS.match(work.user)
        if ids:
            pod["securityContext"] = {"runAsUser": int(ids.group(1)), **({"runAsGroup": int(ids.group(2))} if ids.group(2) else {})}
        else:
            ctx.warn(f"instance.{spec.name}.docker.user", f"{work.user!r} is not set: Kubernetes runs containers "
                     "as numeric ids only", hint='use "uid[:gid]"')
    for key, field_name in (("runtime_class_name", "runtimeClassName"), ("node_selector", "nodeSelector"),
                            ("tolerations", "tolerations"), ("affinity", "affinity")):
        if settings.get(key):
            pod[field_name] = settings[key]
    if settings.get("image_pull_secrets"):
        pod["imagePullSecrets"] = [{"name": pull} for pull in settings["image_pull_secrets"]]
    pod["containers"] = [container]
    pod["volumes"] = volumes
    return pod


def _deployment(spec: InstanceSpec, settings: dict[str, Any], name: str, ns: str | None, selector: dict[str, str],
                labels: dict[str, str], pod: dict[str, Any], enabled: bool) -> dict[str, Any]:
    ours = {f"{ANNOTATION_PREFIX}/instance": spec.name, f"{ANNOTATION_PREFIX}/gpu-ids": spec.gpu.describe()}
    if spec.served_model:
        ours[f"{ANNOTATION_PREFIX}/model"] = spec.served_model
    user_annotations = dict(settings.get("annotations") or {})
    pod_annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(spec.port),
                       "prometheus.io/path": "/metrics", **user_annotations}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_metadata(name, ns, labels, {**ours, **user_annotations}),
        "spec": {
            "replicas": settings["replicas"] if enabled else 0,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1}},
            "template": {"metadata": {"labels": dict(labels), "annotations": pod_annotations}, "spec": pod},
        },
    }


def _service(spec: InstanceSpec, settings: dict[str, Any], name: str, ns: str | None, selector: dict[str, str],
             labels: dict[str, str]) -> dict[str, Any]:
    publish = spec.workload.publish
    service_port = publish.host_port if publish else spec.port  # publish_port: the port clients use
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(name, ns, labels, dict(settings.get("service_annotations") or {})),
        "spec": {
            "type": settings["service_type"],
            "selector": dict(selector),
            "ports": [{"name": PORT_NAME, "port": service_port, "targetPort": PORT_NAME, "protocol": "TCP"}],
        },
    }


def _service_monitor(ctx: _Context, spec: InstanceSpec, settings: dict[str, Any], name: str, ns: str | None,
                     selector: dict[str, str], labels: dict[str, str]) -> list[dict[str, Any]]:
    """`prometheus_operator = true`: the instance's ServiceMonitor (orchestrator/monitoring/kubernetes.py)."""
    if settings.get("prometheus_operator") is not True:
        return []
    from orchestrator.monitoring.kubernetes import service_monitor

    monitoring = ctx.project.resolved.monitoring
    return [service_monitor(name, ns, selector, labels, project=ctx.project.resolved.project, instance=spec.name,
                            model=str(spec.served_model or spec.server.get("model") or ""), port_name=PORT_NAME,
                            interval=monitoring.scrape_interval if monitoring is not None else None)]


def _prometheus_rule(ctx: _Context, namespace: str | None, manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rules as one PrometheusRule, where some instance has a ServiceMonitor."""
    monitors = [doc for doc in manifests if doc["kind"] == "ServiceMonitor"]
    if not monitors:
        return []
    from orchestrator.monitoring.kubernetes import prometheus_rule

    project = ctx.project.resolved.project
    settings = ctx.project.loaded.data.get("kubernetes") or {}
    return [prometheus_rule(project, namespace or settings.get("namespace") or monitors[0]["metadata"].get("namespace"),
                            {"app.kubernetes.io/part-of": project, "app.kubernetes.io/managed-by": "vllm-orch"})]


def _gateway_manifests(ctx: _Context, namespace: str | None) -> list[dict[str, Any]]:
    """`[gateway]`: its ConfigMap, Deployment and Service, the instances' Services as backends."""
    from orchestrator.gateway.kubernetes import manifests

    project = ctx.project
    gateway = project.resolved.gateway
    if gateway is None:
        return []
    if gateway.port < 1024:
        ctx.error("gateway.port", "the gateway's pod runs unprivileged: give it a port above 1023")
    settings = project.loaded.data.get("kubernetes") or {}
    return manifests(
        gateway, project.resolved.instances,
        service_name=lambda instance: kubernetes_name(project.resolved.project, instance),
        service_port=lambda spec: spec.workload.publish.host_port if spec.workload.publish else spec.port,
        namespace=namespace or settings.get("namespace"),
        secret_name=settings.get("secret_name") or f"{project.resolved.project}-secrets",
        labels={"app.kubernetes.io/name": "vllm-orch-gateway", "app.kubernetes.io/part-of": project.resolved.project,
                "app.kubernetes.io/managed-by": "vllm-orch"})


def _docker_only_warnings(ctx: _Context, spec: InstanceSpec, inputs: InstanceSettings) -> None:
    """Per instance: what its own [docker] table says that no manifest field can carry. Keys
    written in the global [docker] table are reported once, by `_global_warnings`."""
    own = dict(inputs.docker_own)
    path = f"instance.{spec.name}.docker"
    for key, why in _DOCKER_ONLY.items():
        if key in own and key not in keda.KEYS:
            ctx.warn(f"{path}.{key}", why)
    _value_warnings(ctx, path, own)


def _value_warnings(ctx: _Context, path: str, table: Mapping[str, Any]) -> None:
    restart = table.get("restart")
    if restart is not None and restart not in ("always", "unless-stopped"):
        ctx.warn(f"{path}.restart", f"{restart!r} is not possible: a Deployment restarts its pods always")
    if table.get("publish") is False:
        ctx.warn(f"{path}.publish", "false: the Service is made anyway (ClusterIP: reachable inside the cluster only)")
    driver = table.get("gpu_driver")
    if driver is not None and driver != "nvidia":
        ctx.warn(f"{path}.gpu_driver", f"{driver!r} is not used: GPUs are counted as [kubernetes] gpu_resource")


def _global_warnings(ctx: _Context) -> None:
    table = dict(ctx.inputs.docker_global)
    for key, why in _DOCKER_ONLY.items():
        if key in table and key not in keda.KEYS:
            ctx.warn(f"docker.{key}", why)
    _value_warnings(ctx, "docker", table)


# ----------------------------------------------------------------------------- the file
def _secret_keys(manifests: list[dict[str, Any]]) -> dict[tuple[str | None, str], list[str]]:
    """(namespace, Secret) -> the keys the Deployments read from it, in first-use order."""
    wanted: dict[tuple[str | None, str], list[str]] = {}
    for doc in manifests:
        if doc["kind"] != "Deployment":
            continue
        pod = doc["spec"]["template"]["spec"]
        refs = [env.get("valueFrom", {}).get("secretKeyRef") for env in pod["containers"][0].get("env", [])]
        # The gateway reads its key as a file from a Secret volume (orchestrator/gateway/kubernetes.py).
        refs += [{"name": v["secret"]["secretName"], "key": item["key"]}
                 for v in pod.get("volumes", []) if "secret" in v for item in v["secret"].get("items", [])]
        for ref in filter(None, refs):
            keys = wanted.setdefault((doc["metadata"].get("namespace"), ref["name"]), [])
            if ref["key"] not in keys:
                keys.append(ref["key"])
    return wanted


def _header(project: Any, namespace: str | None, manifests: list[dict[str, Any]], warnings: list[Problem]) -> list[str]:
    resolved = project.resolved
    overrides = project.loaded.layers[1:]
    first = next((doc["metadata"]["name"] for doc in manifests), "NAME")
    lines = [
        f"Kubernetes manifests for the vLLM project {resolved.project!r}, written by `vllm-orch k8s` (vllm-orch {__version__}):",
        "per instance a Deployment and a Service, from the plan `vllm-orch up` runs. Regenerate instead of editing:",
        "the same inputs give the same bytes, so a diff in review is a change of the config.",
        f"  config:    {resolved.config_file}",
        "  overrides: " + (", ".join(overrides) + " (in the order applied)" if overrides else "none"),
        "  namespace: " + (namespace if namespace else "as [kubernetes] namespace says, else kubectl's current one"),
        "",
        "Logs: the container runs vLLM's argv itself (not the /bin/sh log wrapper of the Docker containers), so",
        f"vLLM's output goes to stdout: `kubectl logs deploy/{first}`. control.log_dir and log_file are not used.",
        "GPUs: each pod asks for a number of GPUs (resources.limits); Kubernetes and the device plugin choose which.",
        "",
    ]
    secrets = _secret_keys(manifests)
    if secrets:
        lines += [
            "Secrets are not in this file. Before applying, create each Secret the Deployments read, from a file of",
            "KEY=value lines (never committed) with these keys:",
        ]
        for (ns, secret), keys in secrets.items():
            where = f"-n {ns} " if ns else ""
            lines.append(f"  kubectl {where}create secret generic {secret} --from-env-file={secret}.env   # keys: {' '.join(keys)}")
        lines.append("")
    stopped = [spec.name for spec in resolved.instances if not spec.enabled]
    on_demand = [spec.name for spec in resolved.instances if spec.enabled and spec.workload.on_demand]
    if on_demand and resolved.master.enable:
        scaled = [doc["metadata"]["name"] for doc in manifests if doc["kind"] == keda.KEDA_KIND]
        lines += [f"On demand, so replicas: 0 (annotated {keda.ANNOTATION_ON_DEMAND}): {', '.join(on_demand)}."]
        lines += ([f"KEDA's HTTP add-on scales {', '.join(scaled)} from 0 (HTTPScaledObject): send requests to its "
                   "interceptor with the Service's name as Host."] if scaled else
                  ["Nothing in a plain cluster scales them from 0: set [kubernetes] keda_http = true (KEDA's HTTP "
                   "add-on) or scale them yourself."])
        lines.append("")
    if not resolved.master.enable:
        lines += ["master.enable = false: every Deployment has replicas: 0 (nothing runs until it is true).", ""]
    elif stopped:
        lines += [f"Disabled in the config, so replicas: 0: {', '.join(stopped)}.", ""]
    if warnings:
        lines.append("What the config says that Kubernetes cannot express (each also printed as a warning):")
        lines += [f"  {w.path}: {w.message}" for w in warnings]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _text(header: list[str], manifests: list[dict[str, Any]]) -> str:
    comments = "".join(("# " + comment_text(line)).rstrip() + "\n" for line in header)
    body = yaml.safe_dump_all(manifests, explicit_start=True, sort_keys=False, default_flow_style=False,
                              allow_unicode=True, width=1 << 30)  # never fold: one argv token per line
    text = comments + body
    # The header is the one hand-written part: the text must read back as exactly the manifests.
    if list(yaml.load_all(text, Loader=safe_loader())) != manifests:
        raise OrchestratorError("the Kubernetes export does not read back as the manifests it was made from")
    return text


def render_kubernetes(project: Any, namespace: str | None = None) -> Rendering:
    """The manifests of `project` (a checked orchestrator.project.Project) and their text.
    Raises ConfigError with every problem that makes a manifest wrong; returns the warnings."""
    source = str(project.loaded.path)
    inputs = project.resolved.kubernetes
    if inputs is None:  # opened for another target: resolved with target="kubernetes" only
        raise OrchestratorError("the project was not resolved for Kubernetes (open it with target='kubernetes')")
    ctx = _Context(project=project, source=source, inputs=inputs)
    if namespace is not None and (len(namespace) > 63 or not _DNS_LABEL.match(namespace)):
        raise ConfigError([Problem("error", "", f"namespace {namespace!r} is not a valid Kubernetes namespace",
                                   hint="at most 63 lower-case letters, digits and '-'", source="--namespace")])
    _global_warnings(ctx)
    manifests: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for spec in project.resolved.instances:
        name = kubernetes_name(project.resolved.project, spec.name)
        if name in names:
            ctx.error(f"instance.{spec.name}", f"has the same Kubernetes name {name!r} as instance {names[name]!r}",
                      hint="Kubernetes names have no '_' or '.' and no capitals: rename one of them")
        names.setdefault(name, spec.name)
        manifests += _instance_manifests(ctx, spec, namespace)
    manifests += _gateway_manifests(ctx, namespace)
    manifests += _prometheus_rule(ctx, namespace, manifests)
    _keda_unused(ctx, manifests)
    for key, where in ctx.volume_keys.items():
        if key not in ctx.volume_targets:
            match = difflib.get_close_matches(key, sorted(ctx.volume_targets), n=1)
            ctx.error(f"{where}.{key}", "no [docker] volumes entry mounts there",
                      hint=f"did you mean {match[0]}?" if match else "the keys are container paths of [docker] volumes")
    errors = [p for p in ctx.problems if p.is_error]
    if errors:
        raise ConfigError(errors)
    warnings = ctx.problems
    text = _text(_header(project, namespace, manifests, warnings), manifests)
    return Rendering(manifests=manifests, warnings=warnings, text=text,
                     instances=len(project.resolved.instances))
