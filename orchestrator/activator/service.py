"""The activator as one more container of the project (style habit 11), like the gateway's.

`role=activator`, the project's ownership labels, a record compared key by key (image, ports,
mounts), restart `unless-stopped`, the host's network on 127.0.0.1 (HAProxy reaches it there),
and the Docker socket: it starts and stops this project's on-demand containers (control.py
checks each one's labels). Its state file is written by `up` and re-read by the activator when
it changes, so a config change is no restart of it.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from orchestrator.backends.engine import Engine, EngineError, EngineTimeout, EngineUnreachable
from orchestrator.errors import DockerUnavailable, OrchestratorError
from orchestrator.labels import LABEL_CONFIG, LABEL_OWNER, LABEL_PROJECT, LABEL_ROLE, LABEL_SPEC, LABEL_URL, OWNER_UP
from orchestrator import side_container
from orchestrator.activator.state import ACTIVATOR_NAME
from orchestrator.side_container import remove
from orchestrator.value import Value, field

IMAGE = "vllm-orch/activator:latest"  # scripts/build-images.sh activator
LABEL_PORTS = "io.vllm-orch.activator-ports"  # "HTTP,AGENT"
CREATE, RECREATE, NOOP, REMOVE = "create", "recreate", "noop", "remove"
STOP_TIMEOUT_S = 5


class Wanted(Value):
    """The activator as this `up` wants it."""

    project: str
    config_file: str
    state_path: str  # on the host; mounted at the same path
    binds: tuple[str, ...]  # host:container[:ro], all at the same path inside
    env: tuple[tuple[str, str], ...] = ()
    image: str = IMAGE
    ports: tuple[int, int] = (0, 0)

    @property
    def container_name(self) -> str:
        return f"{self.project}-{ACTIVATOR_NAME}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports[0]}"


class Step(Value):
    kind: str
    reasons: tuple[str, ...] = ()
    wanted: Wanted | None = None
    observed: dict | None = field(default=None, hash=False)


def find(rows: list[dict]) -> dict | None:
    return next((r for r in rows if (r.get("Labels") or {}).get(LABEL_ROLE) == ACTIVATOR_NAME), None)


def ports_of(observed: dict | None) -> tuple[int, int] | None:
    raw = ((observed or {}).get("Labels") or {}).get(LABEL_PORTS, "")
    parts = raw.split(",")
    return (int(parts[0]), int(parts[1])) if len(parts) == 2 and all(p.isdigit() for p in parts) else None


def free_ports() -> tuple[int, int]:
    """Two ports free on 127.0.0.1 now (kept in the container's label from then on)."""
    found = []
    sockets = []
    for _ in range(2):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        sockets.append(probe)
        found.append(probe.getsockname()[1])
    for probe in sockets:
        probe.close()
    return found[0], found[1]


def record(wanted: Wanted) -> dict[str, Any]:
    return {"image": wanted.image, "binds": list(wanted.binds), "env": [list(e) for e in wanted.env],
            "ports": list(wanted.ports), "state": wanted.state_path}


def plan(wanted: Wanted | None, observed: dict | None, image_id: str | None) -> Step | None:
    if wanted is None:
        return Step(REMOVE, ("no on-demand instance (or no gateway)",), observed=observed) if observed else None
    if observed is None:
        return Step(CREATE, ("not created yet",), wanted)
    try:
        old = json.loads((observed.get("Labels") or {}).get(LABEL_SPEC, ""))
    except ValueError:
        old = {}
    new = record(wanted)
    if observed.get("State") != "running":  # see workflow._wanted: made again on ports free now
        return Step(RECREATE, (f"was {observed.get('State')}: made again on free ports",), wanted, observed)
    reasons = [f"{key} changed" for key, value in new.items() if old.get(key) != value]
    if not reasons and image_id and observed.get("ImageID") and observed["ImageID"] != image_id:
        reasons.append(f"image {wanted.image} was rebuilt")
    if reasons:
        return Step(RECREATE, tuple(reasons), wanted, observed)
    return Step(NOOP, ("up to date",), wanted, observed)


def body(wanted: Wanted) -> dict[str, Any]:
    http_port, agent_port = wanted.ports
    return {
        "Image": wanted.image,
        "Cmd": ["python", "-m", "orchestrator.activator", "--state", wanted.state_path,
                "--port", str(http_port), "--agent-port", str(agent_port)],
        "Env": [f"{k}={v}" for k, v in wanted.env] + ["PYTHONUNBUFFERED=1"],
        "Labels": {LABEL_PROJECT: wanted.project, LABEL_OWNER: OWNER_UP, LABEL_ROLE: ACTIVATOR_NAME,
                   LABEL_CONFIG: wanted.config_file, LABEL_URL: wanted.url,
                   LABEL_PORTS: f"{http_port},{agent_port}", LABEL_SPEC: json.dumps(record(wanted), sort_keys=True)},
        "StopTimeout": STOP_TIMEOUT_S,
        "HostConfig": {
            "NetworkMode": "host",
            "Binds": list(wanted.binds),
            "RestartPolicy": {"Name": "unless-stopped"},
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "ReadonlyRootfs": True,
        },
    }


def apply(engine: Engine, step: Step) -> str:
    try:
        if step.kind == REMOVE or step.kind == RECREATE:
            assert step.observed is not None
            remove(engine, step.observed, what="activator", stop_timeout_s=STOP_TIMEOUT_S, wait_s=30)
            if step.kind == REMOVE:
                return "stopped and removed"
        if step.kind == NOOP:
            return "up to date"
        assert step.wanted is not None
        try:
            created = engine.create(step.wanted.container_name, body(step.wanted))
        except EngineError as exc:
            if exc.not_found:
                raise OrchestratorError(f"activator: image {step.wanted.image!r} not found on this Docker host "
                                        "(build it: scripts/build-images.sh activator)") from None
            raise
        engine.start(created)
        return "recreated" if step.kind == RECREATE else "created"
    except EngineUnreachable as exc:
        raise DockerUnavailable(f"cannot reach the Docker engine: {exc}") from None
    except (EngineError, EngineTimeout) as exc:
        raise OrchestratorError(f"activator: {exc}") from None


def status_row(observed: dict, *, configured: bool) -> dict[str, Any]:
    """Its `ps` row, in the instances' shape; health from its own /health."""
    return side_container.status_row(observed, name=ACTIVATOR_NAME, configured=configured,
                                     healthy=lambda url: _get(url, "/health") is not None)


def snapshot(observed: dict | None) -> list[dict[str, Any]]:
    """The activator's view of its instances (GET /status): [] when it does not answer."""
    url = ((observed or {}).get("Labels") or {}).get(LABEL_URL, "")
    if not url or (observed or {}).get("State") != "running":
        return []
    text = _get(url, "/status")
    try:
        doc = json.loads(text) if text else []
    except ValueError:
        return []
    return doc if isinstance(doc, list) else []


def _get(url: str, path: str) -> str | None:
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=1.0)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        text = answer.read().decode(errors="replace")
        return text if answer.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def socket_path(address: str) -> str | None:
    return address[len("unix://"):] if address.startswith("unix://") else None


def log_dirs(paths: list[str]) -> list[str]:
    return sorted({os.path.dirname(p) for p in paths if p})
