"""Every vLLM metric the rules and the dashboard read, and the PromQL they are read with.

vLLM renames metrics between releases (`vllm:gpu_cache_usage_perc` became
`vllm:kv_cache_usage_perc`, vllm PR #27133; production-stack PR #989): a dashboard written for one
name goes blank on a server that exports the other. Each quantity here names every spelling it has
had, newest first (vllm_metrics.py holds `top`'s), and every expression reads them as
`new or old`, so it has data on either. `used_families` lists them all for the check against what an
image really exports (checks.py, tests/unit/test_monitoring.py).
"""

from __future__ import annotations

import re

from orchestrator.vllm_metrics import COUNTERS, GAUGES, HISTOGRAMS

JOB_VLLM = "vllm"  # the scrape job of the instances (prometheus.py); the gateway's is "gateway"
JOB_GATEWAY = "gateway"
JOB_ACTIVATOR = "activator"  # on-demand starts: vllm_orch_activator_* (cold-start and wake seconds per model)
BY = "project, model, instance"  # the target labels every target carries (targets.py)

# quantity -> every family name vLLM has exported it under, newest first.
FAMILIES: dict[str, tuple[str, ...]] = {
    "requests_running": GAUGES["requests_running"],
    "requests_waiting": GAUGES["requests_waiting"],
    "kv_cache_usage": GAUGES["kv_cache_usage"],  # a fraction 0..1
    "prompt_tokens": COUNTERS["prompt_tokens"],
    "generation_tokens": COUNTERS["generation_tokens"],
    "prefix_cache_hits": ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits"),
    "prefix_cache_queries": ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries"),
    "ttft": HISTOGRAMS["ttft"],
    "itl": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    "e2e_latency": ("vllm:e2e_request_latency_seconds",),
}
# Not vLLM's own: prometheus_client's process collector (restart loops) and Prometheus' `up`.
PROCESS_START = "process_start_time_seconds"


def either(quantity: str, selector: str, suffix: str = "", window: str = "") -> str:
    """`a{sel} or b{sel}` over every spelling (`suffix`: `_total`, `_bucket`; `window`: a range
    wrapped in rate())."""
    parts = []
    for name in FAMILIES[quantity]:
        series = f"{name}{suffix}{selector}"
        parts.append(f"rate({series}[{window}])" if window else series)
    return parts[0] if len(parts) == 1 else "(" + " or ".join(parts) + ")"


def quantile(q: float, quantity: str, selector: str, window: str, by: str = BY) -> str:
    return f"histogram_quantile({q:g}, sum by (le, {by}) ({either(quantity, selector, '_bucket', window)}))"


def used_families(*texts: str) -> set[str]:
    """The vLLM family names (`vllm:...`, suffixes dropped) written in PromQL texts."""
    found = set()
    for name in re.findall(r"vllm:[A-Za-z0-9_:]+", "\n".join(texts)):
        for suffix in ("_bucket", "_total", "_sum", "_count"):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        found.add(name)
    return found


def alternatives() -> list[tuple[str, ...]]:
    """Every quantity's spellings: one of each must be exported for its panels to have data."""
    return list(FAMILIES.values())
