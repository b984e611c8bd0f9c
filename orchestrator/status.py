"""`ps` rows: observed containers (ours and Compose-export ones) joined with configured instances."""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

from orchestrator.container import ContainerSpec
from orchestrator.plan import Observed
from orchestrator.labels import LABEL_GPUS, LABEL_LOG, LABEL_MODEL, LABEL_URL
from orchestrator.spec import InstanceSpec

_UPTIME = re.compile(r"^Up (.+?)(?: \((?:healthy|unhealthy|health: starting|Paused)\))?$")
_EXITED = re.compile(r"^Exited \((-?\d+)\)")


def uptime(status: str) -> str:
    match = _UPTIME.match(status)
    return match.group(1) if match else ""


def exit_code(status: str) -> int | None:
    """The exit code of a stopped container, from the engine's status text ("Exited (137) 5
    seconds ago"): the list call has no field of its own for it. None while it runs."""
    match = _EXITED.match(status)
    return int(match.group(1)) if match else None


def ps_rows(observed: list[Observed], configured: list[InstanceSpec],
            containers: Mapping[str, ContainerSpec]) -> list[dict[str, Any]]:
    """The rows; `containers`: the configured instances' Docker renderings (Resolved.containers)."""
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
            "cause": failure_cause(container.labels.get(LABEL_LOG, "")) if _failed(container) else None,
            **_restarts(container.labels.get(LABEL_LOG, "")),
        })
    for spec in configured:
        if spec.name in seen:
            continue
        rendering = containers.get(spec.name)
        rows.append({
            "name": spec.name,
            "container": rendering.name if rendering else "",
            "owner": "",
            "state": "not created" if spec.enabled else "disabled",
            "exit_code": None,
            "health": "",
            "gpus": spec.gpu.describe(),
            "url": rendering.port.url if rendering and rendering.port else "",
            "model": spec.served_model or "",
            "uptime": "",
            "status": "",
            "configured": True,
            "cause": None,
            **_restarts(rendering.host_log_file if rendering else ""),
        })
    return rows


def _restarts(log_file: str) -> dict[str, Any]:
    """`watch`'s restarts of the instance (restart_log.py, beside its log file): how many, and the
    last record's reason (None: none)."""
    from orchestrator.restart_log import summary

    count, reason = summary(log_file)
    return {"restarts": count, "last_restart": reason}


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


def ask_health(rows: list[dict[str, Any]], probe_many: Callable[[list[str]], list[bool]], *, local: bool) -> None:
    """Docker runs its health check every `health_interval` s (engine 20.10 has no faster
    start interval), so right after `up --wait` saw /health answer, Docker may still say
    "starting". Where the published port is on this machine, ask /health itself for those rows
    (all at once: about one request's time); `health_from` says whose word each row shows."""
    for row in rows:
        row["health_from"] = "docker" if row["health"] else ""
    asking = [r for r in rows if r["state"] == "running" and r["health"] == "starting" and r["url"]]
    if not asking:
        return
    if not local:
        for row in asking:
            row["health_from"] = "docker (the engine is on another machine: its ports are not reachable from here)"
        return
    for row, answered in zip(asking, probe_many([connect_url(r["url"]) for r in asking])):
        row["health_from"] = "/health"
        if answered:
            row["health"] = "healthy"


def connect_url(url: str) -> str:
    """Where this host reaches a published URL (a wildcard bind answers on loopback)."""
    for wildcard in ("http://0.0.0.0:", "http://[::]:"):
        if url.startswith(wildcard):
            return "http://127.0.0.1:" + url[len(wildcard):]
    return url


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

    from orchestrator.errors import OrchestratorError

    try:
        return cause_line("\n".join(tail_lines(log_file, lines)))
    except OrchestratorError:  # not a plain log file of ours (log_files.py): nothing to read there
        return None
