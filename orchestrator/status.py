"""`ps` rows: observed containers (ours and Compose-export ones) joined with configured instances."""

from __future__ import annotations

import re
from typing import Any

from orchestrator.plan import Observed
from orchestrator.resolve import LABEL_GPUS, LABEL_MODEL, LABEL_URL
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
        })
    return rows


def short_gpus(text: str) -> str:
    """The ps table's GPUS cell: UUIDs cut to their first 8 hex digits (`GPU-8f3c1d2e`), enough
    to tell a host's GPUs apart; `--json` keeps them whole."""
    parts = []
    for part in text.split(","):
        if part.startswith("MIG-GPU-"):
            parts.append(part[:16] + "/" + part.split("/", 1)[1] if "/" in part else part[:16])
        elif part.startswith(("GPU-", "MIG-")):
            parts.append(part[:12])
        else:
            parts.append(part)
    return ",".join(parts)
