"""The collection's secret finder and masked config diff (plugins/module_utils/vllm_orch_secrets.py),
on their own: what the `project` module's `--diff` shows of a config. The same code runs against
real hosts in tests/fleet/test_fleet.py (test_diff_masks_every_secret_value)."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "ansible/plugins/module_utils/vllm_orch_secrets.py"
_spec = importlib.util.spec_from_file_location("vllm_orch_secrets", PATH)
secrets_util = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(secrets_util)

BEFORE = textwrap.dedent("""\
    [docker]
    image = "img:1"
    secret_env = ["WANDB_API_KEY"]

    [instance.server]
    api_key = "sk-old-default"

    [instance.a.server]
    model = "/models/a"
    max_model_len = 1024
    hf_token = "hf_oldtoken"

    [instance.a.docker.env]
    WANDB_API_KEY = "wandb-old"
    LOG_LEVEL = "info"
    """)
AFTER = (BEFORE.replace("sk-old-default", "sk-new-default").replace("1024", "2048")
         .replace("hf_oldtoken", "hf_newtoken").replace("wandb-old", "wandb-new").replace('"info"', '"debug"'))
ALL_SECRETS = ("sk-old-default", "sk-new-default", "hf_oldtoken", "hf_newtoken", "wandb-old", "wandb-new")


def found(*texts: str, overrides: dict | None = None) -> set[str]:
    docs = [secrets_util.parse_toml(t) for t in texts] + [overrides]
    names = secrets_util.secret_env_names(*docs)
    return set().union(*(secrets_util.secret_values(d, names) for d in docs))


def test_secrets_are_api_keys_hf_tokens_and_the_env_values_secret_env_names():
    assert found(BEFORE, AFTER) == set(ALL_SECRETS)
    # secret_env in one document names a secret in another (tables merge); hf_token = true is no value.
    assert found('[instance.a.server]\nhf_token = true\n[instance.a.docker.env]\nTOKEN = "t-1"\nPLAIN = "p"\n',
                 overrides={"docker": {"secret_env": ["TOKEN"]}}) == {"t-1"}
    assert found(overrides={"instance": {"a": {"server": {"api_key": "sk-over", "max_model_len": 2048}}}}) == {"sk-over"}


def test_the_diff_shows_every_other_change_and_no_secret_value():
    diff = secrets_util.config_diff("/etc/vllm-orch/fleet.toml", BEFORE, AFTER, found(BEFORE, AFTER))
    assert diff is not None
    for secret in ALL_SECRETS:
        assert secret not in diff
    assert "\n-max_model_len = 1024\n" in diff and "\n+max_model_len = 2048\n" in diff
    assert '\n-LOG_LEVEL = "info"\n' in diff and '\n+LOG_LEVEL = "debug"\n' in diff
    # A changed secret shows as changed, not by its value.
    assert '\n-api_key = "********"\n+api_key = "******** (new value)"\n' in diff
    assert '\n-WANDB_API_KEY = "********"\n' in diff and '\n+WANDB_API_KEY = "******** (new value)"\n' in diff
    unchanged = secrets_util.config_diff("f", BEFORE, AFTER.replace("sk-new-default", "sk-old-default"),
                                         found(BEFORE, AFTER))
    assert "\n-api_key" not in unchanged and "\n+api_key" not in unchanged and "sk-old-default" not in unchanged
    assert diff.startswith("--- /etc/vllm-orch/fleet.toml (before)\n+++ /etc/vllm-orch/fleet.toml (after)\n")


@pytest.mark.parametrize("written, value", [
    (r'"sk-\"quoted\"-key"', 'sk-"quoted"-key'),  # the escaped spelling is masked
    ("'sk-literal\\n'", "sk-literal\\n"),  # a literal string holds the value as it is
])
def test_a_secret_spelt_with_escapes_is_masked(written, value):
    after = f'[instance.a.server]\nmodel = "/m"\napi_key = {written}\n'
    secrets = found(after)
    assert secrets == {value}
    diff = secrets_util.config_diff("f.toml", "", after, secrets)
    assert diff is not None and value not in diff and "sk-" not in diff


@pytest.mark.parametrize("after", [
    '[instance.a.server]\napi_key = "sk-\\u0041bc"\n',  # masking the text cannot find "sk-Abc"
    '[instance.a.server]\napi_key = "sk-Abc"\nmodel = = 1\n',  # does not parse: its secrets are unknown
])
def test_no_diff_text_when_a_secret_could_still_show(after):
    assert secrets_util.config_diff("f.toml", "", after, found(after) | {"sk-Abc"}) is None
