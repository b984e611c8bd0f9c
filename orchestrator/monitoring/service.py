"""Prometheus as one more container of the project, on one Docker engine: observe, plan, apply.

Planned like the gateway (gateway/service.py): the ownership labels plus `role=monitoring`, a
record of what the container was made with (image, listen address, retention, mounts, user),
compared key by key; a change there recreates Prometheus alone (its data dir stays). A change of
prometheus.yml or rules.yml (scrape interval, rules) is written and Prometheus reloads in place
(POST /-/reload); a change of targets is only written: Prometheus' file discovery follows it.
It runs on the host's network with the caller's uid, so it binds `publish_address:port` itself,
reaches every instance where the gateway does, and can read the root-only key file it mounts.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from orchestrator.backends.engine import Engine, EngineError, EngineTimeout, EngineUnreachable
from orchestrator.errors import DockerUnavailable, OrchestratorError, PreflightError
from orchestrator.labels import LABEL_CONFIG, LABEL_OWNER, LABEL_PROJECT, LABEL_ROLE, LABEL_SPEC, LABEL_URL, OWNER_UP
from orchestrator.monitoring import files, prometheus
from orchestrator.monitoring.settings import MONITORING_NAME, MonitoringSpec
from orchestrator import side_container
from orchestrator.addresses import bind_refused
from orchestrator.side_container import host_user, remove
from orchestrator.value import Value, field

CREATE, RECREATE, START, RELOAD, RETARGET, NOOP, REMOVE = (
    "create", "recreate", "start", "reload", "retarget", "noop", "remove")
STOP_TIMEOUT_S = 30  # Prometheus flushes its head block on SIGTERM
READY_WAIT_S = 30.0
NOT_WATCHED = side_container.NOT_WATCHED


def _missing_image(image: str) -> str:
    return f"monitoring: image {image!r} not found on this Docker host (build it: scripts/build-images.sh monitoring)"


class MonitoringPlan(Value):
    kind: str
    reasons: tuple[str, ...] = ()
    spec: MonitoringSpec | None = None
    observed: dict | None = field(default=None, hash=False)
    config: dict = field(default=None, hash=False, repr=False)  # prometheus.yml, rules.yml
    targets: dict = field(default=None, hash=False, repr=False)  # targets/*.json
    key: bytes | None = field(default=None, hash=False, repr=False)  # the gateway's API key

    def describe(self) -> str:
        return f"{self.kind} {MONITORING_NAME}" + (": " + "; ".join(self.reasons) if self.reasons else "")


def from_rows(rows: list[dict]) -> dict | None:
    """Prometheus' list row among the project's (DockerBackend.last_rows)."""
    return next((r for r in rows if (r.get("Labels") or {}).get(LABEL_ROLE) == MONITORING_NAME), None)


def record(spec: MonitoringSpec) -> dict[str, Any]:
    """What the container is made with and a reload cannot change (its `.spec` label)."""
    return {"image": spec.image, "host_dir": spec.host_dir, "argv": prometheus.argv(spec),
            "restart": spec.restart, "user": host_user()}


def plan(spec: MonitoringSpec | None, observed: dict | None, *, image_id: str | None, instances: list,
         addresses: Mapping[str, str], gateway: Any = None, activator: str | None = None) -> MonitoringPlan | None:
    """What `up` does to Prometheus; None when there is none and none is wanted. `gateway`: the
    project's GatewaySpec (its /metrics is scraped too) or None; `activator`: the on-demand
    activator's host:port, or None."""
    if spec is None:
        if observed is None:
            return None
        return MonitoringPlan(REMOVE, ("no [monitoring] in the config (or enabled = false)",), observed=observed)
    key = gateway.api_key.encode() if gateway is not None and gateway.api_key else None
    config = prometheus.config_files(spec, gateway_key=key is not None)
    gateway_address = urlsplit(gateway.url).netloc if gateway is not None else None
    groups = prometheus.target_groups(spec.project, instances, addresses, gateway_address, activator)
    targets = prometheus.target_files(groups)

    def step(kind: str, reasons: tuple[str, ...]) -> MonitoringPlan:
        return MonitoringPlan(kind, reasons, spec=spec, observed=observed, config=config, targets=targets, key=key)

    scraped = ", ".join(g["labels"]["instance"] for found in groups.values() for g in found) or "nothing yet"
    if observed is None:
        return step(CREATE, (f"not created yet; scrapes {scraped}",))
    changed = _record_changes(observed, spec, image_id)
    if changed:
        return step(RECREATE, tuple(changed))
    if observed.get("State") not in ("running", "restarting"):
        return step(START, (f"was {observed.get('State')}",))
    stale = [name for name, data in config.items() if files.read(os.path.join(spec.config_dir, name)) != data]
    if stale:
        return step(RELOAD, (f"{' and '.join(sorted(stale))} changed (scrape interval or rules)",))
    before = {path: files.read(os.path.join(spec.config_dir, path)) for path in targets}
    moves = prometheus.describe_targets(before, targets)
    if moves or any(before[path] != data for path, data in targets.items()):
        return step(RETARGET, ("targets: " + (", ".join(moves) or "labels"),))
    if files.read(os.path.join(spec.secret_dir, prometheus.KEY_FILE)) != key:
        return step(RETARGET, ("the gateway's key",))
    return step(NOOP, ("up to date",))


def _record_changes(observed: dict, spec: MonitoringSpec, image_id: str | None) -> list[str]:
    labels = observed.get("Labels") or {}
    try:
        old = json.loads(labels.get(LABEL_SPEC, ""))
    except ValueError:
        old = {}
    reasons = [f"{key}: {old.get(key)} -> {value}" for key, value in record(spec).items() if old.get(key) != value]
    if not reasons and image_id and observed.get("ImageID") and observed["ImageID"] != image_id:
        reasons.append(f"image {spec.image} was rebuilt")
    return reasons


def write_files(step: MonitoringPlan) -> None:
    spec = step.spec
    assert spec is not None
    for name, data in {**step.config, **step.targets}.items():
        files.write_if_changed(os.path.join(spec.config_dir, name), data)
    files.private_dir(spec.secret_dir)
    key_path = os.path.join(spec.secret_dir, prometheus.KEY_FILE)
    if step.key is None:
        files.remove(key_path)
    else:
        files.write_if_changed(key_path, step.key, mode=0o400)
    os.makedirs(spec.data_dir, mode=0o755, exist_ok=True)


def apply(engine: Engine, step: MonitoringPlan) -> str:
    """Carry the plan out; returns what was done (`created`, `reloaded in place (0.1 s)`, ...)."""
    observed = step.observed
    if step.kind == REMOVE:
        assert observed is not None
        remove(engine, observed, what="monitoring", stop_timeout_s=STOP_TIMEOUT_S)
        return "stopped and removed"
    spec = step.spec
    assert spec is not None
    if step.kind == NOOP:
        return "up to date"
    # The key and targets first: a new config that names the key file never loads without it.
    try:
        write_files(step)
    except OSError as exc:
        raise OrchestratorError(f"monitoring: cannot write {spec.host_dir}: {exc.strerror or exc}") from None
    if step.kind == RETARGET:
        return "targets written (Prometheus follows the file)"
    if step.kind == RELOAD:
        return f"reloaded in place ({reload(spec):.1f} s)"
    if step.kind == START:
        assert observed is not None
        container_id = observed["Id"]
        _call(lambda: engine.start(container_id))
        return f"started, ready in {wait_ready(spec, READY_WAIT_S):.1f} s"
    if step.kind == RECREATE:
        assert observed is not None
        remove(engine, observed, what="monitoring", stop_timeout_s=STOP_TIMEOUT_S)
    check_port_free(spec)
    try:
        created = _call(lambda: engine.create(spec.container_name, create_body(spec)))
    except EngineError as exc:
        if exc.not_found:
            raise PreflightError(_missing_image(spec.image)) from None
        raise OrchestratorError(f"monitoring: create failed: {exc}") from None
    _call(lambda: engine.start(created))
    # Ready before `up` goes on: a config Prometheus refuses is `up`'s failure, not a silent exit.
    ready = wait_ready(spec, READY_WAIT_S)
    return f"{'recreated' if step.kind == RECREATE else 'created'}, ready in {ready:.1f} s"


def create_body(spec: MonitoringSpec) -> dict[str, Any]:
    labels = {
        LABEL_PROJECT: spec.project, LABEL_OWNER: OWNER_UP, LABEL_ROLE: MONITORING_NAME,
        LABEL_CONFIG: spec.config_file, LABEL_URL: spec.url, LABEL_SPEC: json.dumps(record(spec), sort_keys=True),
    }
    return {
        "Image": spec.image,
        "Cmd": prometheus.argv(spec),
        "Labels": labels,
        "User": host_user(),
        "StopTimeout": STOP_TIMEOUT_S,
        "HostConfig": {
            "NetworkMode": "host",
            "Binds": [f"{spec.config_dir}:{prometheus.CONFIG_DIR}:ro",
                      f"{spec.secret_dir}:{prometheus.SECRET_DIR}:ro",
                      f"{spec.data_dir}:{prometheus.DATA_DIR}"],
            "ReadonlyRootfs": True,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "RestartPolicy": {"Name": spec.restart},
        },
    }


def reload(spec: MonitoringSpec) -> float:
    """POST /-/reload (waiting for Prometheus to be up first); seconds it took. Prometheus answers
    only once the new config and rules are loaded, with 500 and the reason when they are not."""
    started = time.monotonic()
    wait_ready(spec, READY_WAIT_S)
    status, body = _request(spec.url, "POST", "/-/reload", timeout=30.0)
    if status != 200:
        raise OrchestratorError(f"monitoring: Prometheus refused the new configuration: {body.strip()[:300]} "
                                f"(see `docker logs {spec.container_name}`)")
    return time.monotonic() - started


def wait_ready(spec: MonitoringSpec, timeout: float) -> float:
    """Seconds until Prometheus answers /-/ready; OrchestratorError past timeout."""
    started = time.monotonic()
    while _request(spec.url, "GET", "/-/ready", timeout=1.0)[0] != 200:
        if time.monotonic() - started > timeout:
            raise OrchestratorError(f"monitoring: Prometheus at {spec.url} not ready within {timeout:g}s "
                                    f"(see `docker logs {spec.container_name}`)")
        time.sleep(0.2)
    return time.monotonic() - started


def _request(url: str, method: str, path: str, timeout: float) -> tuple[int, str]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        connection.request(method, path)
        answer = connection.getresponse()
        return answer.status, answer.read().decode(errors="replace")
    except (OSError, http.client.HTTPException):
        return 0, ""
    finally:
        connection.close()


def remove_observed(engine: Engine, observed: dict) -> None:
    """`down`: stop and remove the container (config and data stay, as logs do)."""
    remove(engine, observed, what="monitoring", stop_timeout_s=STOP_TIMEOUT_S)


def status_row(observed: dict, *, configured: bool) -> dict[str, Any]:
    """Prometheus' `ps` row, in the instances' shape; health from its own /-/healthy."""
    return side_container.status_row(observed, name=MONITORING_NAME, configured=configured,
                                     healthy=lambda url: _request(url, "GET", "/-/healthy", timeout=1.0)[0] == 200)


def check_port_free(spec: MonitoringSpec) -> None:
    address = spec.publish_address or "0.0.0.0"
    refused = bind_refused(address, spec.port)  # the one port probe validate and up's preflight use too
    if refused:
        raise PreflightError(f"monitoring: host port {address}:{spec.port} is not free ({refused}); "
                             "set [monitoring] port")


def _call(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except EngineUnreachable as exc:
        raise DockerUnavailable(f"cannot reach the Docker engine: {exc}") from None
    except EngineTimeout as exc:
        raise OrchestratorError(f"monitoring: the Docker engine did not answer: {exc}") from None
