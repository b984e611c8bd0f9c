"""Which instance serves which model, as the gateway must know it: pure, from the specs.

Instances sharing a served model name are replicas of one model. Each route's address is where
the gateway (on the host's network) reaches the server: its published port, or for an instance
kept off the host (`[docker] publish = false`) its container's address on the bridge, which the
engine reports once the container exists.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from orchestrator.value import Value

_WILDCARDS = ("0.0.0.0", "::", "")


ROUTE_KEYS = frozenset({"model", "instance", "address", "aliases"})  # of routes.json's entries


class Route(Value):
    model: str
    instance: str
    address: str  # host:port, as the router dials it
    aliases: tuple[str, ...] = ()  # the instance's other served names, routed to the same backend

    def to_json(self) -> dict[str, Any]:
        found: dict[str, Any] = {"model": self.model, "instance": self.instance, "address": self.address}
        if self.aliases:  # absent otherwise: routes.json of a config without aliases stays as it was
            found["aliases"] = list(self.aliases)
        return found


def routes_for(instances: Iterable, container_addresses: Mapping[str, str] | None = None,
               remote: Iterable[tuple[str, str]] = ()) -> tuple[Route, ...]:
    """The routes of the enabled instances, sorted (model, instance). `container_addresses`
    (instance -> its container's IP) serves the unpublished ones; without it they are left out.
    `remote`: (model, host:port) of servers outside the project (`[gateway] routes`), named
    `remote-<host>-<port>`."""
    found: list[Route] = [Route(model, "remote-" + address.replace(":", "-").strip("[]"), address)
                          for model, address in remote]
    for spec in instances:
        if not spec.enabled or spec.workload is None:
            continue
        model = spec.served_model or spec.server.get("model")
        if not model:
            continue
        address = _address(spec, container_addresses or {})
        if address:
            found.append(Route(str(model), spec.name, address, tuple(spec.model_aliases)))
    return tuple(sorted(found, key=lambda r: (r.model, r.instance)))


def _address(spec, container_addresses: Mapping[str, str]) -> str | None:
    work = spec.workload  # the published port, as the container publishes it
    if work.network_mode == "host":
        return f"127.0.0.1:{spec.port}"
    if work.publish is not None:
        host = work.publish.host_address
        host = "127.0.0.1" if host in _WILDCARDS else host
        return f"{'[' + host + ']' if ':' in host else host}:{work.publish.host_port}"
    ip = container_addresses.get(spec.name)
    return f"{ip}:{spec.port}" if ip else None


def models(routes: Iterable[Route]) -> list[str]:
    return sorted({r.model for r in routes})


def aliases(routes: Iterable[Route]) -> dict[str, str]:
    """alias -> the model whose backend serves it (a name that is some model's own stays that model's)."""
    routes = tuple(routes)
    own = {r.model for r in routes}
    found: dict[str, str] = {}
    for route in sorted(routes, key=lambda r: (r.model, r.instance)):
        for alias in route.aliases:
            if alias not in own:
                found.setdefault(alias, route.model)
    return found


def describe_change(before: Iterable[Route], after: Iterable[Route]) -> list[str]:
    """`+ chat2 (m1)`, `- old (m2)`, `chat: 127.0.0.1:8001 -> 127.0.0.1:8011`: for `up --dry-run`."""
    old = {r.instance: r for r in before}
    new = {r.instance: r for r in after}
    out = [f"+ {n} ({new[n].model})" for n in sorted(new.keys() - old.keys())]
    out += [f"- {n} ({old[n].model})" for n in sorted(old.keys() - new.keys())]
    for name in sorted(old.keys() & new.keys()):
        a, b = old[name], new[name]
        if a.model != b.model:
            out.append(f"{name}: model {a.model} -> {b.model}")
        if a.address != b.address:
            out.append(f"{name}: {a.address} -> {b.address}")
        if a.aliases != b.aliases:
            out.append(f"{name}: other names {', '.join(a.aliases) or 'none'} -> {', '.join(b.aliases) or 'none'}")
    return out
