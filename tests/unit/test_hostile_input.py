"""Bad input, however pathological, ends in one clear line and a non-zero exit, never a
traceback, and never with anything changed. Each case is something a careless or hostile user
can type; `validate` must refuse what the engine would only refuse later (at create, start or
stop, when other instances have already changed). The README's Security section counts them."""

from __future__ import annotations

import json

import pytest

from orchestrator.cli import main

BASE = """
[docker]
image = "img:1"
[instance.control]
gpu_ids = "none"
[instance.a.server]
model = "/m"
port = 8001
"""

deep_json = '{"a":' * 3000 + "1" + "}" * 3000
deep_key = ".".join(["k"] * 3000)

# (name, extra TOML appended to BASE or None, CLI arguments, expected exit code, text the one line must hold)
CASES = [
    ("deeply nested TOML", "x = " + "[" * 5000 + "]" * 5000 + "\n", ["validate"], 2, "nested too deeply"),
    ("deeply nested inline tables", "y = " + "{a = " * 2000 + "1" + "}" * 2000 + "\n", ["validate"], 2, "nested"),
    ("deeply nested JSON override", None, ["--override", deep_json, "validate"], 2, "nested too deeply"),
    ("--set key thousands of levels deep", None, ["--set", f"{deep_key}=1", "validate"], 2, "levels deep"),
    ("JSON integer of 5000 digits", None, ["--override", '{"x": ' + "9" * 5000 + "}", "validate"], 2, "digits"),
    ("TOML integer of 5000 digits", "z = " + "9" * 5000 + "\n", ["validate"], 2, "digits"),
    ("a 260-character instance name", f"[instance.{'x' * 260}.server]\nmodel = \"/m\"\n", ["validate"], 2, "at most 63"),
    ("a 260-character instance name under launch", f"[instance.{'x' * 260}.server]\nmodel = \"/m\"\n",
     ["launch"], 2, "at most 63"),
    ("relative log_dir", '[instance.a.control]\nlog_dir = "logs"\n', ["validate", "--offline"], 2, "relative"),
    ("relative log_file", '[instance.a.control]\nlog_file = "a.log"\n', ["validate", "--offline"], 2, "relative"),
    ("log_file ending in ..", '[instance.a.control]\nlog_file = "/var/log/.."\n', ["validate", "--offline"], 2,
     "does not name a file"),
    ("log_file ending in /", '[instance.a.control]\nlog_file = "/var/log/"\n', ["validate", "--offline"], 2,
     "does not name a file"),
    ("publish_address that is not an IP", '[instance.a.docker]\npublish_address = "example.com"\n',
     ["validate", "--offline"], 2, "not an IP address"),
    ("empty env name", '[instance.a.docker]\nenv = { "" = "x" }\n', ["validate", "--offline"], 2, "must match"),
    ("env name holding =", '[instance.a.docker]\nenv = { "A=B" = "x" }\n', ["validate", "--offline"], 2, "must match"),
    ("secret_env name holding =", '[instance.a.docker]\nsecret_env = ["A=B"]\n', ["validate", "--offline"], 2,
     "does not match"),
    ("stop_timeout = 10**15", "[instance.a.docker]\nstop_timeout = 1000000000000000\n", ["validate", "--offline"], 2,
     "<= 86400"),
    ("health_start_period beyond the engine", "[instance.a.docker]\nhealth_start_period = 100000000000\n",
     ["validate", "--offline"], 2, "<= 604800"),
    ("shm_size beyond the engine", '[instance.a.docker]\nshm_size = "99999999999999999999g"\n',
     ["validate", "--offline"], 2, "larger than"),
    ("shm_size that is not a size", '[instance.a.docker]\nshm_size = "lots"\n', ["validate", "--offline"], 2,
     "not a size"),
    ("GPU id beyond any host", "[instance.a.control]\ngpu_ids = [100000]\n", ["validate", "--offline"], 2, "gpu_ids"),
    ("GPU id string beyond any host", '[instance.a.control]\ngpu_ids = "0,100000"\n', ["validate", "--offline"], 2,
     "between 0 and"),
    ("non-string hf_token", "hf_token = 12345\n", ["validate", "--offline"], 2, "not shown"),
    ("non-string api_key", "api_key = 99\n", ["validate", "--offline"], 2, "not shown"),
    ("NaN gpu_memory_utilization", "gpu_memory_utilization = nan\n", ["validate", "--offline"], 2,
     "finite"),
    ("infinite stop_timeout", "[instance.a.docker]\nstop_timeout = inf\n", ["validate", "--offline"], 2, "expected integer"),
    ("unknown instance on the command line", None, ["up", "nope"], 2, "no such instance"),
    ("TOML syntax error", "[instance.a.server\n", ["validate"], 2, "TOML syntax"),
    ("override that is not an object", None, ["--override", "[1]", "validate"], 2, "must be a JSON object"),
    ("unknown [docker] key", '[instance.a.docker]\nshm_sise = "1g"\n', ["validate", "--offline"], 2,
     "did you mean shm_size"),
    ("project name too long", None, ["-p", "p" * 70, "validate", "--offline"], 2, "at most 63"),
]


@pytest.mark.parametrize("name,extra,argv,code,text", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_a_non_zero_exit(tmp_path, capsys, monkeypatch, name, extra, argv, code, text):
    monkeypatch.delenv("AUTO_INFER_VLLM_OVERRIDES", raising=False)
    config = tmp_path / "fleet.toml"
    config.write_text(BASE + (extra or ""))
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(["-c", str(config), *argv]) == code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    summaries = ("vllm-orch: 1 config error", "vLLM options", "1 error(s)", "GPUs:")
    lines = [line for line in (out + err).splitlines() if not line.startswith(summaries)]
    assert len(lines) == 1, out + err
    assert text in lines[0]
    assert len(lines[0]) < 600
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written: no log dir, no state


def test_null_in_an_override_removes_an_inherited_server_key(tmp_path, capsys):
    """The README's promise: `null` in a JSON override removes a key [instance.server] gives."""
    config = tmp_path / "fleet.toml"
    config.write_text(BASE + "[instance.server]\nmax_model_len = 4096\n")
    assert main(["-c", str(config), "--override", json.dumps({"instance": {"a": {"server": {"max_model_len": None}}}}),
                 "plan", "--json", "--offline"]) == 0
    [instance] = json.loads(capsys.readouterr().out)["instances"]
    assert "--max-model-len" not in instance["command"]


def test_a_wrongly_typed_secret_is_never_echoed(tmp_path, capsys):
    config = tmp_path / "fleet.toml"
    config.write_text(BASE + 'api_key = ["sk-live-123456"]\nhf_token = 424242\n'
                      '[instance.a.docker]\nsecret_env = ["TOKEN"]\nenv = { TOKEN = 777777 }\n')
    assert main(["-c", str(config), "validate", "--offline"]) == 2
    out, err = capsys.readouterr()
    for secret in ("sk-live-123456", "424242", "777777"):
        assert secret not in out + err


def test_extra_args_flags_are_checked_like_server_keys(tmp_path, capsys):
    config = tmp_path / "fleet.toml"
    config.write_text(BASE + 'extra_args = ["--disable-log-requests", "--seed", "1", "--max-model-len=512"]\n')
    main(["-c", str(config), "validate", "--offline"])
    out = capsys.readouterr().out
    assert "extra_args[0]: warning: --disable-log-requests is not an option of vLLM 0.32.0" in out
    assert "did you mean --enable-log-requests?" in out
    assert "extra_args[1]" not in out and "extra_args[2]" not in out


def test_master_disabled_shows_as_disabled_in_the_plan(tmp_path, capsys):
    config = tmp_path / "fleet.toml"
    config.write_text("[master]\nenable = false\n" + BASE)
    assert main(["-c", str(config), "plan", "--json", "--offline"]) == 0
    [instance] = json.loads(capsys.readouterr().out)["instances"]
    assert (instance["enabled"], instance["disabled_by"]) == (False, "master.enable = false")
