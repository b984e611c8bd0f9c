"""The recording rules and alerts that matter for a vLLM server, as Prometheus' rules file.

Recording rules give every panel and alert one series per (project, model, instance) whatever
vLLM calls the metric this release (queries.either). Each alert is its condition's data
expression plus a threshold, kept apart so a test can require data of the expression itself
(tests/e2e/test_monitoring_real_vllm.py) and `promtool test rules` can fire each one
(tests/integration/test_monitoring.py).
"""

from __future__ import annotations

from typing import Any

import yaml

from orchestrator.monitoring.queries import BY, JOB_GATEWAY, JOB_VLLM, PROCESS_START, either
from orchestrator.value import Value

SEL = f'{{job="{JOB_VLLM}"}}'
# An on-demand instance is down whenever it is stopped on demand and its starts are restarts: its
# target carries on_demand="true" (prometheus.py) and these two alerts leave it out.
ALWAYS_ON = f'{{job="{JOB_VLLM}",on_demand!="true"}}'
RECORDING_GROUP = "vllm-orch.recording"
ALERT_GROUP = "vllm-orch.alerts"
KV_CACHE_FULL = 0.9  # above this a server soon preempts requests (recomputes them): latency jumps
RESTARTS_IN_WINDOW = 3


class Recording(Value):
    record: str
    expr: str


class Alert(Value):
    name: str
    data: str  # the expression whose series the threshold is applied to
    condition: str  # appended to `data` ("== 0", "> 0.9")
    for_: str
    severity: str
    summary: str

    @property
    def expr(self) -> str:
        return f"{self.data} {self.condition}"


RECORDINGS: tuple[Recording, ...] = (
    Recording("vllm_orch:requests_running:sum", f"sum by ({BY}) ({either('requests_running', SEL)})"),
    Recording("vllm_orch:requests_waiting:sum", f"sum by ({BY}) ({either('requests_waiting', SEL)})"),
    Recording("vllm_orch:kv_cache_usage:max", f"max by ({BY}) ({either('kv_cache_usage', SEL)})"),
    Recording("vllm_orch:prompt_tokens:rate1m",
              f"sum by ({BY}) ({either('prompt_tokens', SEL, '_total', '1m')})"),
    Recording("vllm_orch:generation_tokens:rate1m",
              f"sum by ({BY}) ({either('generation_tokens', SEL, '_total', '1m')})"),
)

ALERTS: tuple[Alert, ...] = (
    Alert("VllmInstanceDown", f'up{ALWAYS_ON}', "== 0", "1m", "critical",
          "{{ $labels.instance }} ({{ $labels.model }}) has not answered /metrics for a minute"),
    Alert("VllmKvCacheNearlyFull", "vllm_orch:kv_cache_usage:max", f"> {KV_CACHE_FULL:g}", "5m", "warning",
          "{{ $labels.instance }}: KV cache {{ $value | humanizePercentage }} full for 5 minutes "
          "(requests get preempted; add a replica or lower max_num_seqs)"),
    Alert("VllmRequestsQueueing", "vllm_orch:requests_waiting:sum", "> 0", "5m", "warning",
          "{{ $labels.instance }}: {{ $value }} requests waiting for 5 minutes (the server is saturated)"),
    Alert("VllmRestartLoop", f"changes({PROCESS_START}{ALWAYS_ON}[30m])", f">= {RESTARTS_IN_WINDOW}", "0m", "critical",
          "{{ $labels.instance }} restarted {{ $value }} times in 30 minutes"),
    Alert("VllmGatewayDown", f'up{{job="{JOB_GATEWAY}"}}', "== 0", "1m", "critical",
          "the gateway of {{ $labels.project }} has not answered /metrics for a minute"),
)


def document() -> dict[str, Any]:
    return {"groups": [
        {"name": RECORDING_GROUP, "rules": [{"record": r.record, "expr": r.expr} for r in RECORDINGS]},
        {"name": ALERT_GROUP, "rules": [
            {"alert": a.name, "expr": a.expr, "for": a.for_, "labels": {"severity": a.severity},
             "annotations": {"summary": a.summary}} for a in ALERTS]},
    ]}


def text() -> str:
    """The rules file Prometheus loads (`promtool check rules` accepts it)."""
    return ("# Written by vllm-orch at every `up` (orchestrator/monitoring/rules.py); edits are overwritten.\n"
            + yaml.safe_dump(document(), sort_keys=False, width=1 << 20))


def expressions() -> dict[str, str]:
    """name -> PromQL whose result must have data on a live project (recordings and alerts' data)."""
    found = {r.record: r.expr for r in RECORDINGS}
    found.update({a.name: a.data for a in ALERTS})
    return found
