"""Every problem of a config at once: schema (keys, types) then meaning (ports, GPUs, reach).

The schema part walks `schema.SCHEMA` itself, so the published JSON Schema and these checks
cannot drift apart; it adds what a generic validator lacks: a did-you-mean for unknown keys.
"""

from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from typing import Any, Iterable

from orchestrator.addresses import bind_refused, ip_address, is_loopback
from orchestrator.argv import DEFAULT_MODULE
from orchestrator.container import ContainerSpec
from orchestrator.config.schema import SCHEMA
from orchestrator.config.on_demand_check import on_demand_problems
from orchestrator.config.settings_check import container_setting_problems, mount_target_problems
from orchestrator.config.server_check import reserved_dest, server_problems
from orchestrator.errors import Problem, show_value
from orchestrator.resolve import Resolved
from orchestrator.targets import COMPOSE, DOCKER, KUBERNETES, renders_docker, runs_containers, shares_one_host
from orchestrator.vllm_options import OptionTable

_JSON_TYPES = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "null": lambda v: v is None,
}
_CONTROL_KEYS = set(SCHEMA["properties"]["instance"]["properties"]["control"]["properties"])
DEFAULT_GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    for name, check in _JSON_TYPES.items():
        if name != "number" and check(value):
            return {"object": "table", "array": "array"}.get(name, name)
    return "float" if isinstance(value, float) else type(value).__name__


def _wrong_type(value: Any, schema: dict) -> bool:
    types = schema.get("type")
    if types is None:
        return False
    return not any(_JSON_TYPES[t](value) for t in ([types] if isinstance(types, str) else types))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def schema_problems(data: Any, source: str, schema: dict = SCHEMA, path: str = "") -> list[Problem]:
    problems: list[Problem] = []
    _walk(data, schema, path, source, problems)
    return problems


def _shown(value: Any, schema: dict, path: str = "") -> str:
    """A value as messages may show it: never a secret's (schema writeOnly), never a page of it."""
    if schema.get("writeOnly"):
        if ".env." in path or path.startswith("docker.env"):  # a plain variable, or one secret_env names
            return "(value not shown: env values may hold secrets)"
        return "(value not shown: it is secret)"
    # A value of the wrong shape where secrets live (`[[gateway]]` with its api_key, `env = "HF_TOKEN=..."`).
    if (_holds_secret(schema) or re.search(r"secret_env(\[\d+\])?$", path)
            or (isinstance(value, (dict, list)) and _names_secret(value))):
        return "(value not shown: it may hold a secret)"
    return show_value(value)


def _holds_secret(schema: Any, depth: int = 0) -> bool:
    """The schema has a secret (writeOnly) anywhere inside: a table of the wrong shape may carry it."""
    if not isinstance(schema, dict) or depth > 8:
        return False
    if schema.get("writeOnly"):
        return True
    inner = list((schema.get("properties") or {}).values()) + list(schema.get("oneOf") or [])
    inner += [schema[k] for k in ("additionalProperties", "items") if isinstance(schema.get(k), dict)]
    return any(_holds_secret(sub, depth + 1) for sub in inner)


_SECRET_WORDS = ("key", "token", "secret", "password")


def _names_secret(value: Any, depth: int = 0) -> bool:
    """A key in the value that sounds like a secret, where the schema cannot say (a wrong table)."""
    if depth > 8:
        return False
    if isinstance(value, dict):
        return any(any(w in str(k).lower() for w in _SECRET_WORDS) or _names_secret(v, depth + 1)
                   for k, v in value.items())
    if isinstance(value, list):
        return any(_names_secret(v, depth + 1) for v in value)
    return False


def _walk(value: Any, schema: dict, path: str, source: str, out: list[Problem]) -> None:
    if "oneOf" in schema:
        found = [schema_problems(value, source, sub, path) for sub in schema["oneOf"]]
        if all(found):
            # The one form whose type the value has says what is wrong (gpu_ids = 1024: its maximum).
            typed = [f for f, sub in zip(found, schema["oneOf"]) if not _wrong_type(value, sub)]
            if len(typed) == 1:
                out += typed[0]
            else:
                out.append(Problem("error", path, f"invalid value {_shown(value, schema, path)}: "
                                   f"{schema.get('description', '')}".rstrip(": "), source=source))
        return
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else types
        if not any(_JSON_TYPES[t](value) for t in allowed):
            want = " or ".join("table" if t == "object" else t for t in allowed if t != "null")
            out.append(Problem("error", path, f"expected {want}, got {_type_name(value)} {_shown(value, schema, path)}", source=source))
            return
    if isinstance(value, float) and not math.isfinite(value):
        out.append(Problem("error", path, f"must be a finite number, got {value}", source=source))
        return
    if "enum" in schema and value not in schema["enum"]:
        choices = ", ".join(repr(c) for c in schema["enum"])
        out.append(Problem("error", path, f"must be one of {choices}, got {_shown(value, schema, path)}", source=source))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(Problem("error", path, f"must be >= {schema['minimum']}, got {value}", source=source))
        if "maximum" in schema and value > schema["maximum"]:
            out.append(Problem("error", path, f"must be <= {schema['maximum']}, got {value}", source=source))
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            out.append(Problem("error", path, f"must be > {schema['exclusiveMinimum']}, got {value}", source=source))
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        out.append(Problem("error", path, f"{_shown(value, schema, path)} does not match {schema['pattern']}", source=source))
    if isinstance(value, str) and len(value) > schema.get("maxLength", len(value)):
        out.append(Problem("error", path, f"longer than {schema['maxLength']} characters ({len(value)})", source=source))
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            _walk(item, schema["items"], f"{path}[{index}]", source, out)
    if isinstance(value, dict):
        _walk_table(value, schema, path, source, out)


def _walk_table(table: dict, schema: dict, path: str, source: str, out: list[Problem]) -> None:
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    names = schema.get("propertyNames") or {}
    name_pattern, name_max = names.get("pattern"), names.get("maxLength")
    for key in schema.get("required", ()):
        if key not in table:
            out.append(Problem("error", _join(path, key), "missing", source=source))
    for key, item in table.items():
        key_path = _join(path, key)
        if key in properties:
            _walk(item, properties[key], key_path, source, out)
        elif extra is False:
            out.append(Problem("error", key_path, "unknown key", hint=_did_you_mean(key, properties), source=source))
        else:
            if name_pattern and not re.search(name_pattern, key):
                why = f": {names['description']}" if names.get("description") else ""
                out.append(Problem("error", key_path[:120], f"name {_shown(key, {})} must match {name_pattern}{why}",
                                   source=source))
            elif name_max and len(key) > name_max:
                out.append(Problem("error", key_path[:80], f"name is {len(key)} characters long; at most {name_max} "
                                   "(it names containers, files and DNS labels)", source=source))
            if isinstance(extra, dict):
                _walk(item, extra, key_path, source, out)


def _did_you_mean(key: str, known: Iterable[str]) -> str:
    import difflib  # only when a key is unknown

    match = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f"did you mean {match[0]}?" if match else "known keys: " + ", ".join(sorted(known))


# --------------------------------------------------------------------------- meaning checks
def semantic_problems(resolved: Resolved, data: dict, source: str, target: str, *,
                      on_host: bool = True) -> list[Problem]:
    """The meaning checks for `target` (targets.py: a backend or an export). `on_host`: this
    machine is the one that runs the instances (`up`, `validate` without --offline), so facts
    about it (`host_problems`) are errors; elsewhere (a review on a laptop or in CI: `plan`,
    `compose`, `k8s`, `validate --offline`) they are warnings, and the output is what it would be
    on the host."""
    out: list[Problem] = []
    instances = [i for i in resolved.instances if i.enabled]
    if not resolved.master.enable:
        out.append(Problem("warning", "master.enable", "false: nothing will be launched", source=source))
    _server_key_placement(data, source, out)
    if shares_one_host(target):  # not on Kubernetes: every pod has its own address, every Service its name
        _port_conflicts(resolved, target, source, out)
    for spec in instances:
        out += server_problems(spec, source)
        _parallel_sizes(spec, source, out)
        if "model" not in spec.server and resolved.master.api_server_module == DEFAULT_MODULE:
            out.append(Problem("error", f"instance.{spec.name}.server.model",
                               "missing: without --model vLLM's api_server loads its default (Qwen/Qwen3-0.6B) from the Hub",
                               hint="set model to the model directory inside the container", source=source))
        if "api_key" in spec.server:  # not a string: split_secrets left it on the server table
            out.append(Problem("error", f"instance.{spec.name}.server.api_key",
                               "must be one string: it reaches vLLM as VLLM_API_KEY, never on argv", source=source))
    if shares_one_host(target):  # not on Kubernetes: the device plugin gives each pod GPUs of its own
        _gpu_memory(instances, source, out, target=target)
    for spec in resolved.instances:
        _log_path(spec, source, out)
    if runs_containers(target):  # what the engine, or the API server, would refuse
        rendering = "kubernetes" if target == KUBERNETES else "docker"  # Compose: the Docker rendering
        for spec in instances:
            out += mount_target_problems(spec, resolved.containers.get(spec.name), source, rendering)
            out += container_setting_problems(spec, source, rendering)
    if renders_docker(target):
        for spec in instances:
            container = resolved.container_of(spec.name)
            _docker_checks(spec, container, source, out)
            out += host_problems(spec, container, source, on_host=on_host)
        _log_collisions([(spec.name, resolved.container_of(spec.name)) for spec in instances], source, out)
    out += on_demand_problems(resolved, data, source, target)
    if shares_one_host(target):  # on Kubernetes the gateway is a Service of its own: no host port to share
        from orchestrator.gateway.checks import gateway_problems

        out += gateway_problems(resolved, data, source, target)
    elif target != "local":
        from orchestrator.gateway.checks import route_problems

        out += route_problems(data, source)
    from orchestrator.monitoring.checks import monitoring_problems

    out += monitoring_problems(resolved, data, source, target)
    return out


def _log_path(spec: Any, source: str, out: list[Problem]) -> None:
    """The log file is a path inside the container (or on the host, for `launch`): absolute, and
    naming a file. A relative one would be relative to wherever the process starts; one ending in
    `/` or `..` names a directory, which the host side would turn into a writable bind mount."""
    path = spec.log_file
    key = f"instance.{spec.name}.control"
    name = path.rsplit("/", 1)[-1]
    if not path.startswith("/"):
        out.append(Problem("error", key, f"log file {path!r} is relative: log_dir and log_file are absolute paths inside the container",
                           hint='e.g. log_dir = "/var/log/vllm"', source=source))
    elif name in ("", ".", "..") or "\0" in path:
        out.append(Problem("error", key, f"log file {path!r} does not name a file", hint="end log_file with a file name", source=source))


def _server_key_placement(data: dict, source: str, out: list[Problem]) -> None:
    section = data.get("instance") or {}
    for name, table in section.items():
        if not isinstance(table, dict):
            continue
        server = table if name == "server" else (table.get("server") or {})
        where = "instance.server" if name == "server" else f"instance.{name}.server"
        if name == "control":
            continue
        for key in server:
            if key in _CONTROL_KEYS:
                out.append(Problem("error", f"{where}.{key}", "is a launcher setting, not a vLLM option",
                                   hint=f"move it to [{where[:-len('server')]}control]", source=source))


def _port_conflicts(resolved: Resolved, target: str, source: str, out: list[Problem]) -> None:
    seen: dict[tuple[str, int], str] = {}
    for spec in resolved.instances:
        if not spec.enabled:
            continue
        keys: list[tuple[str, int]] = []
        container = resolved.containers.get(spec.name)
        if renders_docker(target) and container and container.network_mode != "host":
            if container.port:
                keys.append(("published", container.port.host_port))
                what = f"host port {container.port.host_port}"
            else:
                continue
        else:
            keys.append(("server", spec.port))
            what = f"port {spec.port}"
        for key in keys:
            if key in seen:
                out.append(Problem("error", f"instance.{spec.name}", f"{what} is also used by instance {seen[key]!r}",
                                   hint="give each instance its own port", source=source))
            else:
                seen[key] = spec.name


def parallel_sizes(server: dict) -> tuple[int, int, int] | None:
    """tensor, pipeline and data parallel sizes of a server table (vLLM's defaults 1), None when
    one is not an integer (the schema or vLLM reports that)."""
    sizes = tuple(server.get(key, 1) for key in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes):
        return None
    return sizes


def _parallel_sizes(spec: Any, source: str, out: list[Problem]) -> None:
    sizes = parallel_sizes(spec.server)
    if sizes is None:
        return
    tp, pp, dp = sizes
    needed, have = tp * pp, spec.gpu.count
    if have and needed > have:
        out.append(Problem("error", f"instance.{spec.name}.server.tensor_parallel_size",
                           f"needs {needed} GPUs (tensor {tp} x pipeline {pp}) but gpu_ids gives {have}",
                           source=source))
    elif have and needed * dp < have:
        # vLLM takes the first tensor x pipeline (x data) of the GPUs it sees; the rest stay idle.
        out.append(Problem("warning", f"instance.{spec.name}.control.gpu_ids",
                           f"gives {have} GPUs but the server uses {needed * dp} (tensor {tp} x pipeline {pp}"
                           + (f" x data {dp}" if dp != 1 else "") + "): the others stay idle",
                           hint="set tensor_parallel_size, or give fewer gpu_ids", source=source))
    migs = [u for u in spec.gpu.uuids if u.startswith("MIG-")]
    if len(migs) > 1:
        out.append(Problem("warning", f"instance.{spec.name}.control.gpu_ids",
                           f"lists {len(migs)} MIG devices: CUDA gives a process only the first MIG device it is "
                           "shown, so one server cannot span MIG devices",
                           hint="give each instance one MIG device", source=source))


def _gpu_memory(instances: list, source: str, out: list[Problem], *, target: str) -> None:
    """Instances sharing a GPU must fit: vLLM takes gpu_memory_utilization of the whole card.
    Under `up` on-demand instances take turns (the activator stops or sleeps one to start
    another), so a GPU must hold its always-on instances plus the largest on-demand one. The
    launcher starts them all, so there every share counts; a Compose export starts them all only
    with `--profile on-demand`, which it is told (a warning: the export is still worth reviewing).
    Without the host's inventory an index and a UUID cannot be known to name the same GPU;
    `gpus.inventory_problems` checks that, and the memory other processes hold, where it can."""
    per_gpu: dict[Any, list[tuple[str, float, bool]]] = defaultdict(list)
    explicit = list(dict.fromkeys(gpu for spec in instances for gpu in spec.gpu.device_ids))
    turns = target in (DOCKER, COMPOSE)
    for spec in instances:
        util = gpu_memory_utilization(spec)
        if util is None or spec.gpu.mode == "none":
            continue
        gpus = explicit + ["*"] if spec.gpu.mode == "all" else list(spec.gpu.device_ids)
        on_demand = turns and bool(spec.workload and spec.workload.on_demand)
        for gpu in gpus:
            per_gpu[gpu].append((spec.name, util, on_demand))
    for gpu, users in per_gpu.items():
        always = [(n, u) for n, u, od in users if not od]
        taking_turns = [(n, u) for n, u, od in users if od]
        largest = max(taking_turns, key=lambda t: t[1], default=None)
        total = sum(u for _, u in always) + (largest[1] if largest else 0.0)
        if len(users) < 2:
            continue
        everything = sum(u for _, u, _ in users)
        label = "every GPU" if gpu == "*" else f"GPU {gpu}"
        if total <= 1.0 + 1e-9:
            if target == COMPOSE and everything > 1.0 + 1e-9:
                out.append(Problem("warning", "instance", f"{label}: `docker compose --profile on-demand up` starts "
                                   f"every on-demand instance at once, and their gpu_memory_utilization sums to "
                                   f"{everything:g} > 1 (vllm-orch's `up` runs them in turns)", source=source))
            continue
        if largest is None or len(taking_turns) == 1:
            names = ", ".join(f"{n} ({u:g})" for n, u, _ in users)
            message = f"{label} is shared by {names}: gpu_memory_utilization sums to {total:g} > 1"
        else:
            residents = ", ".join(f"{n} ({u:g})" for n, u in always)
            message = (f"{label}: on-demand {largest[0]} ({largest[1]:g}) cannot start beside the always-on "
                       f"{residents}: gpu_memory_utilization sums to {total:g} > 1")
        out.append(Problem("error", "instance", message,
                           hint="lower gpu_memory_utilization or give them different gpu_ids", source=source))


def gpu_memory_utilization(spec: Any) -> float | None:
    """The share of each of its GPUs' memory an instance's vLLM takes (vLLM's default 0.9)."""
    util = spec.server.get("gpu_memory_utilization", DEFAULT_GPU_MEMORY_UTILIZATION)
    if not isinstance(util, (int, float)) or isinstance(util, bool):
        return None
    return float(util)


_ip_address = ip_address
_is_loopback = is_loopback


def missing_model_dir(spec: Any, container: ContainerSpec) -> str | None:
    """server.model is a path inside a mounted volume whose host directory exists but holds no
    such model: vLLM would take the path for a Hugging Face Hub name and fail (or download)
    after a long start. Known before anything starts, so said here. (A volume whose host
    directory is missing altogether is `up`'s preflight error.)"""
    import os

    model = spec.server.get("model")
    if not isinstance(model, str) or not model.startswith("/"):
        return None
    covering = [m for m in container.mounts
                if m.target != "/" and (model == m.target or model.startswith(m.target + "/"))]
    if not covering:
        return None
    mount = max(covering, key=lambda m: len(m.target))  # the innermost mount decides
    host_path = os.path.join(mount.source, os.path.relpath(model, mount.target))
    if not os.path.isdir(mount.source) or os.path.exists(host_path):
        return None
    return (f"{model} is {host_path} on this host (volume {mount.source}:{mount.target}), which does not exist; "
            "vLLM would take it for a Hugging Face Hub name")


def _docker_checks(spec: Any, container: ContainerSpec, source: str, out: list[Problem]) -> None:
    path = f"instance.{spec.name}"
    if not container.image:
        out.append(Problem("error", f"{path}.docker.image", "no image: set [docker] image (or per instance)", source=source))
    if container.port and spec.host and _is_loopback(spec.host):
        out.append(Problem("error", f"{path}.server.host",
                           f"{spec.host} inside a container is unreachable through the published port",
                           hint='use host = "0.0.0.0" (the port is still published on 127.0.0.1 only)', source=source))
    if "CUDA_VISIBLE_DEVICES" in dict(container.env) and spec.gpu.mode != "none":
        out.append(Problem("error", f"{path}.docker.env.CUDA_VISIBLE_DEVICES",
                           "host GPU ids are renumbered from 0 inside a container",
                           hint="choose GPUs with control.gpu_ids instead", source=source))
    address_ok = True
    if container.port:
        if _ip_address(container.port.host_address) is None:
            address_ok = False
            out.append(Problem("error", f"{path}.docker.publish_address",
                               f"{container.port.host_address!r} is not an IP address",
                               hint='e.g. "127.0.0.1" (this host only) or "0.0.0.0" (every interface)', source=source))
    has_api_key = bool(dict(container.secret_env).get("VLLM_API_KEY"))  # "" is no key to vLLM
    listen = spec.host_listen()
    open_to_network = listen is not None and address_ok and not _is_loopback(listen[0]) and not has_api_key
    if open_to_network and container.network_mode != "host":
        out.append(Problem("warning", f"{path}.docker.publish_address",
                           f"published on {listen[0]} without an API key: anyone on the network can use it",
                           hint="set server.api_key, or publish on 127.0.0.1", source=source))
    if open_to_network and container.network_mode == "host":
        # No published port to keep on 127.0.0.1 here: vLLM's own socket is the host's.
        out.append(Problem("warning", f"{path}.server.host",
                           f"network_mode = \"host\" and host = {spec.host or 'unset (every interface)'!s}: the server "
                           "listens on the host's own interfaces without an API key",
                           hint='set server.api_key, or host = "127.0.0.1"', source=source))
    for key, value in container.secret_env:
        if value is None:
            out.append(Problem("warning", f"{path}.docker.secret_env", f"{key} is not set in this environment",
                               hint=f"export {key} before `up`", source=source))


# What is true of the machine that runs the instances, not of the config: checked here only
# where this machine may be that host. The README's "Where each check applies" lists them.
_ELSEWHERE_HINT = "a fact of this machine: `up` and `validate` (without --offline) on the host that runs the config refuse it"


def host_problems(spec: Any, container: ContainerSpec, source: str, *, on_host: bool = True) -> list[Problem]:
    """The host facts of one enabled Docker instance: its volumes' and pixi project's host
    paths exist, and a model path under a volume names a directory there. Errors `on_host`,
    else warnings saying so (the log file and caches are made by `up`, so never checked).
    Marked `host_fact`: `up` leaves them to its preflight, which reports them with the engine's."""
    path = f"instance.{spec.name}"
    severity = "error" if on_host else "warning"
    out: list[Problem] = []
    for mount in container.mounts:
        if mount.source != container.host_log_file and not os.path.exists(mount.source):
            out.append(Problem(severity, f"{path}.docker", f"host path {mount.source} does not exist",
                               hint="" if on_host else _ELSEWHERE_HINT, source=source, host_fact=True))
    missing = missing_model_dir(spec, container)
    if missing:
        out.append(Problem(severity, f"{path}.server.model", missing,
                           hint="check [docker] volumes and server.model" if on_host else _ELSEWHERE_HINT,
                           source=source, host_fact=True))
    return out


def busy_port_problems(resolved: Resolved, held: set[int] | frozenset[int], source: str) -> list[Problem]:
    """Host ports the enabled instances publish that something else holds on this machine (one
    bind each, as `up`'s preflight does). `held`: the ports the project's own running containers
    publish, which `up` keeps or releases itself. Only where this machine is the engine's host."""
    out: list[Problem] = []
    for spec in resolved.instances:
        container = resolved.containers.get(spec.name)
        port = container.port if spec.enabled and container else None
        if port is None or port.host_port in held or _ip_address(port.host_address) is None:
            continue
        why = bind_refused(port.host_address, port.host_port)
        if why:
            out.append(Problem("error", f"instance.{spec.name}.docker.publish_port",
                               f"host port {port.host_address}:{port.host_port} is not free on this host ({why})",
                               hint=f"stop what holds it, or set [instance.{spec.name}.docker] publish_port",
                               source=source))
    return out


def _log_collisions(containers: list[tuple[str, ContainerSpec]], source: str, out: list[Problem]) -> None:
    owners: dict[str, str] = {}
    for name, container in containers:
        log = container.host_log_file
        if log in owners:
            out.append(Problem("error", f"instance.{name}.control.log_file",
                               f"writes to the same host log file as {owners[log]!r} ({log})", source=source))
        owners[log] = name


def option_problems(resolved: Resolved, table: OptionTable, source: str, *, exact: bool,
                    only: str | set[str] | None = None) -> list[Problem]:
    """Server keys checked against vLLM's own option table. `exact`: the table came from the
    image that will run (errors); else from the bundled recording (warnings: versions differ)."""
    severity = "error" if exact else "warning"
    origin = f"vLLM {table.vllm_version}"
    out: list[Problem] = []
    for spec in resolved.instances:
        if only is not None and (spec.name != only if isinstance(only, str) else spec.name not in only):
            continue
        for key, value in spec.server.items():
            path = f"instance.{spec.name}.server.{key}"
            if key in _CONTROL_KEYS:
                continue
            option = table.lookup(key)
            if option is None:
                suggestion = table.suggest(key)
                hint = f"did you mean {suggestion}?" if suggestion else "see `vllm-orch flags`"
                out.append(Problem(severity, path, f"not an option of {origin}", hint=hint, source=source))
                continue
            if not option.takes_value and not isinstance(value, bool):
                out.append(Problem(severity, path, f"--{key.replace('_', '-')} is a plain flag of {origin}: use true or false, not {show_value(value)}", source=source))
            elif option.takes_value and isinstance(value, bool) and option.value_type != "bool":
                out.append(Problem(severity, path, f"--{key.replace('_', '-')} takes a value in {origin}, not {show_value(value)}", source=source))
            elif option.choices and not isinstance(value, (bool, dict)):
                values = value if isinstance(value, list) else [value]
                bad = [v for v in values if v not in option.choices and str(v) not in map(str, option.choices)]
                if bad:
                    choices = ", ".join(map(str, option.choices))
                    out.append(Problem(severity, path, f"{show_value(bad[0])} is not one of {origin}'s choices: {choices}", source=source))
        out += _extra_arg_problems(spec, table, severity, origin, source)
    return out


def _extra_arg_problems(spec: Any, table: OptionTable, severity: str, origin: str, source: str) -> list[Problem]:
    """Every `--flag` token of extra_args against the same table (their values stay verbatim):
    a flag vLLM no longer has kills the server only after its model load."""
    out: list[Problem] = []
    for index, token in enumerate(spec.extra_args):
        if token == "--":  # argparse: everything after it is positional
            break
        if not token.startswith("--") or len(token) < 3:
            continue
        flag = token.split("=", 1)[0]
        if reserved_dest(token) is not None:  # refused as an error by server_check already
            continue
        if table.lookup(flag[2:]) is None:
            suggestion = table.suggest(flag[2:])
            hint = f"did you mean --{suggestion.replace('_', '-')}?" if suggestion else "see `vllm-orch flags`"
            out.append(Problem(severity, f"instance.{spec.name}.server.extra_args[{index}]",
                               f"{flag} is not an option of {origin}", hint=hint, source=source))
    return out
