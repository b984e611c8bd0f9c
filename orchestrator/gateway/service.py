"""The gateway as one more container of the project, on one Docker engine: observe, plan, apply.

Planned like the instances (style habit 11): the same ownership labels plus `role=gateway`, a
record of what the container was made with, compared key by key, and a `--dry-run` line. Only
what a running HAProxy cannot take by a reload is in the record (image, mounts, restart policy);
everything in the rendered files (routes, port, policy, key, limits) is a new configuration
version and a reload in place: no instance and no gateway container is restarted for it.

The container runs on the host's network: it binds `publish_address:port` itself (no Docker
port proxy in the path), reaches published instances at their host ports and unpublished ones
at their container address, and its user is the caller's, so the root-only key file it mounts
is readable to it and to nobody else.
"""

from __future__ import annotations

import http.client
import json
import time
from typing import Any, Collection

from orchestrator.backends.engine import Engine, EngineError, EngineTimeout, EngineUnreachable
from orchestrator.errors import DockerUnavailable, OrchestratorError, PreflightError
from orchestrator.gateway import files, haproxy
from orchestrator.gateway.routes import ROUTE_KEYS, Route, describe_change, models, routes_for
from orchestrator.gateway.settings import GATEWAY_NAME, GatewaySpec
from orchestrator.labels import (LABEL_CONFIG, LABEL_INSTANCE, LABEL_MODEL, LABEL_OWNER, LABEL_PROJECT, LABEL_ROLE,
                                 LABEL_SPEC, LABEL_URL, OWNER_UP)
from orchestrator import side_container
from orchestrator.addresses import bind_refused
from orchestrator.side_container import host_user, remove
from orchestrator.value import Value, field

CREATE, RECREATE, START, RELOAD, NOOP, REMOVE = "create", "recreate", "start", "reload", "noop", "remove"
STOP_TIMEOUT_S = 10
RELOAD_WAIT_S = 15.0  # the watcher looks once a second; HAProxy reloads in milliseconds
IN_CONTAINER_LOG = "/var/log/vllm-orch-gateway.log"


class GatewayPlan(Value):
    kind: str
    reasons: tuple[str, ...] = ()
    gateway: GatewaySpec | None = None
    observed: dict | None = field(default=None, hash=False)  # the engine's list row
    routes: tuple[Route, ...] = ()
    version: str = ""
    files: dict = field(default=None, hash=False, repr=False)

    def describe(self) -> str:
        return f"{self.kind} {GATEWAY_NAME}" + (": " + "; ".join(self.reasons) if self.reasons else "")


def observe(engine: Engine, project: str, *, owner: str | None = OWNER_UP) -> tuple[dict | None, dict[str, str]]:
    """(the gateway's list row or None, instance -> its container's IP) in one list call
    (`owner` None: any tool's, as `ps` shows the Compose export's too)."""
    labels = [f"{LABEL_PROJECT}={project}"] + ([f"{LABEL_OWNER}={owner}"] if owner else [])
    return from_rows(_call(lambda: engine.containers(labels=labels)))


def from_rows(rows: list[dict]) -> tuple[dict | None, dict[str, str]]:
    """observe()'s answer from list rows already fetched (DockerBackend.last_rows)."""
    gateway = next((r for r in rows if (r.get("Labels") or {}).get(LABEL_ROLE) == GATEWAY_NAME), None)
    addresses: dict[str, str] = {}
    for row in rows:
        labels = row.get("Labels") or {}
        if labels.get(LABEL_ROLE) or row.get("State") != "running":
            continue
        networks = ((row.get("NetworkSettings") or {}).get("Networks") or {}).values()
        ip = next((n.get("IPAddress") for n in networks if n.get("IPAddress")), None)
        if ip and labels.get(LABEL_INSTANCE):
            addresses[labels[LABEL_INSTANCE]] = ip
    return gateway, addresses


def record(gateway: GatewaySpec) -> dict[str, Any]:
    """What the container is made with and a reload cannot change (its `.spec` label)."""
    return {"image": gateway.image, "host_dir": gateway.host_dir, "log_file": gateway.log_file,
            "restart": gateway.restart, "user": host_user()}


def plan(gateway: GatewaySpec | None, observed: dict | None, *, image_id: str | None, instances: list,
         addresses: dict[str, str]) -> GatewayPlan | None:
    """What `up` does to the gateway; None when there is none and none is wanted."""
    if gateway is None:
        if observed is None:
            return None
        return GatewayPlan(REMOVE, ("no [gateway] in the config (or enabled = false)",), observed=observed)
    routes = routes_for(instances, addresses, gateway.remote)
    draft = haproxy.render(gateway, routes)
    version = files.version_of(draft, gateway.key_digest)
    rendered = haproxy.render(gateway, routes, version)

    def step(kind: str, reasons: tuple[str, ...]) -> GatewayPlan:
        return GatewayPlan(kind, reasons, gateway=gateway, observed=observed, routes=routes, version=version,
                           files=rendered)

    if observed is None:
        return step(CREATE, (f"not created yet; models: {', '.join(models(routes)) or 'none'}",))
    reasons = _record_changes(observed, gateway, image_id)
    if reasons:
        return step(RECREATE, tuple(reasons))
    if observed.get("State") not in ("running", "restarting"):
        return step(START, (f"was {observed.get('State')}",))
    served = files.current_version(gateway.host_dir)
    if served != version:
        before = [Route(**{**r, "aliases": tuple(r.get("aliases") or ())})
                  for r in files.read_current(gateway.host_dir, "routes.json") or []
                  if isinstance(r, dict) and {"model", "instance", "address"} <= set(r) <= ROUTE_KEYS]
        changes = describe_change(before, routes)
        why = ("routes: " + ", ".join(changes)) if changes else "settings (port, policy, key or limits)"
        return step(RELOAD, (why,))
    return step(NOOP, ("up to date",))


def _record_changes(observed: dict, gateway: GatewaySpec, image_id: str | None) -> list[str]:
    labels = observed.get("Labels") or {}
    try:
        old = json.loads(labels.get(LABEL_SPEC, ""))
    except ValueError:
        old = {}
    new = record(gateway)
    reasons = [f"{key}: {old.get(key)} -> {value}" for key, value in new.items() if old.get(key) != value]
    if not reasons and image_id and observed.get("ImageID") and observed["ImageID"] != image_id:
        reasons.append(f"image {gateway.image} was rebuilt")
    return reasons


def apply(engine: Engine, step: GatewayPlan) -> str:
    """Carry the plan out; returns what was done (`created`, `reloaded in 1.2 s`, ...)."""
    observed = step.observed
    if step.kind == REMOVE:
        assert observed is not None  # a removal is planned for an observed container only
        remove(engine, observed, what="gateway", stop_timeout_s=STOP_TIMEOUT_S, wait_s=30)
        return "stopped and removed"
    gateway = step.gateway
    assert gateway is not None
    files.write_version(gateway.host_dir, step.version, step.files, haproxy.keys_file(gateway))
    if step.kind == NOOP:
        return "up to date"
    if step.kind == RELOAD:
        started = time.monotonic()
        _await_version(gateway, step.version)
        return f"reloaded in place ({time.monotonic() - started:.1f} s)"
    if step.kind == START:
        assert observed is not None
        container_id = observed["Id"]
        _call(lambda: engine.start(container_id))
        return "started"
    if step.kind == RECREATE:
        assert observed is not None
        remove(engine, observed, what="gateway", stop_timeout_s=STOP_TIMEOUT_S, wait_s=30)
    check_port_free(gateway)
    _prepare_log(gateway.log_file)
    try:
        created = _call(lambda: engine.create(gateway.container_name, create_body(gateway, step.routes)))
    except EngineError as exc:
        if exc.not_found:
            raise PreflightError(f"gateway: image {gateway.image!r} not found on this Docker host "
                                 "(build it: scripts/build-images.sh gateway)") from None
        raise OrchestratorError(f"gateway: create failed: {exc}") from None
    _call(lambda: engine.start(created))
    return "recreated" if step.kind == RECREATE else "created"


def create_body(gateway: GatewaySpec, routes: tuple[Route, ...]) -> dict[str, Any]:
    labels = {
        LABEL_PROJECT: gateway.project, LABEL_OWNER: OWNER_UP, LABEL_ROLE: GATEWAY_NAME,
        LABEL_CONFIG: gateway.config_file, LABEL_URL: gateway.url, LABEL_MODEL: ",".join(models(routes)),
        LABEL_SPEC: json.dumps(record(gateway), sort_keys=True),
    }
    return {
        "Image": gateway.image,
        "Labels": labels,
        "User": host_user(),
        "StopTimeout": STOP_TIMEOUT_S,
        "HostConfig": {
            "NetworkMode": "host",
            "Binds": [f"{gateway.host_dir}:{haproxy.CONFIG_DIR}:ro",
                      f"{gateway.secret_dir}:{haproxy.SECRET_DIR}:ro",
                      f"{gateway.log_file}:{IN_CONTAINER_LOG}"],
            "ReadonlyRootfs": True,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "RestartPolicy": {"Name": gateway.restart},
            "Init": False,
        },
    }


def remove_observed(engine: Engine, observed: dict) -> None:
    """`down`: stop and remove the gateway's container (its rendered files stay, as logs do)."""
    remove(engine, observed, what="gateway", stop_timeout_s=STOP_TIMEOUT_S, wait_s=30)


def status_row(observed: dict, *, configured: bool) -> dict[str, Any]:
    """The gateway's `ps` row, in the instances' shape; health from its own /health."""
    return side_container.status_row(observed, name=GATEWAY_NAME, configured=configured,
                                     healthy=lambda url: _health(url, timeout=1.0) is not None,
                                     model=(observed.get("Labels") or {}).get(LABEL_MODEL, ""))


NOT_WATCHED = side_container.NOT_WATCHED


def wait_healthy(gateway: GatewaySpec, timeout: float, healthy: Collection[str] = ()) -> float:
    """`up --wait`: seconds until the gateway answers /health and its own health checks have
    put in rotation every replica `up` just found healthy (at least one per model: a model
    served only from outside the project), so requests after `up --wait` spread over all of
    them; OrchestratorError past timeout."""
    started = time.monotonic()
    routes = [Route(**r) for r in files.read_current(gateway.host_dir, "routes.json") or [] if isinstance(r, dict)]
    # A model served by on-demand instances only has no replica up until its first request.
    always = [r for r in routes if r.instance not in gateway.on_demand]
    wanted = {haproxy.backend_name(m): max(1, sum(1 for r in always if r.model == m and r.instance in healthy))
              for m in models(always)}
    while True:
        if _health(gateway.url, timeout=1.0) is None:
            waiting = {"/health"}
        else:
            up = _replicas_up(gateway)
            waiting = {name for name, count in wanted.items() if up.get(name, 0) < count}
        if not waiting:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            what = "no answer on /health" if "/health" in waiting else "replicas not in rotation for " + ", ".join(
                sorted(waiting))
            raise OrchestratorError(f"gateway at {gateway.url}: {what} within {timeout:g}s "
                                    f"(see `vllm-orch logs {GATEWAY_NAME}`)")
        time.sleep(0.2)


def _replicas_up(gateway: GatewaySpec) -> dict[str, int]:
    """Replicas in rotation per backend, from the gateway's Prometheus metrics."""
    from urllib.parse import urlsplit

    parts = urlsplit(gateway.url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=2.0)
    try:
        connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {gateway.api_key}"}
                           if gateway.api_key else {})
        text = connection.getresponse().read().decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return {}
    finally:
        connection.close()
    up: dict[str, int] = {}
    prefix = 'haproxy_backend_active_servers{proxy="'
    for line in text.splitlines():
        if line.startswith(prefix):
            name, _, value = line[len(prefix):].partition('"}')
            try:
                up[name] = int(float(value))
            except ValueError:
                continue
    return up


def _await_version(gateway: GatewaySpec, version: str) -> None:
    deadline = time.monotonic() + RELOAD_WAIT_S
    while _health(gateway.url, timeout=1.0) != f"ok {version}":
        if time.monotonic() > deadline:
            raise OrchestratorError(f"gateway: configuration {version} written, but the gateway still serves the "
                                    f"previous one after {RELOAD_WAIT_S:g}s (see `vllm-orch logs {GATEWAY_NAME}`)")
        time.sleep(0.1)


def _health(url: str, timeout: float) -> str | None:
    """The gateway's /health body, None when it does not answer 200."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        connection.request("GET", "/health")
        answer = connection.getresponse()
        body = answer.read().decode(errors="replace").strip()
        return body if answer.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def check_port_free(gateway: GatewaySpec) -> None:
    address = gateway.publish_address or "0.0.0.0"
    refused = bind_refused(address, gateway.port)  # the one port probe validate and up's preflight use too
    if refused:
        raise PreflightError(f"gateway: host port {address}:{gateway.port} is not free ({refused}); "
                             "set [gateway] port")


def _prepare_log(path: str) -> None:
    from orchestrator import log_files

    try:
        log_files.prepare(path, owner=None, shared=False)
    except OSError as exc:
        raise OrchestratorError(f"gateway: cannot prepare log file {path}: {exc.strerror or exc}") from None


def _call(fn):
    try:
        return fn()
    except EngineUnreachable as exc:
        raise DockerUnavailable(f"cannot reach the Docker engine: {exc}") from None
    except EngineTimeout as exc:
        raise OrchestratorError(f"gateway: the Docker engine did not answer: {exc}") from None
