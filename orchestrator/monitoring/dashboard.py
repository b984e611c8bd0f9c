"""`vllm-orch dashboard`: a Grafana dashboard of the project's servers, per model and per instance.

Every panel reads vLLM's metrics through queries.either (old and new names alike), filtered by
the `project`, `model` and `instance` labels each scrape target carries (targets.py), chosen
with the dashboard's variables. Import it in Grafana with a Prometheus data source that reads
`[monitoring]`'s Prometheus (or any Prometheus scraping the same targets with those labels).
"""

from __future__ import annotations

import json
from typing import Any

from orchestrator.monitoring.queries import BY, JOB_VLLM, either, quantile
from orchestrator.value import Value

SEL = f'{{job="{JOB_VLLM}", project=~"$project", model=~"$model", instance=~"$instance"}}'
WINDOW = "$__rate_interval"
UID = "vllm-orch-servers"
LEGEND = "{{model}} {{instance}}"


class Panel(Value):
    title: str
    unit: str
    targets: tuple[tuple[str, str], ...]  # (legend, PromQL)
    description: str = ""


def _quantiles(quantity: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"p{int(q * 100)} {LEGEND}", quantile(q, quantity, SEL, WINDOW)) for q in (0.5, 0.9, 0.99))


PANELS: tuple[Panel, ...] = (
    Panel("Requests running", "short", ((LEGEND, f"sum by ({BY}) ({either('requests_running', SEL)})"),)),
    Panel("Requests waiting", "short", ((LEGEND, f"sum by ({BY}) ({either('requests_waiting', SEL)})"),),
          "queued for a slot in the batch: above 0 for long, the server is saturated"),
    Panel("KV cache use", "percentunit", ((LEGEND, f"max by ({BY}) ({either('kv_cache_usage', SEL)})"),),
          "near 100% requests get preempted and recomputed"),
    Panel("Prefix cache hit rate", "percentunit", ((LEGEND,
          f"sum by ({BY}) ({either('prefix_cache_hits', SEL, '_total', WINDOW)}) / "
          f"sum by ({BY}) ({either('prefix_cache_queries', SEL, '_total', WINDOW)})"),),
          "share of prompt tokens found in the cache"),
    Panel("Prompt tokens/s", "short", ((LEGEND, f"sum by ({BY}) ({either('prompt_tokens', SEL, '_total', WINDOW)})"),)),
    Panel("Generation tokens/s", "short",
          ((LEGEND, f"sum by ({BY}) ({either('generation_tokens', SEL, '_total', WINDOW)})"),)),
    Panel("Time to first token", "s", _quantiles("ttft")),
    Panel("Inter-token latency", "s", _quantiles("itl")),
    Panel("End-to-end request latency", "s", _quantiles("e2e_latency")),
)


def _variable(name: str, query: str) -> dict[str, Any]:
    return {"name": name, "label": name, "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "query": {"query": query, "refId": f"var-{name}"}, "definition": query, "refresh": 2,
            "includeAll": True, "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"},
            "sort": 1}


def _panel(number: int, panel: Panel) -> dict[str, Any]:
    return {
        "id": number + 1, "type": "timeseries", "title": panel.title, "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": 12 * (number % 2), "y": 8 * (number // 2)},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
                     "datasource": {"type": "prometheus", "uid": "${datasource}"}}
                    for i, (legend, expr) in enumerate(panel.targets)],
    }


def dashboard(title: str = "vLLM servers (vllm-orch)") -> dict[str, Any]:
    """The dashboard's JSON model (Grafana 9 and later: timeseries panels, a data source variable)."""
    base = f'{{job="{JOB_VLLM}"}}'
    return {
        "uid": UID, "title": title, "tags": ["vllm", "vllm-orch"], "timezone": "browser",
        "schemaVersion": 39, "version": 1, "editable": True, "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0},
            _variable("project", f"label_values(up{base}, project)"),
            _variable("model", f'label_values(up{{job="{JOB_VLLM}", project=~"$project"}}, model)'),
            _variable("instance", f'label_values(up{{job="{JOB_VLLM}", project=~"$project", model=~"$model"}}, instance)'),
        ]},
        "panels": [_panel(n, p) for n, p in enumerate(PANELS)],
    }


def text() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def expressions(window: str = "1m") -> dict[str, str]:
    """Every panel's PromQL with the variables set to everything (`window` for $__rate_interval),
    as a live Prometheus runs them (tests/e2e/test_monitoring_real_vllm.py)."""
    found: dict[str, str] = {}
    for panel in PANELS:
        for legend, expr in panel.targets:
            name = panel.title + ("" if legend == LEGEND else " " + legend.split(" ")[0])
            found[name] = (expr.replace("$__rate_interval", window).replace('=~"$project"', '=~".*"')
                           .replace('=~"$model"', '=~".*"').replace('=~"$instance"', '=~".*"'))
    return found
