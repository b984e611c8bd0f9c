"""Server table -> argv: the contract's literal rules, and where vLLM's own parser wins."""

from __future__ import annotations

import pytest

from orchestrator.argv import render_server_args, split_secrets
from orchestrator.vllm_options import OptionTable

# A hand-made table with one option of each kind vLLM has (the recorded real one is tested
# in test_bundled_table.py).
TABLE = OptionTable(
    {
        "vllm_version": "test",
        "options": [
            {"dest": "model", "flags": ["--model"], "takes_value": True, "value_type": "str"},
            {"dest": "trust_remote_code", "flags": ["--trust-remote-code"], "takes_value": False, "value_type": "bool"},
            {"dest": "enable_prefix_caching", "flags": ["--enable-prefix-caching"], "takes_value": False,
             "negative_flag": "--no-enable-prefix-caching", "value_type": "bool"},
            {"dest": "served_model_name", "flags": ["--served-model-name"], "takes_value": True, "nargs": "+",
             "value_type": "str"},
            {"dest": "limit_mm_per_prompt", "flags": ["--limit-mm-per-prompt"], "takes_value": True,
             "value_type": "json"},
            {"dest": "allowed_origins", "flags": ["--allowed-origins"], "takes_value": True, "value_type": "json"},
            {"dest": "middleware", "flags": ["--middleware"], "takes_value": True, "value_type": "str"},
        ],
    },
    "test table",
)


@pytest.mark.parametrize(
    "server, expected",
    [
        ({"served_model_name": "x"}, ["--served-model-name", "x"]),
        ({"max_model_len": 8192}, ["--max-model-len", "8192"]),
        ({"gpu_memory_utilization": 0.9}, ["--gpu-memory-utilization", "0.9"]),
        ({"trust_remote_code": True}, ["--trust-remote-code"]),
        ({"enforce_eager": False}, []),
        ({"middleware": ["a", "b"]}, ["--middleware", "a", "--middleware", "b"]),
        ({"limit_mm_per_prompt": {"image": 2}}, ["--limit-mm-per-prompt", '{"image":2}']),
        ({"model": None}, []),
        ({"watermark": -0.5}, ["--watermark=-0.5"]),
        ({"seed": 7}, ["--seed", "7"]),
    ],
)
def test_contract_rules_without_a_table(server, expected):
    assert render_server_args(server) == expected


def test_keys_keep_order_and_extra_args_come_last():
    argv = render_server_args({"port": 1, "model": "m"}, ["--x", "y"])
    assert argv == ["--port", "1", "--model", "m", "--x", "y"]


def test_false_on_a_negatable_option_renders_the_no_form():
    # Omitting it would leave vLLM's default (on) in force: the TOML said off.
    assert render_server_args({"enable_prefix_caching": False}, table=TABLE) == ["--no-enable-prefix-caching"]
    assert render_server_args({"enable_prefix_caching": True}, table=TABLE) == ["--enable-prefix-caching"]
    assert render_server_args({"trust_remote_code": False}, table=TABLE) == []


def test_list_on_a_several_values_option_is_one_flag():
    # Repeating an nargs='+' flag keeps only the last list in argparse.
    assert render_server_args({"served_model_name": ["a", "b"]}, table=TABLE) == ["--served-model-name", "a", "b"]


def test_list_on_a_json_option_is_one_json_string():
    assert render_server_args({"allowed_origins": ["http://a", "http://b"]}, table=TABLE) == [
        "--allowed-origins", '["http://a","http://b"]',
    ]


def test_underscore_spelling_finds_the_option():
    assert TABLE.lookup("served_model_name").flag == "--served-model-name"
    assert TABLE.suggest("served_modle_name") == "served_model_name"


def test_secrets_are_split_out_of_the_server_table():
    server, secrets = split_secrets({"model": "m", "api_key": "k", "hf_token": "t"})
    assert server == {"model": "m"}
    assert secrets == {"VLLM_API_KEY": "k", "HF_TOKEN": "t"}
    # `hf_token = true` (use the stored token) is a plain flag, not a secret.
    assert split_secrets({"hf_token": True}) == ({"hf_token": True}, {})
