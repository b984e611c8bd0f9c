"""`vllm-orch top`: one row per instance, read straight from each server's `/metrics`.

The instances and their state come from `ps`'s rows (one engine list call); every published
server is then asked for `/metrics` at once (one thread each, so 64 servers cost about what the
slowest answer takes), and the answers are reduced by vllm_metrics.py. Nothing here draws: `cli.py`
prints the rows (`--once`, `--json`) or hands them to top_screen.py.

How the two derived columns are computed, and why:
- tokens/s: the increase of `vllm:generation_tokens_total` between two samples divided by the time
  between them (a counter has no rate of its own). One sample (`--once` without `--window`) has
  none: null.
- TTFT p50: Prometheus' histogram_quantile over `vllm:time_to_first_token_seconds`'s buckets. With
  two samples, over the bucket *deltas* (the requests of that interval; null when none arrived);
  with one, over the cumulative buckets (every request since the server started).
"""

from __future__ import annotations

import http.client
import time
from typing import Any, Callable
from urllib.parse import urlsplit

from orchestrator import vllm_metrics
from orchestrator.status import connect_url
from orchestrator.vllm_metrics import Sample

SCRAPE_TIMEOUT_S = 2.0
MAX_ANSWER_BYTES = 16 * 1024 * 1024  # a /metrics answer larger than this is not a vLLM server's
COLUMNS = ("name", "state", "health", "model", "requests_running", "requests_waiting", "kv_cache_usage",
           "tokens_per_s", "ttft_p50_s", "last_start_s")


class Scrape:
    """One server's answer: its Sample, or why there is none."""

    __slots__ = ("sample", "error", "at")

    def __init__(self, sample: Sample | None, error: str | None, at: float):
        self.sample = sample
        self.error = error
        self.at = at


def fetch_metrics(url: str, timeout: float = SCRAPE_TIMEOUT_S) -> str:
    """GET <url>/metrics; OSError or ValueError saying why not."""
    parts = urlsplit(connect_url(url))
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"not an http URL: {url}")
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        connection.request("GET", "/metrics", headers={"Accept": "text/plain"})
        response = connection.getresponse()
        body = response.read(MAX_ANSWER_BYTES + 1)
        if response.status != 200:
            raise ValueError(f"/metrics answered {response.status}")
        if len(body) > MAX_ANSWER_BYTES:
            raise ValueError("/metrics answer too large")
        return body.decode("utf-8", errors="replace")
    finally:
        connection.close()


def scrape(url: str, timeout: float = SCRAPE_TIMEOUT_S,
           fetch: Callable[[str, float], str] = fetch_metrics) -> Scrape:
    """One server's Scrape; never raises (the row shows the error instead)."""
    if not url:
        return Scrape(None, "port not published on this host", time.monotonic())
    try:
        text = fetch(url, timeout)
        at = time.monotonic()
        sample = vllm_metrics.parse(text)
        if not (sample.gauges or sample.counters or sample.buckets):
            return Scrape(None, "/metrics holds none of the vLLM metrics top reads (vllm_metrics.py)", at)
        return Scrape(sample, None, at)
    except (OSError, http.client.HTTPException) as exc:
        return Scrape(None, f"no answer: {getattr(exc, 'strerror', None) or exc or type(exc).__name__}",
                      time.monotonic())
    except ValueError as exc:
        return Scrape(None, str(exc), time.monotonic())


def scrape_all(urls: list[str], timeout: float = SCRAPE_TIMEOUT_S,
               fetch: Callable[[str, float], str] = fetch_metrics) -> list[Scrape]:
    """Every URL at once (one thread per server, at most 64 at a time)."""
    if len(urls) <= 1:
        return [scrape(url, timeout, fetch) for url in urls]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(64, len(urls))) as pool:
        return list(pool.map(lambda url: scrape(url, timeout, fetch), urls))


def top_row(status: dict[str, Any], now: Scrape, before: Scrape | None) -> dict[str, Any]:
    """One instance's row: `ps`'s identity columns, then the numbers (None where the server did
    not answer, or a number needs two samples)."""
    sample = now.sample
    previous = before.sample if before is not None else None
    row: dict[str, Any] = {
        "name": status["name"],
        "state": status["state"],
        "health": status["health"],
        "model": status["model"],
        "url": status["url"],
        "requests_running": None,
        "requests_waiting": None,
        "kv_cache_usage": None,
        "tokens_per_s": None,
        "prompt_tokens_per_s": None,
        "ttft_p50_s": None,
        "ttft_window": None,
        "error": now.error if status["state"] == "running" else None,
        # On-demand instances: seconds from the activator's start (or wake) to /health, the last time.
        "last_start_s": status.get("last_start_s"),
    }
    if sample is None:
        return row
    for key in ("requests_running", "requests_waiting"):
        value = sample.gauges.get(key)
        row[key] = int(value) if value is not None else None
    row["kv_cache_usage"] = sample.gauges.get("kv_cache_usage")
    seconds = now.at - before.at if before is not None else 0.0
    row["tokens_per_s"] = vllm_metrics.rate("generation_tokens", previous, sample, seconds)
    row["prompt_tokens_per_s"] = vllm_metrics.rate("prompt_tokens", previous, sample, seconds)
    delta = vllm_metrics.bucket_delta(previous, sample, "ttft")
    if delta is not None:
        row["ttft_p50_s"], row["ttft_window"] = vllm_metrics.quantile(0.5, delta), "interval"
    elif "ttft" in sample.buckets:
        row["ttft_p50_s"], row["ttft_window"] = vllm_metrics.quantile(0.5, sample.buckets["ttft"]), "since start"
    return row


class Top:
    """Successive snapshots of a project: each `snapshot()` scrapes every running instance and
    derives its rates from the previous snapshot of the same container."""

    def __init__(self, status: Callable[[], list[dict[str, Any]]], timeout: float = SCRAPE_TIMEOUT_S,
                 fetch: Callable[[str, float], str] = fetch_metrics):
        self._status = status
        self._timeout = timeout
        self._fetch = fetch
        self._last: dict[tuple[str, str], Scrape] = {}  # (instance, container) -> its previous scrape

    def snapshot(self) -> list[dict[str, Any]]:
        rows = self._status()
        asked = [r for r in rows if r["state"] == "running"]
        scrapes = dict(zip((id(r) for r in asked),
                           scrape_all([r.get("metrics_url") or r["url"] for r in asked], self._timeout,
                                      self._fetch)))
        out, last = [], {}
        for row in rows:
            key = (row["name"], row.get("container", ""))
            now = scrapes.get(id(row)) or Scrape(None, None, time.monotonic())
            out.append(top_row(row, now, self._last.get(key)))
            if now.sample is not None:
                last[key] = now
        self._last = last
        return out


def format_cell(key: str, value: Any) -> str:
    """The text table's cell: KV cache in percent, rates and seconds rounded, '-' for null."""
    if value is None or value == "":
        return "-"
    if key == "kv_cache_usage":
        return f"{100 * value:.1f}%"
    if key == "tokens_per_s":
        return f"{value:.1f}"
    if key == "last_start_s":
        return f"{value:.1f}s"
    if key == "ttft_p50_s":
        return f"{value * 1000:.0f}ms" if value < 10 else f"{value:.1f}s"
    return str(value)


HEADERS = {"name": "NAME", "state": "STATE", "health": "HEALTH", "model": "MODEL", "requests_running": "RUN",
           "requests_waiting": "WAIT", "kv_cache_usage": "KV", "tokens_per_s": "TOK/S", "ttft_p50_s": "TTFT P50",
           "last_start_s": "LAST START"}


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The rows as an aligned text table (no tabulate: the live view redraws it every second)."""
    cells = [[HEADERS[c] for c in COLUMNS]] + [[format_cell(c, r.get(c)) for c in COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells]
