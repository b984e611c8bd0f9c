"""After `up --wait` (with `[monitoring]`): what each image's vLLM really exports, from one of its
running servers' `/metrics`, kept per image in the cache beside the option tables. `validate`
checks every metric the dashboard and the rules read against it (checks.py), so a vLLM that
renamed one is named before a panel goes blank."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from orchestrator.monitoring.checks import cached_recording


def record_exports(instances: list, addresses: dict[str, str]) -> list[str]:
    """Scrape one answering server per image; the images recorded. Best effort: a server that
    does not answer is skipped (the next `up --wait` tries again)."""
    from orchestrator.gateway.routes import routes_for
    from orchestrator.top import fetch_metrics
    from orchestrator.vllm_metrics import families_of

    images = {spec.name: spec.workload.image for spec in instances if spec.enabled and spec.workload is not None}
    done: list[str] = []
    for route in routes_for(instances, addresses):
        image = images.get(route.instance)
        if image is None or image in done:
            continue
        try:
            families = families_of(fetch_metrics(f"http://{route.address}"))
        except (OSError, ValueError):
            continue
        _write(image, {"source": f"GET /metrics of instance {route.instance} ({image})",
                       "families": {n: t for n, t in sorted(families.items()) if n.startswith("vllm:")}})
        done.append(image)
    return done


def _write(image: str, document: dict[str, Any]) -> None:
    path = cached_recording(image)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=".metrics-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=1)
        os.replace(staging, path)
    except BaseException:
        if os.path.lexists(staging):
            os.unlink(staging)
        raise
