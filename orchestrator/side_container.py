"""What the project's own service containers share: the gateway (HAProxy), Prometheus and the
on-demand activator are each one more owned container of the project, beside its instances.

Each service module decides its own container (record, body, plan); this module holds the parts
that would otherwise be written three times: removing one, its `ps` row in the instances' shape,
and the uid:gid it runs as.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from orchestrator.backends.engine import Engine, EngineError, EngineTimeout, EngineUnreachable
from orchestrator.errors import DockerUnavailable, OrchestratorError
from orchestrator.labels import LABEL_OWNER, LABEL_URL

# `watch` supervises the instances, not these (Docker's restart policy is theirs): their rows
# have the instances' keys with no restarts.
NOT_WATCHED: dict[str, Any] = {"restarts": 0, "last_restart": None}


def host_user() -> str:
    """The caller's uid:gid: files the service writes on the host stay the caller's."""
    return f"{os.getuid()}:{os.getgid()}"


def remove(engine: Engine, observed: dict, *, what: str, stop_timeout_s: int, wait_s: float = 60) -> None:
    """Stop (SIGTERM, then `stop_timeout_s`) and remove one container; gone already is done.
    Errors are one line named after `what` ("gateway: ..."); a lost engine is DockerUnavailable."""
    try:
        if observed.get("State") in ("running", "restarting", "paused"):
            engine.stop(observed["Id"], grace_s=stop_timeout_s)
        engine.wait(observed["Id"], wait_s)
        engine.remove(observed["Id"])
    except EngineError as exc:
        if not exc.not_found:
            raise OrchestratorError(f"{what}: {exc}") from None
    except EngineTimeout as exc:
        raise OrchestratorError(f"{what}: {exc}") from None
    except EngineUnreachable as exc:
        raise DockerUnavailable(f"cannot reach the Docker engine: {exc}") from None


def status_row(observed: dict, *, name: str, configured: bool, healthy: Callable[[str], bool],
               model: str = "") -> dict[str, Any]:
    """The service's `ps` row, in the instances' shape. `healthy(url)` asks the service itself
    (only while it runs and has a URL label)."""
    from orchestrator.status import exit_code, uptime

    labels = observed.get("Labels") or {}
    url = labels.get(LABEL_URL, "")
    health = ""
    if observed.get("State") == "running" and url:
        health = "healthy" if healthy(url) else "unhealthy"
    status = observed.get("Status", "")
    return {"name": name, "container": ((observed.get("Names") or [""])[0]).lstrip("/"),
            "owner": labels.get(LABEL_OWNER, ""), "state": observed.get("State", ""), "exit_code": exit_code(status),
            "health": health, "gpus": "", "url": url, "model": model, "uptime": uptime(status), "status": status,
            "configured": configured, "cause": None, **NOT_WATCHED}
