"""`validate`'s checks of `[gateway]` against the instances (the schema checked its types)."""

from __future__ import annotations

from typing import Any

from orchestrator.addresses import is_loopback
from orchestrator.errors import Problem
from orchestrator.gateway.settings import GATEWAY_NAME


def gateway_problems(resolved: Any, data: dict, source: str, target: str) -> list[Problem]:
    table = data.get("gateway")
    if not isinstance(table, dict) or not table.get("enabled", True):
        return []
    out: list[Problem] = []
    if target == "local":
        out.append(Problem("warning", "gateway", "the in-container launcher runs no gateway (only `up` does)",
                           source=source))
        return out
    port = table.get("port")
    if not isinstance(port, int):
        out.append(Problem("error", "gateway.port", "missing: the gateway needs a host port",
                           hint="e.g. port = 8000 (or enabled = false)", source=source))
    enabled = [i for i in resolved.instances if i.enabled]
    owners: dict[str, set[str]] = {}  # a served name -> the models (first names) that answer to it
    for spec in enabled:
        work = spec.workload
        if work is None:
            continue
        listen = spec.host_listen()
        if isinstance(port, int) and listen is not None and listen[1] == port:
            out.append(Problem("error", "gateway.port", f"host port {port} is also used by instance {spec.name!r}",
                               hint="give the gateway a port of its own", source=source))
        model = spec.served_model or spec.server.get("model")
        for name in ([model] if isinstance(model, str) else []) + list(spec.model_aliases):
            if not name or any(c.isspace() for c in name):
                out.append(Problem("error", f"instance.{spec.name}.server.served_model_name",
                                   f"{name!r}: the gateway routes by model name, which must have no spaces",
                                   source=source))
            if isinstance(model, str):
                owners.setdefault(name, set()).add(model)
    for name, models_of in sorted(owners.items()):
        if len(models_of) > 1:
            out.append(Problem("error", "instance", f"the served name {name!r} belongs to models "
                               f"{', '.join(sorted(models_of))}: the gateway routes a name to one model",
                               hint="give each model names of its own (served_model_name)", source=source))
    gateway_key = table.get("api_key")
    for spec in enabled:
        own_key = dict(spec.secrets).get("VLLM_API_KEY")
        if gateway_key and own_key and own_key != gateway_key:
            # The gateway passes the client's Authorization header on: one key cannot satisfy two.
            out.append(Problem("warning", f"instance.{spec.name}.server.api_key",
                               "differs from [gateway] api_key: requests for its model through the gateway carry "
                               "the gateway's key, which this vLLM refuses (401)",
                               hint="give the instance the gateway's key, or none (publish it on 127.0.0.1 only)",
                               source=source))
    out += route_problems(data, source)
    if resolved.instance(GATEWAY_NAME) is not None:
        out.append(Problem("error", f"instance.{GATEWAY_NAME}",
                           "this name is the gateway's (its container, `ps` row and `logs` name)",
                           hint="rename the instance", source=source))
    raw_docker = data.get("docker")
    docker: dict = raw_docker if isinstance(raw_docker, dict) else {}
    address = str(docker.get("publish_address", "127.0.0.1"))
    if not table.get("api_key") and not is_loopback(address):
        out.append(Problem("warning", "gateway.api_key",
                           f"the gateway listens on {address} without an API key: anyone on the network can use it",
                           hint="set [gateway] api_key", source=source))
    return out


def route_problems(data: dict, source: str) -> list[Problem]:
    """`[gateway] routes` that no router could dial, for every target that runs the gateway
    (the Kubernetes export writes them into its HAProxy config too)."""
    table = data.get("gateway")
    if not isinstance(table, dict) or not table.get("enabled", True) or not isinstance(table.get("routes"), list):
        return []
    out: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    for number, route in enumerate(table["routes"]):
        if not isinstance(route, dict):
            continue  # the schema said so
        key = (str(route.get("model")), str(route.get("url", "")).rstrip("/"))
        port = key[1].rsplit(":", 1)[-1]
        if port.isdigit() and not 1 <= int(port) <= 65535:
            out.append(Problem("error", f"gateway.routes[{number}].url", f"port {port} is not a TCP port", source=source))
        if key in seen:
            out.append(Problem("error", f"gateway.routes[{number}]", f"{key[1]} is listed twice for model {key[0]}",
                               source=source))
        seen.add(key)
    return out
