"""Frozen value objects of the resolved plan. Each builds the engine's shapes for itself, so the
Docker backend, the Compose exporter and the local launcher cannot disagree about, say, what
`gpu_ids = "0,1"` means.
"""

from __future__ import annotations

import json
import re
from typing import Any

from orchestrator.value import Value, field

SECRET_MASK = "<secret>"
_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmg]?)b?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(value: str | int) -> int:
    """Bytes of a size such as "8g", "512m", "1.5G", "64mb" or a plain number of bytes (the
    forms docker-py and Compose both accept); ValueError for anything else."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size (use a number with b, k, m or g, e.g. \"8g\")")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
_GPU_LIST = re.compile(r"^\s*\d+\s*(,\s*\d+\s*)*$")


class GpuRequest(Value):
    """What `control.gpu_ids` asks for: every GPU, none, or specific host GPU ids."""

    mode: str  # "all" | "none" | "ids"
    ids: tuple[int, ...] = ()

    @classmethod
    def parse(cls, value: Any) -> "GpuRequest":
        """Accept "all" / absent, "none", "0,1", 0, [0, 1]; raise ValueError otherwise."""
        if value is None:
            return cls("all")
        if isinstance(value, bool):
            raise ValueError(f"gpu_ids must be \"all\", \"none\", \"0,1,...\", an integer or a list of integers, not {value!r}")
        if isinstance(value, int):
            return cls._from_ids([value])
        if isinstance(value, list):
            if not value or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ValueError(f"gpu_ids list must hold integers, got {value!r}")
            return cls._from_ids(value)
        if isinstance(value, str):
            text = value.strip().lower()
            if text in ("all", ""):
                return cls("all")
            if text == "none":
                return cls("none")
            if _GPU_LIST.match(text):
                return cls._from_ids([int(part) for part in text.split(",")])
        raise ValueError(f"gpu_ids must be \"all\", \"none\", \"0,1,...\", an integer or a list of integers, not {value!r}")

    @classmethod
    def _from_ids(cls, ids: list[int]) -> "GpuRequest":
        if any(i < 0 for i in ids):
            raise ValueError(f"gpu_ids must be non-negative, got {ids!r}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"gpu_ids lists a GPU twice: {ids!r}")
        return cls("ids", tuple(ids))

    def to_json(self) -> Any:
        return list(self.ids) if self.mode == "ids" else self.mode

    def describe(self) -> str:
        return ",".join(map(str, self.ids)) if self.mode == "ids" else self.mode

    @property
    def count(self) -> int | None:
        """Number of GPUs, or None when "all" (unknown until the host is asked)."""
        return {"none": 0, "ids": len(self.ids)}.get(self.mode)

    # --- processes (in-container launcher) -------------------------------------------------
    def process_env(self) -> dict[str, str]:
        """CUDA_VISIBLE_DEVICES for a process on the host that sees the real GPU numbering."""
        if self.mode == "none":
            return {"CUDA_VISIBLE_DEVICES": ""}
        if self.mode == "ids":
            # Ids are nvidia-smi's (PCI bus order); CUDA's default order is "fastest first".
            return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(map(str, self.ids))}
        return {}

    # --- containers ---------------------------------------------------------------------------
    def container_env(self) -> dict[str, str]:
        """Environment for a container. Inside it the granted GPUs are renumbered from 0, so host
        ids must never become CUDA_VISIBLE_DEVICES there. For "none", `void` keeps the NVIDIA
        runtime from injecting GPUs even where it is the engine's default runtime."""
        if self.mode == "none":
            return {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": ""}
        return {}

    def docker_device_requests(self, driver: str = "nvidia") -> list[dict[str, Any]]:
        """Engine API shape (HostConfig.DeviceRequests)."""
        if self.mode == "none":
            return []
        request: dict[str, Any] = {"Driver": driver, "Capabilities": [["gpu"]]}
        if self.mode == "all":
            request.update(Count=-1, DeviceIDs=None)
        else:
            request.update(Count=0, DeviceIDs=[str(i) for i in self.ids])
        request["Options"] = {}
        return [request]

    def compose_devices(self, driver: str = "nvidia") -> list[dict[str, Any]]:
        """Compose shape (deploy.resources.reservations.devices)."""
        if self.mode == "none":
            return []
        device: dict[str, Any] = {"driver": driver, "capabilities": ["gpu"]}
        if self.mode == "all":
            device["count"] = "all"
        else:
            device["device_ids"] = [str(i) for i in self.ids]
        return [device]


class Mount(Value):
    """A bind mount: host path (absolute) -> container path."""

    source: str
    target: str
    read_only: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "read_only": self.read_only}

    def docker_mount(self) -> dict[str, Any]:
        return {"Type": "bind", "Source": self.source, "Target": self.target, "ReadOnly": self.read_only}


class CacheMount(Value):
    """A per-instance cache kept on the host: `source` bind-mounted read-write at `target`, and
    `env` (VLLM_CACHE_ROOT, HF_HOME) pointing the server at it, so compiled graphs and
    downloads outlive the container."""

    source: str
    target: str
    env: str

    read_only = False  # a cache is written to (a plain class attribute, not a field)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "target": self.target, "env": self.env}

    def docker_mount(self) -> dict[str, Any]:
        return {"Type": "bind", "Source": self.source, "Target": self.target, "ReadOnly": False}


class PortBinding(Value):
    container_port: int
    host_port: int
    host_address: str

    def to_json(self) -> dict[str, Any]:
        return {"container_port": self.container_port, "host_port": self.host_port, "host_address": self.host_address}

    @property
    def url(self) -> str:
        host = self.host_address
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.host_port}"

    @property
    def connect_url(self) -> str:
        """Where a client on this host reaches it (a wildcard bind is reachable on loopback)."""
        if self.host_address in ("0.0.0.0", "", "::"):
            return f"http://127.0.0.1:{self.host_port}"
        return self.url


class HealthCheck(Value):
    test: tuple[str, ...]
    interval_s: int
    timeout_s: int
    retries: int
    start_period_s: int

    def to_json(self) -> dict[str, Any]:
        return {
            "test": list(self.test),
            "interval_s": self.interval_s,
            "timeout_s": self.timeout_s,
            "retries": self.retries,
            "start_period_s": self.start_period_s,
        }


class ContainerSpec(Value):
    """Everything the engine needs to run one instance. Secrets are held apart from `env`."""

    name: str
    image: str
    entrypoint: tuple[str, ...]
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    secret_env: tuple[tuple[str, str | None], ...] = field(repr=False)  # value None: not set on this host
    mounts: tuple[Mount, ...]
    port: PortBinding | None
    gpu: GpuRequest
    gpu_driver: str
    shm_size: str | None
    ipc_mode: str | None
    user: str | None
    restart: str
    stop_signal: str
    stop_timeout: int
    healthcheck: HealthCheck | None
    network_mode: str | None
    init: bool
    labels: tuple[tuple[str, str], ...]  # ours and the user's, without the hash
    host_log_file: str
    # Kept apart from `mounts` and `env` (and under its own key in to_json) so that containers
    # made before the caches existed compare equal on every earlier key; see plan.explain_change.
    cache_mounts: tuple[CacheMount, ...] = ()
    cache_is_default: bool = True  # came from the default [docker] cache_host_dir (not compared itself)

    def environment(self, *, reveal: bool = False, caches: bool = True) -> dict[str, str]:
        """The container's environment; `caches`: with the variables naming the cache mounts
        (to_json keeps those under cache_mounts only, so its "env" is what it always was)."""
        env = {cache.env: cache.target for cache in self.cache_mounts} if caches else {}
        env.update(self.env)
        for key, value in self.secret_env:
            env[key] = (value or "") if reveal else SECRET_MASK
        return env

    def to_json(self) -> dict[str, Any]:
        """The spec as data, secrets masked: what `plan --json` prints and what the hash covers."""
        return {
            "name": self.name,
            "image": self.image,
            "entrypoint": list(self.entrypoint),
            "command": list(self.command),
            "env": self.environment(caches=False),
            "secret_env": [key for key, _ in self.secret_env],
            "mounts": [m.to_json() for m in self.mounts],
            "port": self.port.to_json() if self.port else None,
            "device_requests": self.gpu.docker_device_requests(self.gpu_driver),
            "shm_size": self.shm_size,
            "ipc_mode": self.ipc_mode,
            "user": self.user,
            "restart": self.restart,
            "stop_signal": self.stop_signal,
            "stop_timeout": self.stop_timeout,
            "healthcheck": self.healthcheck.to_json() if self.healthcheck else None,
            "network_mode": self.network_mode,
            "init": self.init,
            "labels": dict(self.labels),
            "host_log_file": self.host_log_file,
            "cache_mounts": [cache.to_json() for cache in self.cache_mounts],
        }

    def config_hash(self, omit: tuple[str, ...] = ()) -> str:
        """sha256 of the canonical spec. Secrets enter as digests so a changed API key still
        recreates the container without the key ever being written into a label. `omit`: keys
        left out, to compare with a container made before those keys existed."""
        import hashlib  # only hashing commands pay for it

        doc = self.to_json()
        for key in omit:
            doc.pop(key, None)
        doc["secret_digests"] = {
            key: hashlib.sha256((value or "").encode()).hexdigest() for key, value in self.secret_env
        }
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


class InstanceSpec(Value):
    """One vLLM server as the contract defines it, independent of where it runs."""

    name: str
    enabled: bool
    background: bool
    log_file: str  # inside the container (or on the host, for the in-container launcher)
    gpu: GpuRequest
    server: dict[str, Any] = field(hash=False)  # merged server table without secrets
    extra_args: tuple[str, ...] = ()  # server.extra_args, appended verbatim after the rendered options
    server_args: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    secrets: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # env name -> value, from server.api_key / hf_token
    port: int = 8000
    host: str | None = None
    container: ContainerSpec | None = None

    @property
    def served_model(self) -> str | None:
        names = self.server.get("served_model_name")
        if isinstance(names, list) and names:
            return str(names[0])
        if names:
            return str(names)
        model = self.server.get("model")
        return str(model) if model else None

    def process_env(self) -> dict[str, str]:
        """Environment for the in-container (process) launcher, secrets masked."""
        env = dict(self.env)
        env.update(self.gpu.process_env())
        env.update({key: SECRET_MASK for key, _ in self.secrets})
        return env

    def to_json(self, backend: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "enabled": self.enabled,
            "background": self.background,
            "gpu_ids": self.gpu.to_json(),
            "log_file": self.log_file,
            "port": self.port,
            "host": self.host,
            "model": self.served_model,
            "server_args": list(self.server_args),
            "command": list(self.command),
        }
        if backend == "docker" and self.container is not None:
            doc["env"] = self.container.environment()
            doc["log_file_host"] = self.container.host_log_file
            doc["container"] = self.container.to_json()
            doc["config_hash"] = self.container.config_hash()
        else:
            doc["env"] = self.process_env()
        return doc
