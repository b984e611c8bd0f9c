"""`ps` rows: observed containers (ours and Compose-export ones) joined with configured instances."""

from __future__ import annotations

import re
from typing import Any

from orchestrator.plan import Observed
from orchestrator.resolve import LABEL_GPUS, LABEL_LOG, LABEL_MODEL, LABEL_URL
from orchestrator.spec import InstanceSpec

_UPTIME = re.compile(r"^Up (.+?)(?: \((?:healthy|unhealthy|health: starting)\))?$")


def uptime(status: str) -> str:
    match = _UPTIME.match(status)
    return match.group(1) if match else ""


def ps_rows(observed: list[Observed], configured: list[InstanceSpec]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for container in sorted(observed, key=lambda o: (o.instance, o.owner)):
        seen.add(container.instance)
        rows.append({
            "name": container.instance,
            "container": container.name,
            "owner": container.owner,
            "state": container.state,
            "health": container.health,
            "gpus": container.labels.get(LABEL_GPUS, ""),
            "url": container.labels.get(LABEL_URL, ""),
            "model": container.labels.get(LABEL_MODEL, ""),
            "uptime": uptime(container.status),
            "status": container.status,
            "configured": any(spec.name == container.instance for spec in configured),
            "cause": failure_cause(container.labels.get(LABEL_LOG, "")) if _failed(container) else None,
        })
    for spec in configured:
        if spec.name in seen:
            continue
        container = spec.container
        rows.append({
            "name": spec.name,
            "container": container.name if container else "",
            "owner": "",
            "state": "not created" if spec.enabled else "disabled",
            "health": "",
            "gpus": spec.gpu.describe(),
            "url": container.port.url if container and container.port else "",
            "model": spec.served_model or "",
            "uptime": "",
            "status": "",
            "configured": True,
            "cause": None,
        })
    return rows


def _failed(container: Observed) -> bool:
    """Exited other than cleanly, crash-looping, or marked unhealthy."""
    if container.state in ("exited", "dead"):
        return not container.status.startswith("Exited (0)")
    return container.state == "restarting" or container.health == "unhealthy"


def failure_cause(log_file: str, lines: int = 200) -> str | None:
    """diagnose.py's one line for the end of a server's log, None when nothing known is there."""
    if not log_file:
        return None
    from orchestrator.diagnose import cause_line
    from orchestrator.logs import tail_lines

    return cause_line("\n".join(tail_lines(log_file, lines)))
