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
MAX_SIZE = 1 << 50  # far below the engine's int64, far above any host's memory


def parse_size(value: str | int) -> int:
    """Bytes of a size such as "8g", "512m", "1.5G", "64mb" or a plain number of bytes (the
    forms docker-py and Compose both accept); ValueError for anything else."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SIZE:
        return value
    match = _SIZE.match(str(value)) if len(str(value)) <= 32 else None
    if not match:
        raise ValueError(f"{str(value)[:40]!r} is not a size (use a number with b, k, m or g, e.g. \"8g\")")
    size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    if size > MAX_SIZE:
        raise ValueError(f"{value!r} is larger than the engine accepts (at most 1 PiB)")
    return size
MAX_GPU_INDEX = 1023
_GPU_LIST = re.compile(r"^\s*\d+\s*(,\s*\d+\s*)*$")
_HEX_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# As `nvidia-smi -L` prints them: GPU-<uuid>, MIG-<uuid> (driver R470 and later) and the legacy
# MIG-GPU-<gpu uuid>/<gpu instance>/<compute instance> of R450/R460 drivers.
GPU_UUID = re.compile(rf"^(GPU-{_HEX_UUID}|MIG-{_HEX_UUID}|MIG-GPU-{_HEX_UUID}/\d+/\d+)$", re.IGNORECASE)
_GPU_IDS_FORMS = ('gpu_ids must be "all", "none", "0,1,...", an integer, a list of integers, or GPU/MIG UUIDs '
                  '("GPU-<uuid>,..." or a list of them, as `nvidia-smi -L` prints them)')


class GpuRequest(Value):
    """What `control.gpu_ids` asks for: every GPU, none, specific host GPU indexes, or specific
    GPU/MIG UUIDs (stable across reboots and driver updates, where indexes are not)."""

    mode: str  # "all" | "none" | "ids" | "uuids"
    ids: tuple[int, ...] = ()
    uuids: tuple[str, ...] = ()  # mode "uuids": GPU-/MIG- UUIDs, hex in lower case as nvidia-smi prints it

    @classmethod
    def parse(cls, value: Any) -> "GpuRequest":
        """Accept "all" / absent, "none", "0,1", 0, [0, 1], "GPU-<uuid>,MIG-<uuid>" or a list of
        UUIDs; raise ValueError (one line, saying what was wrong) otherwise."""
        if value is None:
            return cls("all")
        if isinstance(value, bool):
            raise ValueError(f"{_GPU_IDS_FORMS}, not {value!r}")
        if isinstance(value, int):
            return cls._from_ids([value])
        if isinstance(value, list):
            if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                return cls._from_ids(value)
            if value and all(isinstance(v, str) for v in value):
                return cls._from_uuids([v.strip() for v in value], value)
            if any(isinstance(v, int) and not isinstance(v, bool) for v in value) and any(isinstance(v, str) for v in value):
                raise ValueError(f"gpu_ids mixes indexes and UUIDs: {value!r} (use one or the other)")
            raise ValueError(f"gpu_ids list must hold integers or GPU/MIG UUID strings, got {value!r}")
        if isinstance(value, str):
            text = value.strip().lower()
            if text in ("all", ""):
                return cls("all")
            if text == "none":
                return cls("none")
            if _GPU_LIST.match(text):
                return cls._from_ids([int(part) for part in text.split(",")])
            parts = [part.strip() for part in value.split(",")]
            if any(p.upper().startswith(("GPU-", "MIG-")) for p in parts):
                return cls._from_uuids(parts, value)
        raise ValueError(f"{_GPU_IDS_FORMS}, not {value!r}")

    @classmethod
    def _from_ids(cls, ids: list[int]) -> "GpuRequest":
        if any(i < 0 or i > MAX_GPU_INDEX for i in ids):
            raise ValueError(f"gpu_ids must be between 0 and {MAX_GPU_INDEX}, got {str(ids)[:60]}")
        if len(set(ids)) != len(ids):
            raise ValueError(f"gpu_ids lists a GPU twice: {ids!r}")
        return cls("ids", tuple(ids))

    @classmethod
    def _from_uuids(cls, parts: list[str], given: Any) -> "GpuRequest":
        if any(part.isdigit() for part in parts):
            raise ValueError(f"gpu_ids mixes indexes and UUIDs: {given!r} (use one or the other)")
        for part in parts:
            if not GPU_UUID.match(part):
                raise ValueError(f"gpu_ids: {part!r} is not a GPU or MIG UUID (expected GPU-xxxxxxxx-xxxx-xxxx-xxxx-"
                                 "xxxxxxxxxxxx or MIG-..., in full, as `nvidia-smi -L` prints it)")
        # The prefix as NVIDIA writes it, the hex in lower case (nvidia-smi's form; CUDA and the
        # container toolkit compare the text).
        uuids = [normalize_uuid(part) for part in parts]
        if len(set(uuids)) != len(uuids):
            raise ValueError(f"gpu_ids lists a GPU twice: {given!r}")
        return cls("uuids", uuids=tuple(uuids))

    @property
    def device_ids(self) -> tuple[str, ...]:
        """The ids as the engine, Compose and CUDA take them (text): indexes or UUIDs."""
        return tuple(map(str, self.ids)) if self.mode == "ids" else self.uuids

    def to_json(self) -> Any:
        if self.mode == "ids":
            return list(self.ids)
        return list(self.uuids) if self.mode == "uuids" else self.mode

    def describe(self) -> str:
        return ",".join(self.device_ids) if self.mode in ("ids", "uuids") else self.mode

    @property
    def count(self) -> int | None:
        """Number of GPUs, or None when "all" (unknown until the host is asked)."""
        return {"none": 0, "ids": len(self.ids), "uuids": len(self.uuids)}.get(self.mode)

    # --- processes (in-container launcher) -------------------------------------------------
    def process_env(self) -> dict[str, str]:
        """CUDA_VISIBLE_DEVICES for a process on the host that sees the real GPU numbering."""
        if self.mode == "none":
            return {"CUDA_VISIBLE_DEVICES": ""}
        if self.mode == "ids":
            # Ids are nvidia-smi's (PCI bus order); CUDA's default order is "fastest first".
            return {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": ",".join(map(str, self.ids))}
        if self.mode == "uuids":
            # CUDA takes GPU-/MIG- UUIDs there as they are; a UUID names one device whatever the order.
            return {"CUDA_VISIBLE_DEVICES": ",".join(self.uuids)}
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
        """Engine API shape (HostConfig.DeviceRequests). The engine hands DeviceIDs, indexes or
        UUIDs alike, to the NVIDIA runtime as NVIDIA_VISIBLE_DEVICES."""
        if self.mode == "none":
            return []
        request: dict[str, Any] = {"Driver": driver, "Capabilities": [["gpu"]]}
        if self.mode == "all":
            request.update(Count=-1, DeviceIDs=None)
        else:
            request.update(Count=0, DeviceIDs=list(self.device_ids))
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
            device["device_ids"] = list(self.device_ids)
        return [device]


def normalize_uuid(text: str) -> str:
    """GPU-/MIG- UUID as nvidia-smi prints it: upper-case prefix, lower-case hex."""
    text = text.strip()
    if text.upper().startswith("MIG-GPU-"):
        return "MIG-GPU-" + text[8:].lower()
    return text[:4].upper() + text[4:].lower()


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


def config_digest(record: dict[str, Any], secret_env: Any) -> str:
    """sha256 of a settings record (secrets masked) plus digests of the secret values: the
    config-hash label of every release. Given the record a container carries and today's
    secrets, it reproduces that label exactly when no secret value changed."""
    import hashlib  # only hashing commands pay for it

    doc = dict(record)
    doc["secret_digests"] = {key: hashlib.sha256((value or "").encode()).hexdigest() for key, value in secret_env}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


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
    stop_signal: str
    healthcheck: HealthCheck | None
    init: bool
    labels: tuple[tuple[str, str], ...]  # ours and the user's, without the hash
    host_log_file: str
    # Kept apart from `mounts` and `env` (and under its own key in to_json) so that containers
    # made before the caches existed compare equal on every earlier key; see plan.explain_change.
    cache_mounts: tuple[CacheMount, ...] = ()
    cache_is_default: bool = True  # came from the default [docker] cache_host_dir (not compared itself)
    # The pass-through options of the option table (options.CONTAINER_OPTIONS), in its order:
    # (record key, value). Read them as attributes: `spec.user`, `spec.stop_timeout`, ...
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, record: str) -> Any:
        for key, value in self.options:
            if key == record:
                return value
        raise KeyError(record)

    shm_size = property(lambda self: self.option("shm_size"))
    ipc_mode = property(lambda self: self.option("ipc_mode"))
    user = property(lambda self: self.option("user"))
    restart = property(lambda self: self.option("restart"))
    stop_timeout = property(lambda self: self.option("stop_timeout"))
    network_mode = property(lambda self: self.option("network_mode"))

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
            "stop_signal": self.stop_signal,
            "healthcheck": self.healthcheck.to_json() if self.healthcheck else None,
            "init": self.init,
            "labels": dict(self.labels),
            "host_log_file": self.host_log_file,
            "cache_mounts": [cache.to_json() for cache in self.cache_mounts],
            **dict(self.options),
        }

    def config_hash(self) -> str:
        """sha256 of the canonical spec. Secrets enter as digests so a changed API key still
        recreates the container without the key ever being written into a label."""
        return config_digest(self.to_json(), self.secret_env)


class InstanceSpec(Value):
    """One vLLM server as the contract defines it, independent of where it runs."""

    name: str
    enabled: bool  # in effect: false when control.enabled or master.enable says so
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
    disabled_by: str | None = None  # the setting that disables it, when it is disabled

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
            "disabled_by": self.disabled_by,
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
