"""The target-neutral instance spec: what one vLLM server runs (argv, environment, GPUs, mounts,
published port, health, stop, resources, secrets by name), not how a target spells it.

`resolve.py` builds it from the config; the targets render it: `container.py` (the Docker
container, which the Docker backend and the Compose export share; `resolve` keeps it beside the
spec, in `Resolved.containers`, so nothing here knows Docker), `exporters/kubernetes.py` (a
Deployment and Service) and `backends/local.py` (a process). Frozen value objects (value.py).
"""

from __future__ import annotations

import re
from typing import Any

from orchestrator.sizes import MAX_SIZE, parse_size  # noqa: F401  (the renderers read them here too)
from orchestrator.value import Value, field

SECRET_MASK = "<secret>"
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

    def container_env(self) -> dict[str, str]:
        """Environment for a container or pod. Inside one the granted GPUs are renumbered from 0,
        so host ids must never become CUDA_VISIBLE_DEVICES there. For "none", `void` keeps the
        NVIDIA runtime from injecting GPUs even where it is the default runtime."""
        if self.mode == "none":
            return {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": ""}
        return {}


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


class HealthProbe(Value):
    """How a target tells the server is ready: GET `path` on `port` at `host` (the address the
    server listens on, seen from beside it), or the user's own exec-form `command`."""

    port: int
    host: str = "127.0.0.1"
    path: str = "/health"
    command: tuple[str, ...] = ()  # [docker] health_cmd, as written; () = the GET above
    interval_s: int = 10
    timeout_s: int = 5
    retries: int = 3
    start_period_s: int = 900  # model loading: failures before it ends do not count

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"


class OptionValues:
    """Read access to the option table's pass-through values (options.CONTAINER_OPTIONS), kept as
    (record key, value) pairs in the table's order: `spec.user`, `spec.stop_timeout`, ..."""

    options: tuple[tuple[str, Any], ...]

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


class Workload(OptionValues, Value):
    """What an isolated runtime (a container, a pod) runs for one instance besides the argv,
    whichever target runs it. Nothing here is a target's spelling: Docker's log wrapper, its
    `CMD` health test and its labels of ownership are added by container.py."""

    image: str
    # Plain variables, no secrets: ours (PYTHONUNBUFFERED, CUDA_DEVICE_ORDER, VLLM_ORCH_INSTANCE,
    # the GPU ones of GpuRequest.container_env, HOME for a bare uid), then the user's [docker] env.
    env: tuple[tuple[str, str], ...]
    secret_env: tuple[tuple[str, str | None], ...] = field(repr=False)  # by name; value None: not set on this host
    mounts: tuple[Mount, ...]  # the user's volumes and the pixi project (host path -> path inside)
    publish: PortBinding | None  # None: not published (publish = false, or the host's network)
    health: HealthProbe
    stop_signal: str = "SIGTERM"
    labels: tuple[tuple[str, str], ...] = ()  # the user's own
    caches: tuple[CacheMount, ...] = ()  # vLLM's and Hugging Face's caches, kept on the host
    cache_is_default: bool = True  # the caches came from the default [docker] cache_host_dir
    options: tuple[tuple[str, Any], ...] = ()  # shm, IPC, user, network, restart, stop timeout, CPUs
    # [docker] restart_unhealthy_after: read by `watch` only, never part of the container's record.
    restart_unhealthy_after: int = 300
    # [docker] on_demand / idle_stop_after: read by the on-demand machinery, never part of the record.
    on_demand: bool = False
    idle_stop_after: int = 900


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
    workload: Workload | None = None  # None only for specs built by hand (the local launcher's tests)
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

    @property
    def model_aliases(self) -> tuple[str, ...]:
        """The other names of `served_model_name = [first, ...]`: vLLM answers to each."""
        names = self.server.get("served_model_name")
        return tuple(str(n) for n in names[1:]) if isinstance(names, list) else ()

    def host_listen(self) -> tuple[str, int] | None:
        """(address, port) where the server can be reached from the host's interfaces: its
        published port, or its own socket on the host network; None when it is not on the host."""
        work = self.workload
        if work is None:
            return None
        if work.network_mode == "host":
            return (self.host or "0.0.0.0", self.port)
        if work.publish is not None:
            return (work.publish.host_address, work.publish.host_port)
        return None

    def process_env(self) -> dict[str, str]:
        """Environment for the in-container (process) launcher, secrets masked."""
        env = dict(self.env)
        env.update(self.gpu.process_env())
        env.update({key: SECRET_MASK for key, _ in self.secrets})
        return env

    def to_json(self) -> dict[str, Any]:
        """`plan --json`'s instance as the launcher runs it (its process environment); the Docker
        target adds its rendering (container.instance_json)."""
        return {
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
            "env": self.process_env(),
        }
