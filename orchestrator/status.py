"""`ps` rows: observed containers (ours and Compose-export ones) joined with configured instances."""

from __future__ import annotations

import re
from typing import Any

from orchestrator.plan import Observed
from orchestrator.resolve import LABEL_GPUS, LABEL_MODEL, LABEL_URL
from orchestrator.spec import InstanceSpec

_UPTIME = re.compile(r"^Up (.+?)(?: \((?:healthy|unhealthy|health: starting)\))?$")
_EXITED = re.compile(r"^Exited \((-?\d+)\)")


def uptime(status: str) -> str:
    match = _UPTIME.match(status)
    return match.group(1) if match else ""


def exit_code(status: str) -> int | None:
    """The exit code of a stopped container, from the engine's status text ("Exited (137) 5
    seconds ago"): the list call has no field of its own for it. None while it runs."""
    match = _EXITED.match(status)
    return int(match.group(1)) if match else None


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
            "exit_code": exit_code(container.status),
            "health": container.health,
            "gpus": container.labels.get(LABEL_GPUS, ""),
            "url": container.labels.get(LABEL_URL, ""),
            "model": container.labels.get(LABEL_MODEL, ""),
            "uptime": uptime(container.status),
            "status": container.status,
            "configured": any(spec.name == container.instance for spec in configured),
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
            "exit_code": None,
            "health": "",
            "gpus": spec.gpu.describe(),
            "url": container.port.url if container and container.port else "",
            "model": spec.served_model or "",
            "uptime": "",
            "status": "",
            "configured": True,
        })
    return rows
