"""The option table: every `[docker]` setting declared once.

A `Setting` is one key of `[docker]` / `[instance.<name>.docker]`: its JSON Schema, default,
meaning, and what the Kubernetes export does with it. `config/schema.py` builds the schema of
those tables from `SETTINGS` (so `validate`, the published JSON Schema and editors agree),
`resolve.py` takes the defaults from `DEFAULTS`, and the README's reference table is
`markdown_rows()` (written there by `python -m orchestrator.generate`).

A `ContainerOption` is a setting that reaches the container as it is (user, restart policy,
/dev/shm, CPUs, ...): how `resolve` reads it from the merged `[docker]` table, the key and value
it has in the container's record (the `.spec` label that `up` compares option by option), how
it is spelled for the Docker Engine API and for Compose, and, for an option added after the
first recorded release, the value a container made before it is taken to have had (so an
upgrade recreates nothing). The instance's structured parts (command, environment, mounts,
port, GPUs, health, labels) are built by `resolve` into the target-neutral spec (spec.py) and
rendered by `container.py` (the Docker container), then `backends/engine_body.py` and `compose.py`.

Adding a pass-through setting is one `Setting` plus one `ContainerOption` here (see `pids_limit`
and `ulimits`), and its tests. While a config leaves such a setting unset it changes nothing:
not the record, not `config_hash`, not `plan --json`, not the exports (`record_fields`; the rule
is tested with a dummy option in tests/unit/test_option_table_growth.py). The README's rows and
configs/vllm-orch.schema.json follow by `python -m orchestrator.generate`.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Mapping

from orchestrator import ulimits
from orchestrator.sizes import parse_size
from orchestrator.value import Value

MAX_NAME_LENGTH = 63  # a DNS label: container, Compose service and Kubernetes object names
FIRST_RELEASE = "8a54adf"  # the first release whose containers are recorded (tests/fixtures/releases)
# The releases whose records hold every option's key, unset ones as null (8a54adf, and 4a4232d,
# which added cpuset and cpus that way). Their containers and exports must stay byte for byte
# (tests/integration/test_export_stability.py); an option any later release adds stays out of
# the record while it is unset, so adding it changes nothing for a config that does not use it.
RECORDS_UNSET_OPTIONS = frozenset({FIRST_RELEASE, "4a4232d"})
MAX_STOP_TIMEOUT_S = 86_400
MAX_HEALTH_S = 7 * 86_400
# Docker refuses an environment variable whose name is empty or holds "=" (or NUL).
ENV_NAME_PATTERN = "^[^=\\x00]+$"
CPUSET_PATTERN = r"^\d+(-\d+)?(,\d+(-\d+)?)*$"


# One limit of `ulimits` (ulimits.py checks what a schema cannot: soft <= hard, the names' limits).
_ULIMIT_NUMBER: dict[str, Any] = {"type": "integer", "minimum": ulimits.UNLIMITED}
_ULIMIT: dict[str, Any] = {"type": ["integer", "object"], "minimum": ulimits.UNLIMITED, "additionalProperties": False,
                           "properties": {"soft": _ULIMIT_NUMBER, "hard": _ULIMIT_NUMBER}}


class Setting(Value):
    key: str
    schema: dict
    doc: str
    default: Any = None  # None: unset (the engine's or the image's own)
    shown_default: str = ""  # the README's default column, where the literal default says too little
    global_only: bool = False
    kubernetes: str = ""  # "" = the Kubernetes export maps it; else why it cannot (printed as a warning)


SETTINGS: tuple[Setting, ...] = (
    Setting("project", {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$", "maxLength": MAX_NAME_LENGTH},
            "label and container-name prefix (`<project>-<instance>`)", shown_default="the file's stem",
            global_only=True),
    Setting("image", {"type": "string"}, "the image to run (the infer-dev image)", shown_default="required"),
    Setting("pixi_project_host_dir", {"type": "string"},
            "host dir bind-mounted at `master.pixi_project_dir` (relative to this file)"),
    Setting("log_host_dir", {"type": "string"}, "host dir holding the log files (each file bind-mounted at its "
            "in-container path; relative to this file)", default="logs",
            kubernetes="not used: vLLM's output goes to the container's stdout (`kubectl logs`)"),
    Setting("cache_host_dir", {"type": ["string", "boolean"]},
            "host dir for each instance's vLLM and Hugging Face caches (`<dir>/<instance>/{vllm,huggingface}`, "
            "relative to this file), so a recreate or a reboot does not recompile or download again; `false`: "
            "none", default="cache",
            kubernetes="not used: mount a cache volume through [kubernetes] volumes"),
    Setting("volumes", {"type": "array", "items": {"type": "string"}},
            '`"HOST:CONTAINER[:ro|rw]"`, e.g. `"/llm-models:/llm-models:ro"`; a relative HOST is relative to '
            "this file", shown_default="`[]`"),
    Setting("publish", {"type": "boolean"}, "publish `server.port` on the host", default=True),
    Setting("publish_address", {"type": "string"},
            "host address the port is published on; `0.0.0.0` exposes it to the network (an IP address)",
            default="127.0.0.1",
            kubernetes="not used: a Service has no host address; service_type decides who reaches it"),
    Setting("publish_port", {"type": "integer", "minimum": 1, "maximum": 65535}, "host port",
            shown_default="`server.port`"),
    Setting("env", {"type": "object", "propertyNames": {"pattern": ENV_NAME_PATTERN},
                    # writeOnly: the values of secret_env names live here too: no message shows one.
                    "additionalProperties": {"type": "string", "writeOnly": True}},
            "environment variables of the container", shown_default="`{}`"),
    Setting("secret_env", {"type": "array", "items": {"type": "string", "pattern": ENV_NAME_PATTERN}},
            "secret variable names: the value comes from `env` or the host's environment at `up`; never printed "
            "or exported", shown_default="`[]`"),
    Setting("shm_size", {"type": ["string", "integer"]},
            "`/dev/shm` for vLLM's worker IPC (Docker's 64 MB kills the engine at start): bytes, or a number "
            'with `k`/`m`/`g` and an optional `b` (`"512m"`, `"1.5g"`, `"8 GB"`)', default="8g"),
    Setting("ipc", {"type": "string"}, 'IPC mode, e.g. `"host"` (then `shm_size` is not used)',
            kubernetes="not used: /dev/shm is an in-memory emptyDir of shm_size (hostIPC would not provide it)"),
    Setting("user", {"type": "string"}, 'user to run as, `"uid[:gid]"` or a name', shown_default="the image's"),
    Setting("restart", {"type": "string", "enum": ["no", "always", "unless-stopped", "on-failure"]},
            "Docker restart policy", default="no"),
    Setting("stop_timeout", {"type": "integer", "minimum": 1, "maximum": MAX_STOP_TIMEOUT_S},
            "seconds from SIGTERM to SIGKILL", default=60),
    Setting("health_start_period", {"type": "integer", "minimum": 0, "maximum": MAX_HEALTH_S},
            "seconds of model loading during which failed health checks do not count", default=900),
    Setting("health_interval", {"type": "integer", "minimum": 1, "maximum": MAX_HEALTH_S},
            "seconds between health checks", default=10),
    # Read by `vllm-orch watch` alone (watch.py), never by the engine: it is no ContainerOption, so it
    # stays out of the container's record and changing it recreates nothing.
    Setting("restart_unhealthy_after", {"type": "integer", "minimum": 0, "maximum": MAX_HEALTH_S},
            "seconds an instance may stay unhealthy (after its start period) before `vllm-orch watch` restarts "
            "its container; `0`: watch never restarts it; changing it recreates nothing", default=300,
            kubernetes="not used: the kubelet restarts a pod whose liveness probe fails"),
    # Read by the on-demand machinery alone (issue 23), never by the engine: no ContainerOption, so
    # neither is in the container's record and turning one on or off recreates nothing.
    Setting("on_demand", {"type": "boolean"},
            "`up` creates the container but does not start it: the first request for its model through the "
            "gateway starts it, and it stops (or sleeps) after `idle_stop_after`", default=False,
            kubernetes="exported as replicas: 0 (scale it up yourself, or let KEDA / KubeAI do it)"),
    Setting("idle_stop_after", {"type": "integer", "minimum": 0, "maximum": MAX_HEALTH_S},
            "seconds without a request after which an `on_demand` instance is put to sleep or stopped; `0`: "
            "never; on-demand instances only", default=900,
            kubernetes="not used: scaling to zero is KEDA's or KubeAI's"),
    Setting("health_cmd", {"type": "array", "items": {"type": "string"}},
            "exec-form health check command", shown_default="the image's python3 GETs `/health`",
            kubernetes="not used: the probes GET /health on the vLLM port"),
    Setting("network_mode", {"type": "string"}, 'Docker network mode, e.g. `"host"` (then nothing is published)',
            shown_default="the default bridge",
            kubernetes="not used: pods run on the cluster network (hostNetwork is not set)"),
    Setting("gpu_driver", {"type": "string"}, "DeviceRequest driver", default="nvidia"),
    Setting("labels", {"type": "object", "propertyNames": {"pattern": "^\\S+$"},
                       "additionalProperties": {"type": "string"}}, "extra container labels", shown_default="`{}`",
            kubernetes="not used: Docker labels are not Kubernetes labels (set [kubernetes] labels or annotations)"),
    Setting("cpuset", {"type": "string", "pattern": CPUSET_PATTERN},
            'host CPUs the container may run on, e.g. `"0-15"` or `"0,2,4-7"` (keeps a server on the cores '
            "near its GPUs)",
            kubernetes="not used: the kubelet's CPU manager decides which cores a pod gets"),
    Setting("cpus", {"type": "number", "exclusiveMinimum": 0, "maximum": 4096},
            "CPU time the container may use, in CPUs (e.g. `8` or `2.5`)",
            kubernetes="not used: set [kubernetes] resources.limits.cpu"),
    Setting("pids_limit", {"type": "integer", "minimum": -1, "maximum": ulimits.MAX_VALUE},
            "most processes and threads the container may have (`-1`: unlimited)", shown_default="the engine's",
            kubernetes="not used: a pod's process limit is the kubelet's podPidsLimit"),
    Setting("ulimits", {"type": ["object", "array"], "additionalProperties": False,
                        "properties": {name: _ULIMIT for name in ulimits.NAMES},
                        "items": {"type": "string"}},  # NAME=SOFT[:HARD]: ulimits.py says what is wrong
            "resource limits of the container's processes: `{ memlock = -1, nofile = { soft = 65536, hard = "
            "65536 } }` (one number sets both) or Docker's `[\"nofile=65536:65536\"]`; `-1`: unlimited",
            shown_default="the engine's",
            kubernetes="not used: a pod's ulimits are the container runtime's (set them on the nodes)"),
)

BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
DEFAULTS: dict[str, Any] = {s.key: s.default for s in SETTINGS if s.default is not None}
DOCKER_ONLY: dict[str, str] = {s.key: s.kubernetes for s in SETTINGS if s.kubernetes}


def schema_properties(*, global_table: bool) -> dict[str, Any]:
    """The `properties` of a `[docker]` table's JSON Schema (`global_table`: with `project`)."""
    properties: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.global_only and not global_table:
            continue
        schema = dict(setting.schema)
        schema["description"] = setting.doc.replace("`", "")
        if setting.default is not None:
            schema["default"] = setting.default
        properties[setting.key] = schema
    return properties


def markdown_rows() -> str:
    """The README's reference table of the `[docker]` keys."""
    return table_rows(SETTINGS)


def table_rows(settings: Iterable[Setting]) -> str:
    """A settings table's README reference rows (orchestrator/generate.py writes them): defaults
    in TOML's spelling (`true`, `"15d"`), as a user would write them."""
    lines = ["| key | default | meaning |", "| --- | --- | --- |"]
    for s in settings:
        default = s.shown_default or ("unset" if s.default is None else f"`{json.dumps(s.default)}`")
        doc = s.doc.replace("|", "\\|") + ("; global only" if s.global_only else "")
        lines.append(f"| `{s.key}` | {default} | {doc} |")
    return "\n".join(lines) + "\n"


def table_schema(settings: Iterable[Setting], description: str) -> dict[str, Any]:
    """A settings table's JSON Schema (a closed object: an unknown key is refused, with a did-you-mean)."""
    properties: dict[str, Any] = {}
    for setting in settings:
        entry = dict(setting.schema)
        entry["description"] = setting.doc.replace("`", "")
        if setting.default is not None:
            entry["default"] = setting.default
        properties[setting.key] = entry
    return {"type": "object", "additionalProperties": False, "properties": properties, "description": description}


# ----------------------------------------------------------------------------- container options
def _shm_bytes(value: Any) -> int:
    return parse_size(value)


class ContainerOption(Value):
    record: str  # its key in the container's record (ContainerSpec.to_json)
    # merged [docker] table -> value (None: unset); ValueError (one line) for a value no engine takes
    resolve: Callable[[Mapping[str, Any]], Any]
    engine: Callable[[Any], dict[str, Any]]  # value -> {"Field" or "HostConfig.Field": engine value}
    compose: Callable[[Any], dict[str, Any]]  # value -> Compose service settings
    since: str = FIRST_RELEASE  # the first release that recorded it ("next" until one ships)
    unset: Any = None  # what a container made before `since` is taken to have had
    setting: str = ""  # the [docker] key its problems are reported at ("": the record key)

    @property
    def always_recorded(self) -> bool:
        """In the record even while unset (the releases of RECORDS_UNSET_OPTIONS wrote it so)."""
        return self.since in RECORDS_UNSET_OPTIONS


def _when(value: Any, **fields: Any) -> dict[str, Any]:
    return fields if value is not None else {}


def _pids_limit(value: Any) -> int | None:
    if value == 0:  # the engine takes 0 for unlimited too: one spelling, so the record cannot flip
        raise ValueError("0 would mean unlimited: write -1 for that, or a positive number")
    return value


CONTAINER_OPTIONS: tuple[ContainerOption, ...] = (
    ContainerOption(
        "shm_size",
        lambda d: None if d.get("ipc") == "host" or d.get("shm_size") is None else str(d["shm_size"]),
        lambda v: _when(v, **{"HostConfig.ShmSize": _shm_bytes(v) if v is not None else None}),
        lambda v: _when(v, shm_size=v)),
    ContainerOption(
        "ipc_mode", lambda d: d.get("ipc"),
        lambda v: _when(v, **{"HostConfig.IpcMode": v}),
        lambda v: _when(v, ipc=v)),
    ContainerOption(
        "user", lambda d: d.get("user"),
        # Always sent, "" for the image's own user, as docker-py does (inspect stays the same).
        lambda v: {"User": v or ""},
        lambda v: _when(v, user=v)),
    ContainerOption(
        "network_mode", lambda d: d.get("network_mode"),
        lambda v: {"HostConfig.NetworkMode": v or "default"},
        # "default" is the engine's bridge; without it Compose would make a network of its own.
        lambda v: {"network_mode": v or "default"}),
    ContainerOption(
        "restart", lambda d: d.get("restart", "no"),
        lambda v: {"HostConfig.RestartPolicy": {"Name": v}} if v and v != "no" else {},
        lambda v: {"restart": v} if v and v != "no" else {}),  # "no" is the engine's default: unset
    ContainerOption(
        "stop_timeout", lambda d: int(d["stop_timeout"]),
        lambda v: {"StopTimeout": v},
        lambda v: {"stop_grace_period": f"{v}s"}),
    ContainerOption(
        "cpuset", lambda d: d.get("cpuset"),
        lambda v: _when(v, **{"HostConfig.CpusetCpus": v}),
        lambda v: _when(v, cpuset=v),
        since="4a4232d"),
    ContainerOption(
        "cpus", lambda d: d.get("cpus"),
        lambda v: _when(v, **{"HostConfig.NanoCpus": int(round(v * 1e9)) if v is not None else None}),
        lambda v: _when(v, cpus=v),
        since="4a4232d"),
    ContainerOption(
        "pids_limit", lambda d: _pids_limit(d.get("pids_limit")),
        lambda v: _when(v, **{"HostConfig.PidsLimit": v}),
        lambda v: _when(v, pids_limit=v),
        since="next"),
    ContainerOption(
        "ulimits", lambda d: ulimits.parse_ulimits(d["ulimits"]) if d.get("ulimits") else None,
        lambda v: {"HostConfig.Ulimits": ulimits.engine_ulimits(v)} if v else {},
        lambda v: {"ulimits": ulimits.compose_ulimits(v)} if v else {},
        since="next"),
)


def declared(record: str) -> ContainerOption:
    """The option of a record key. CONTAINER_OPTIONS is read at each call (ten entries), so the
    table is the one thing to change, a test's dummy option included."""
    for option in CONTAINER_OPTIONS:
        if option.record == record:
            return option
    raise KeyError(record)


# Options a release after the first recorded one added, with the value older containers had
# (container.ADDED_RECORD_KEYS turns them into the record's rules for upgrades).
OPTIONS_ADDED_LATER: dict[str, Any] = {o.record: o.unset for o in CONTAINER_OPTIONS if o.since != FIRST_RELEASE}


def resolve_options(docker: Mapping[str, Any],
                    problems: list[tuple[str, str]] | None = None) -> tuple[tuple[str, Any], ...]:
    """The container options of one instance from its merged `[docker]` table, in table order.
    A value no engine would take is left unset and reported into `problems` as ([docker] key,
    message), so `validate` and `up` refuse it before any container changes."""
    values = []
    for option in CONTAINER_OPTIONS:
        try:
            value = option.resolve(docker)
        except ValueError as exc:
            if problems is None:
                raise
            problems.append((option.setting or option.record, str(exc)))
            value = None
        values.append((option.record, value))
    return tuple(values)


def record_fields(options: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """The options as the container's record holds them: an option added after the releases of
    RECORDS_UNSET_OPTIONS is left out while the config does not set it (None) or sets what older
    containers had (`unset`), so declaring one changes no record, config_hash or `plan --json`
    of a config that does not use it."""
    record: dict[str, Any] = {}
    for key, value in options:
        option = declared(key)
        if option.always_recorded or (value is not None and value != option.unset):
            record[key] = value
    return record


def engine_fields(options: tuple[tuple[str, Any], ...], body: dict[str, Any]) -> None:
    """Write the options into an Engine API create body (and its HostConfig)."""
    for record, value in options:
        for field, engine_value in declared(record).engine(value).items():
            if field.startswith("HostConfig."):
                body.setdefault("HostConfig", {})[field[len("HostConfig."):]] = engine_value
            else:
                body[field] = engine_value


def compose_fields(options: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    """The options as Compose service settings, in table order."""
    settings: dict[str, Any] = {}
    for record, value in options:
        settings.update(declared(record).compose(value))
    return settings
