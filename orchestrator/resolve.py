"""Merged config document -> one InstanceSpec per instance (the contract's merge rules).

Pure: no Docker, no file-system writes. Problems that only show once values are combined
(bad gpu_ids, a volume without a target, ...) are collected, not raised one at a time.
"""

from __future__ import annotations

import functools
import os
import re
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from orchestrator.argv import DEFAULT_MODULE, launch_command, render_server_args, split_secrets
from orchestrator.config.loader import deep_merge
from orchestrator import options
from orchestrator.options import MAX_NAME_LENGTH
from orchestrator.errors import ConfigError, OrchestratorError, Problem, show_value
from orchestrator.gateway.settings import GatewaySpec, read as read_gateway
from orchestrator.monitoring.settings import MonitoringSpec, read as read_monitoring
from orchestrator.container import ContainerSpec, render_container
from orchestrator import secret_files
from orchestrator.sizes import parse_size
from orchestrator.sleep_api import DEV_MODE_ENV, sleep_mode_wanted
from orchestrator.spec import CacheMount, GpuRequest, HealthProbe, InstanceSpec, Mount, PortBinding, Workload
from orchestrator.value import Value, field
from orchestrator.vllm_options import OptionTable

if TYPE_CHECKING:  # imported where the Kubernetes target is resolved
    from orchestrator.exporters.kubernetes_settings import KubernetesInputs

RESERVED_INSTANCE_KEYS = ("control", "server")
DEFAULT_PORT = 8000  # vLLM's own default for --port
DEFAULT_LOG_DIR = "/tmp"

DOCKER_DEFAULTS: dict[str, Any] = dict(options.DEFAULTS)  # the option table's, for every [docker] key
_WILDCARD_HOSTS = {"0.0.0.0", "::", ""}
CACHE_TARGET = "/vllm-orch-cache"  # where the per-instance caches appear inside the container
# Variables by which a user points the Hugging Face libraries at a cache of their own.
_HF_CACHE_VARS = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE")
_PROJECT_CHARS = re.compile(r"[^a-z0-9_-]+")
_PROJECT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


class MasterSettings(Value):
    enable: bool = True
    pixi_project_dir: str | None = None
    pixi_environment: str = "default"
    api_server_module: str = DEFAULT_MODULE

    def to_json(self) -> dict[str, Any]:
        return {
            "enable": self.enable,
            "pixi_project_dir": self.pixi_project_dir,
            "pixi_environment": self.pixi_environment,
            "api_server_module": self.api_server_module,
        }


class Resolved(Value, frozen=False):
    project: str
    config_file: str
    master: MasterSettings
    instances: list[InstanceSpec]
    problems: list[Problem] = field(factory=list)
    # The Kubernetes export's own settings (kubernetes_settings.KubernetesInputs), resolved only
    # for that target (`resolve(..., kubernetes=True)`): no other command pays for them.
    kubernetes: KubernetesInputs | None = None
    # `[gateway]` resolved (gateway/settings.GatewaySpec); None when there is none or it is off.
    gateway: GatewaySpec | None = None
    # `[monitoring]` resolved (monitoring/settings.MonitoringSpec); None when there is none or it is off.
    monitoring: MonitoringSpec | None = None
    # The Docker target's rendering of each instance (container.py), by instance name: beside
    # the neutral specs, not in them, so the Kubernetes export and the launcher never see it.
    containers: dict[str, ContainerSpec] = field(factory=dict)

    def instance(self, name: str) -> InstanceSpec | None:
        return next((i for i in self.instances if i.name == name), None)

    def container_of(self, name: str) -> ContainerSpec:
        """The Docker rendering of instance `name` (every instance of a resolved config has one)."""
        container = self.containers.get(name)
        if container is None:
            raise OrchestratorError(f"instance {name!r}: internal error: no Docker rendering")
        return container


def default_project(config_path: Path) -> str:
    name = _PROJECT_CHARS.sub("-", config_path.stem.lower()).strip("-_")[:MAX_NAME_LENGTH].rstrip("-_")
    return name or "default"


def instance_tables(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Every key of [instance] except control/server, in file order."""
    section = data.get("instance") or {}
    return {k: v for k, v in section.items() if k not in RESERVED_INSTANCE_KEYS and isinstance(v, dict)}


def resolve(
    data: Mapping[str, Any],
    *,
    config_path: Path,
    project: str | None = None,
    host_env: Mapping[str, str] = os.environ,
    kubernetes: bool = False,
) -> Resolved:
    """The config as value objects, server flags rendered by the contract's literal rules;
    `apply_tables` re-renders them for images whose vLLM option table is known. `kubernetes`:
    also the Kubernetes export's settings (Resolved.kubernetes)."""
    master_raw = data.get("master") or {}
    master = MasterSettings(
        enable=master_raw.get("enable", True),
        pixi_project_dir=master_raw.get("pixi_project_dir") or None,
        pixi_environment=master_raw.get("pixi_environment", "default"),
        api_server_module=master_raw.get("api_server_module", DEFAULT_MODULE),
    )
    docker_global = dict(DOCKER_DEFAULTS)
    docker_global.update(data.get("docker") or {})
    given = project  # -p on the command line: a bad name is its fault, not the file's
    project = project or docker_global.pop("project", None) or default_project(config_path)
    docker_global.pop("project", None)
    if not _PROJECT_NAME.match(project) or len(project) > MAX_NAME_LENGTH:
        raise ConfigError([Problem("error", "" if given else "docker.project",
                                   f"project name {show_value(project)} must match {_PROJECT_NAME.pattern}",
                                   hint=f"lower-case letters, digits, '-' and '_', at most {MAX_NAME_LENGTH}",
                                   source="-p" if given else str(config_path))])
    instance_section = data.get("instance") or {}
    control_defaults = instance_section.get("control") or {}
    server_defaults = instance_section.get("server") or {}

    config_path = Path(os.path.abspath(config_path))
    resolved = Resolved(project=project, config_file=str(config_path), master=master, instances=[])
    refused: list[tuple[str, str]] = []  # a value the global table gives every instance: said once, here
    options.resolve_options(docker_global, refused)
    resolved.problems.extend(Problem("error", f"docker.{key}", message, source=str(config_path))
                             for key, message in refused)
    for name, table_ in instance_tables(data).items():
        control = {**control_defaults, **(table_.get("control") or {})}
        server = {**server_defaults, **(table_.get("server") or {})}
        server["extra_args"] = list(server_defaults.get("extra_args") or []) + list(
            (table_.get("server") or {}).get("extra_args") or []
        )
        own = table_.get("docker")
        docker = deep_merge(docker_global, own) if own else dict(docker_global)
        spec = _resolve_instance(name, control, server, docker, master, config_path, host_env,
                                 resolved.problems, own_docker=own or {})
        resolved.containers[name] = _render(spec, docker, project, config_path)
        resolved.instances.append(spec)
    if kubernetes:
        resolved.kubernetes = resolve_kubernetes(data, master)
    resolved.gateway = read_gateway(data, project=project, config_file=str(config_path))
    resolved.monitoring = read_monitoring(data, project=project, config_file=str(config_path))
    return resolved


def resolve_kubernetes(data: Mapping[str, Any], master: MasterSettings) -> KubernetesInputs:
    """The [kubernetes] tables merged per instance over their declared defaults, with what the
    export says about the [docker] tables as written (kubernetes_settings.KubernetesInputs)."""
    from orchestrator.exporters.kubernetes_settings import DEFAULTS, InstanceSettings, KubernetesInputs

    docker_global = dict(data.get("docker") or {})
    settings_global = deep_merge(DEFAULTS, data.get("kubernetes") or {})
    instances = {}
    for name, table in instance_tables(data).items():
        own_k8s = table.get("kubernetes") or {}
        own_docker = table.get("docker") or {}
        docker = deep_merge(docker_global, own_docker) if own_docker else docker_global
        written: dict[str, str] = {}  # container path -> host path as written (relative ones are warned about)
        for entry in docker.get("volumes") or []:
            host, _, rest = str(entry).partition(":")
            written[rest.split(":")[0].rstrip("/") or "/"] = host
        if master.pixi_project_dir and docker.get("pixi_project_host_dir"):
            written[master.pixi_project_dir.rstrip("/")] = str(docker["pixi_project_host_dir"])
        instances[name] = InstanceSettings(
            # deep_merge copies: no two manifests share an object (YAML would write an alias)
            settings=deep_merge(settings_global, own_k8s),
            own_volume_keys=tuple(own_k8s.get("volumes") or ()),
            written_sources=tuple(written.items()),
            shm_size=docker.get("shm_size", DOCKER_DEFAULTS["shm_size"]),
            docker_own=tuple(own_docker.items()),
        )
    return KubernetesInputs(instances=instances, docker_global=tuple(docker_global.items()))


def _resolve_instance(
    name: str,
    control: dict[str, Any],
    server: dict[str, Any],
    docker: dict[str, Any],
    master: MasterSettings,
    config_path: Path,
    host_env: Mapping[str, str],
    problems: list[Problem],
    own_docker: Mapping[str, Any] | None = None,
) -> InstanceSpec:
    source = str(config_path)
    try:
        gpu = GpuRequest.parse(control.get("gpu_ids"))
    except ValueError as exc:
        problems.append(Problem("error", f"instance.{name}.control.gpu_ids", str(exc), source=source))
        gpu = GpuRequest("all")

    disabled_by = None
    if not master.enable:
        disabled_by = "master.enable = false"
    elif not control.get("enabled", True):
        disabled_by = f"instance.{name}.control.enabled = false"
    log_dir = control.get("log_dir") or DEFAULT_LOG_DIR
    log_file = control.get("log_file") or f"{log_dir.rstrip('/')}/vllm-server-{name}.log"
    extra_args = server.pop("extra_args", [])
    server = {k: v for k, v in server.items() if v is not None}
    plain_server, secrets = split_secrets(server)
    server_args = render_server_args(plain_server, extra_args)
    command = _launch_command(server_args, master)
    port = server.get("port", DEFAULT_PORT)
    host = server.get("host")
    env = {"PYTHONUNBUFFERED": "1"}
    spec = InstanceSpec(
        name=name,
        enabled=disabled_by is None,
        disabled_by=disabled_by,
        background=bool(control.get("background", True)),
        log_file=log_file,
        gpu=gpu,
        server=plain_server,
        extra_args=tuple(str(token) for token in extra_args),
        server_args=tuple(server_args),
        command=tuple(command),
        env=tuple(env.items()),
        secrets=tuple(secrets.items()),
        port=port if isinstance(port, int) else DEFAULT_PORT,
        host=host if isinstance(host, str) else None,
    )
    workload = _workload(spec, docker, master, config_path, host_env, problems, own_docker=own_docker)
    return spec.replace(workload=workload)


def _render(spec: InstanceSpec, docker: dict[str, Any], project: str, config_path: Path) -> ContainerSpec:
    """The instance's Docker container, with the two [docker] settings only that target reads
    (the host directory of its log file, the GPU driver)."""
    base_dir = os.path.dirname(config_path)
    host_log = os.path.join(_host_path(docker["log_host_dir"], base_dir), os.path.basename(spec.log_file))
    return render_container(spec, project=project, config_file=str(config_path), host_log_file=host_log,
                            gpu_driver=docker["gpu_driver"], secret_dir=secret_files.instance_dir(project, spec.name))


def _launch_command(server_args: list[str], master: MasterSettings) -> list[str]:
    return launch_command(server_args, module=master.api_server_module,
                          pixi_project_dir=master.pixi_project_dir, pixi_environment=master.pixi_environment)


def apply_tables(resolved: Resolved, tables: Mapping[str, OptionTable]) -> Resolved:
    """The resolution with the server flags of each instance whose image has a vLLM option table
    rendered by that table (vLLM's real option kinds); nothing else of it depends on the table."""
    instances = []
    containers = dict(resolved.containers)
    for spec in resolved.instances:
        container = containers.get(spec.name)
        table = tables.get(container.image if container else "")
        if table is not None:
            server_args = render_server_args(spec.server, spec.extra_args, table)
            command = tuple(_launch_command(server_args, resolved.master))
            if container is not None:  # the container runs the same argv
                containers[spec.name] = container.replace(command=command)
            spec = spec.replace(server_args=tuple(server_args), command=command)
        instances.append(spec)
    return resolved.replace(instances=instances, problems=list(resolved.problems), containers=containers)


@functools.lru_cache(maxsize=512)  # every instance resolves the same few host dirs
def _host_path(raw: str, base_dir: str | Path) -> str:
    path = os.path.expanduser(raw)
    # abspath/normpath, not Path.resolve(): no symlink walk (a syscall per component, per
    # instance), and the path the user wrote is the path that gets mounted.
    return os.path.normpath(os.path.join(base_dir, path))


def parse_volume(entry: str, base_dir: str | Path) -> Mount:
    """Compose short syntax "HOST:CONTAINER[:ro|rw]"; raise ValueError when malformed."""
    parts = entry.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1].startswith("/"):
        raise ValueError(f'expected "HOST:/container/path[:ro|rw]", got {entry!r}')
    mode = parts[2] if len(parts) == 3 else "rw"
    if mode not in ("ro", "rw"):
        raise ValueError(f'mode must be "ro" or "rw", got {mode!r} in {entry!r}')
    return Mount(_host_path(parts[0], base_dir), parts[1].rstrip("/") or "/", mode == "ro")


def _workload(
    spec: InstanceSpec,
    docker: dict[str, Any],
    master: MasterSettings,
    config_path: Path,
    host_env: Mapping[str, str],
    problems: list[Problem],
    own_docker: Mapping[str, Any] | None = None,
) -> Workload:
    """What the instance's container (or pod) runs besides the argv, from its merged [docker] table."""
    name = spec.name
    base_dir = os.path.dirname(config_path)
    path = f"instance.{name}.docker"

    mounts = []
    if docker.get("pixi_project_host_dir") and master.pixi_project_dir:
        mounts.append(Mount(_host_path(docker["pixi_project_host_dir"], base_dir), master.pixi_project_dir.rstrip("/")))
    for entry in docker.get("volumes") or []:
        try:
            mounts.append(parse_volume(entry, base_dir))
        except ValueError as exc:
            problems.append(Problem("error", f"{path}.volumes", str(exc), source=str(config_path)))

    env: dict[str, str] = {
        "PYTHONUNBUFFERED": "1",
        # CUDA's default order is "fastest first"; PCI bus order matches nvidia-smi's numbering.
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "VLLM_ORCH_INSTANCE": name,
    }
    env.update(spec.gpu.container_env())
    user = docker.get("user")
    if user and user.split(":")[0].isdigit():
        # A bare uid has no passwd entry, so Docker sets HOME=/ (not writable): vLLM, torch and
        # the HF hub would fail to create their caches. /tmp is writable by every uid.
        env["HOME"] = "/tmp"
    secret_names = list(docker.get("secret_env") or [])
    user_env = dict(docker.get("env") or {})
    for key, value in user_env.items():
        if key not in secret_names:
            env[key] = str(value)
    if sleep_mode_wanted(docker.get("on_demand") is True, spec.server) and DEV_MODE_ENV not in user_env:
        # vLLM serves /sleep, /wake_up and /is_sleeping only in its dev mode; the gateway keeps
        # refusing them from outside, and only vllm-orch calls them (sleep_api.py).
        env[DEV_MODE_ENV] = "1"
    secret_env: dict[str, str | None] = dict(spec.secrets)
    for key in secret_names:
        secret_env[key] = str(user_env[key]) if key in user_env else host_env.get(key)

    publish = None
    if docker.get("publish", True) and docker.get("network_mode") != "host":
        publish = PortBinding(spec.port, docker.get("publish_port") or spec.port, docker.get("publish_address", "127.0.0.1"))

    probe_host = spec.host if spec.host and spec.host not in _WILDCARD_HOSTS else "127.0.0.1"
    health = HealthProbe(port=spec.port, host=probe_host, command=tuple(docker.get("health_cmd") or ()),
                         interval_s=int(docker["health_interval"]), start_period_s=int(docker["health_start_period"]))

    if docker.get("shm_size") is not None and docker.get("ipc") != "host":
        try:
            parse_size(docker["shm_size"])
        except ValueError as exc:  # found now, not at the create call of one instance of many
            problems.append(Problem("error", f"{path}.shm_size", str(exc), source=str(config_path)))
    refused: list[tuple[str, str]] = []  # values of the option table no engine would take
    option_values = options.resolve_options(docker, refused)
    written_here = own_docker if own_docker is not None else docker  # else resolve() said it at docker.<key>
    problems.extend(Problem("error", f"{path}.{key}", message, source=str(config_path))
                    for key, message in refused if key in written_here)
    return Workload(
        image=docker.get("image") or "",
        env=tuple(env.items()),
        secret_env=tuple(secret_env.items()),
        mounts=tuple(mounts),
        publish=publish,
        health=health,
        labels=tuple((key, str(value)) for key, value in (docker.get("labels") or {}).items()),
        caches=tuple(_cache_mounts(name, docker, mounts, base_dir)),
        cache_is_default=docker.get("cache_host_dir") == DOCKER_DEFAULTS["cache_host_dir"],
        restart_unhealthy_after=_whole_seconds(docker, "restart_unhealthy_after"),
        on_demand=docker.get("on_demand") is True,
        idle_stop_after=_whole_seconds(docker, "idle_stop_after"),
        options=option_values,
    )


def _whole_seconds(docker: dict[str, Any], key: str) -> int:
    """A [docker] count of seconds, the table's default where the value is not one (the schema
    has reported that already)."""
    value = docker.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return int(DOCKER_DEFAULTS[key])


def _cache_mounts(name: str, docker: dict[str, Any], mounts: list[Mount], base_dir: str) -> list[CacheMount]:
    """vLLM's cache (compiled graphs: VLLM_CACHE_ROOT) and the Hugging Face cache (HF_HOME) of one
    instance, kept on the host in <cache_host_dir>/<instance>/{vllm,huggingface} so a recreated
    container does not compile or download again. cache_host_dir = false turns both off. A cache
    the user already placed (its variable in [docker] env, or a volume mounted on a
    .../huggingface or .../.cache directory for HF) is left to them."""
    setting = docker.get("cache_host_dir")
    if setting is False or setting in ("", None):
        return []
    root = os.path.join(_host_path(DOCKER_DEFAULTS["cache_host_dir"] if setting is True else str(setting), base_dir),
                        urllib.parse.quote(name, safe="") or "%00")
    user_env = docker.get("env") or {}
    caches = []
    if "VLLM_CACHE_ROOT" not in user_env:
        caches.append(CacheMount(os.path.join(root, "vllm"), f"{CACHE_TARGET}/vllm", "VLLM_CACHE_ROOT"))
    own_hf_volume = any(m.target.endswith(("/huggingface", "/.cache")) for m in mounts)
    if not own_hf_volume and not any(key in user_env for key in _HF_CACHE_VARS):
        caches.append(CacheMount(os.path.join(root, "huggingface"), f"{CACHE_TARGET}/huggingface", "HF_HOME"))
    return caches
