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


# ----------------------------------------------------------------------------- third audit (issue 20, part 8)
# Every case runs through the four commands that read a config without an engine. `fails`: the
# commands that must refuse it (exit 2); the others must accept it (exit 0), e.g. a Docker-only
# setting that the Kubernetes export only warns about.
ALL = ("validate", "plan", "compose", "k8s")
DOCKER = ("validate", "plan", "compose")
COMMANDS = {
    "validate": ["validate", "--offline"],
    "plan": ["plan", "--offline"],
    "compose": ["compose", "--offline", "-o", "OUT"],
    "k8s": ["k8s", "--offline", "-o", "OUT"],
}
# (name, TOML appended to BASE (under [instance.a.server] unless it opens a table), extra global
# arguments, text the one line must hold, commands that refuse it)
THIRD = [
    ("TOML date inside a table-valued option", "hf_overrides = { release = 1979-05-27 }\n", [],
     "hf_overrides.release: error: 1979-05-27 is a TOML date", ALL),
    ("TOML datetime as an option", "seed = 1979-05-27T07:32:00Z\n", [], "TOML date or time", ALL),
    ("--port in extra_args", 'extra_args = ["--port", "9000"]\n', [], "set instance.a.server.port instead", ALL),
    ("--port=N in extra_args", 'extra_args = ["--port=9000"]\n', [], "instance.a.server.port", ALL),
    ("--api-key in extra_args", 'extra_args = ["--api-key", "sk-123"]\n', [], "instance.a.server.api_key", ALL),
    ("--tensor-parallel-size in extra_args", 'extra_args = ["--tensor-parallel-size", "8"]\n', [],
     "instance.a.server.tensor_parallel_size", ALL),
    ("-tp in extra_args", 'extra_args = ["-tp", "8"]\n', [], "instance.a.server.tensor_parallel_size", ALL),
    ("--tensor_parallel_size= in extra_args", 'extra_args = ["--tensor_parallel_size=2"]\n', [],
     "tensor_parallel_size", ALL),
    ("--host in extra_args", 'extra_args = ["--host", "0.0.0.0"]\n', [], "instance.a.server.host", ALL),
    ("--served-model-name in extra_args", 'extra_args = ["--served-model-name", "x"]\n', [],
     "instance.a.server.served_model_name", ALL),
    ("--model in extra_args", 'extra_args = ["--model", "/x"]\n', [], "instance.a.server.model", ALL),
    ("--hf-token in extra_args", 'extra_args = ["--hf-token", "hf_x"]\n', [], "instance.a.server.hf_token", ALL),
    ("--gpu-memory-utilization in extra_args", 'extra_args = ["--gpu-memory-utilization", "0.5"]\n', [],
     "instance.a.server.gpu_memory_utilization", ALL),
    ("NUL in served_model_name", 'served_model_name = "a\\u0000b"\n', [], "NUL character", ALL),
    ("NUL in extra_args", 'extra_args = ["--seed", "1\\u0000"]\n', [], "NUL character", ALL),
    ("NUL in an env value", '[instance.a.docker]\nenv = { A = "x\\u0000y" }\n', [], "NUL character", ALL),
    ("NUL in model (an override)", None, ["--set", 'instance.a.server.model="/m\\u0000"'], "NUL character", ALL),
    ("empty model", '[instance.b.server]\nmodel = ""\nport = 8002\n', [], "instance.b.server.model: error: is empty",
     ALL),
    ("empty extra_args token", 'extra_args = [""]\n', [], "extra_args[0]: error: is an empty argument", ALL),
    ("empty server key", '"" = 1\n', [], "must match", ALL),
    ("server key -", '"-" = 1\n', [], "name '-' must match", ALL),
    ("server key model=/x", '"model=/x" = 1\n', [], "name 'model=/x' must match", ALL),
    ("volume target /", '[instance.a.docker]\nvolumes = ["/tmp:/"]\n', [], "mounts over the container's root", ALL),
    ("volume target with ..", '[instance.a.docker]\nvolumes = ["/tmp:/models/../etc"]\n', [], "holds '..'", ALL),
    ("network_mode container: with a published port", '[instance.a.docker]\nnetwork_mode = "container:x"\n', [],
     "cannot publish a port", DOCKER),
    ("cpuset range backwards", '[instance.a.docker]\ncpuset = "7-0"\n', [], "range 7-0 runs backwards", DOCKER),
    ("cpus that rounds to no limit", "[instance.a.docker]\ncpus = 1e-10\n", [], "minimum of 0.01", DOCKER),
    ("image that is an option", '[instance.a.docker]\nimage = "--privileged"\n', [], "not an image reference", ALL),
    ("image in capitals", '[instance.a.docker]\nimage = "IMG:Latest"\n', [], "not an image reference", ALL),
    ("user holding a newline", '[instance.a.docker]\nuser = "a\\nb"\n', [], "is not a user", ALL),
    ("host = LOCALHOST", 'host = "LOCALHOST"\n', [], "instance.a.server.host: error:", ALL),
    ("two volumes at one path", '[instance.a.docker]\nvolumes = ["/tmp:/x", "/var:/x"]\n', [], "two mounts at /x", ALL),
    ("env name with a space (Kubernetes)", '[instance.a.docker]\nenv = { "A B" = "x" }\n', [],
     "not a Kubernetes environment variable name", ("k8s",)),
    ("a volume at /dev/shm (Kubernetes)", '[instance.a.docker]\nvolumes = ["/tmp:/dev/shm"]\n', [],
     "two mounts at /dev/shm", ("k8s",)),
    ("a sub_path climbing out of its volume (Kubernetes)",
     '[instance.a.docker]\nvolumes = ["/tmp:/models"]\n[instance.a.kubernetes.volumes."/models"]\n'
     'claim = "models"\nsub_path = "../etc"\n', [], "without '..'", ("k8s",)),
    ("gpu_ids beyond the maximum", "[instance.a.control]\ngpu_ids = 1024\n", [], "must be <= 1023, got 1024", ALL),
    ("control characters in a key", '"\\u001b]0;owned\\u0007" = 1\n', [], "\\x1b]0;owned\\x07", ALL),
    ("right-to-left override in a key", '"ab\\u202ec" = 1\n', [], "ab\\u202ec", ALL),
    ("a newline in a key", '"a\\nb" = 1\n', [], "a\\x0ab", ALL),
    ("--set blamed on itself", None, ["--set", "instance.a.server.port=0"], "--set instance.a.server.port: ", ALL),
    ("--override blamed on itself", None, ["--override", '{"instance": {"a": {"server": {"port": "x"}}}}'],
     "--override: instance.a.server.port", ALL),
    ("-p blamed on itself", None, ["-p", "Bad.Name"], "-p: error: project name", ALL),
    ("JSON null as an override", None, ["--override", "null"], "must be a JSON object, got null", ALL),
    ("JSON integer of 5000 digits, worded", None, ["--override", '{"x": ' + "9" * 5000 + "}"],
     "more than 4300 digits", ALL),
]
PYTHON_WORDS = ("NoneType", "datetime.", "sys.set_int_max_str_digits", "Traceback", "internal error")


def _run(tmp_path, capsys, command: str, argv: list[str], config) -> tuple[int, list[str], str]:
    out_file = tmp_path / "out" / "export.yml"
    out_file.parent.mkdir(exist_ok=True)
    out_file.unlink(missing_ok=True)  # an earlier command that accepted the config wrote it
    args = [str(out_file) if a == "OUT" else a for a in COMMANDS[command]]
    code = main(["-c", str(config), *argv, *args])
    out, err = capsys.readouterr()
    if command in ("plan",) and code == 0:
        out = ""  # the plan itself
    summaries = ("vllm-orch: 1 config error", "vLLM options", "1 error(s)", "GPUs:", "ok: ")
    lines = [line for line in (err if command in ("compose", "k8s") else out + err).splitlines()
             if not line.startswith(summaries)]
    return code, lines, out + err


@pytest.mark.parametrize("name,extra,argv,text,fails", THIRD, ids=[c[0] for c in THIRD])
def test_third_audit_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch, name, extra, argv, text, fails):
    monkeypatch.delenv("AUTO_INFER_VLLM_OVERRIDES", raising=False)
    config = tmp_path / "fleet.toml"
    config.write_text(BASE + (extra or ""))
    for command in ALL:
        code, lines, everything = _run(tmp_path, capsys, command, argv, config)
        for word in PYTHON_WORDS:
            assert word not in everything, (command, everything)
        assert "\x1b" not in everything and "\x07" not in everything and "\u202e" not in everything
        if command not in fails:
            assert code == 0, (command, everything)
            continue
        assert code == 2, (command, everything)
        errors = [line for line in lines if ": error: " in line]
        assert len(errors) == 1 and len(lines) == 1, (command, everything)
        assert text in errors[0], (command, errors[0])
        assert len(errors[0]) < 600
        assert not (tmp_path / "out" / "export.yml").exists(), command  # nothing written


@pytest.mark.parametrize("command", ALL)
def test_a_fifo_as_the_config_is_refused_at_once(tmp_path, capsys, command):
    import os

    fifo = tmp_path / "fleet.toml"
    os.mkfifo(fifo)  # nobody writes to it: reading it would block forever
    code, lines, everything = _run(tmp_path, capsys, command, [], fifo)
    assert code == 2
    assert lines == [f"{fifo}: error: is a FIFO, not a regular file (pass the TOML file itself, or use "
                     "--stdin-config to read standard input)"]


@pytest.mark.parametrize("device,kind", [("/dev/zero", "a device"), ("/dev/null", "a device"), ("/", "a directory")])
def test_devices_and_directories_are_not_configs(tmp_path, capsys, device, kind):
    for command in ALL:
        code, lines, _ = _run(tmp_path, capsys, command, [], device)
        assert code == 2
        assert len(lines) == 1 and f"{device}: error: is {kind}, not a regular file" in lines[0]


def test_an_empty_file_is_not_a_fleet_of_none(tmp_path, capsys):
    config = tmp_path / "fleet.toml"
    config.write_text("# nothing yet\n\n")
    for command in ALL:
        code, lines, _ = _run(tmp_path, capsys, command, [], config)
        assert code == 2
        assert len(lines) == 1 and "the config is empty" in lines[0]


@pytest.mark.parametrize("text", ["", "\n\n# only a comment\n"])
def test_an_empty_standard_input_is_not_a_fleet_of_none(tmp_path, capsys, monkeypatch, text):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    assert main(["-c", str(tmp_path / "fleet.toml"), "--stdin-config", "validate", "--offline"]) == 2
    out, err = capsys.readouterr()
    assert "standard input: error: the config is empty" in out


def test_a_config_over_the_size_cap_is_refused_unread(tmp_path, capsys, monkeypatch):
    from orchestrator.config import loader

    monkeypatch.setattr(loader, "MAX_CONFIG_BYTES", 1024)
    config = tmp_path / "fleet.toml"
    config.write_text(BASE + "# padding\n" * 200)
    assert main(["-c", str(config), "plan", "--offline"]) == 2
    assert "larger than" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO(BASE + "#" * 2000))
    assert main(["-c", str(config), "--stdin-config", "plan", "--offline"]) == 2
    assert "standard input: error: larger than" in capsys.readouterr().err


def test_the_size_cap_is_16_mib():
    from orchestrator.config.loader import MAX_CONFIG_BYTES

    assert MAX_CONFIG_BYTES == 16 * 1024 * 1024


def test_a_utf8_bom_is_named(tmp_path, capsys):
    config = tmp_path / "fleet.toml"
    config.write_bytes(b"\xef\xbb\xbf" + BASE.encode())
    assert main(["-c", str(config), "plan", "--offline"]) == 2
    err = capsys.readouterr().err
    assert "starts with a UTF-8 byte order mark (BOM)" in err and "Invalid statement" not in err


def test_control_characters_in_the_config_path_are_escaped(tmp_path, capsys):
    config = tmp_path / "fle\x1b[2Jet\u202e.toml"
    config.write_text(BASE + '"-" = 1\n')
    assert main(["-c", str(config), "plan", "--offline"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\u202e" not in err
    assert "fle\\x1b[2Jet\\u202e.toml" in err


def test_accented_and_cjk_text_is_not_escaped(tmp_path, capsys):
    config = tmp_path / "flotte-été-模型.toml"
    config.write_text(BASE + '"-" = 1\n')
    assert main(["-c", str(config), "plan", "--offline"]) == 2
    assert "flotte-été-模型.toml" in capsys.readouterr().err


def test_json_output_keeps_the_value_and_escapes_it_as_json(tmp_path, capsys):
    config = tmp_path / "fleet.toml"
    config.write_text(BASE + '"a\\u001bb" = 1\n')
    assert main(["-c", str(config), "validate", "--offline", "--json"]) == 2
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert any(p["path"] == "instance.a.server.a\x1bb" for p in json.loads(out)["problems"])


def test_plan_text_escapes_values_that_reach_the_terminal(tmp_path, capsys):
    config = tmp_path / "fleet.toml"
    config.write_text(BASE + 'served_model_name = "chat\\u001b]0;owned\\u0007"\n')
    assert main(["-c", str(config), "plan", "--offline"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "chat\\x1b]0;owned\\x07" in out


def test_an_empty_api_key_is_no_key(tmp_path, capsys):
    config = tmp_path / "fleet.toml"
    config.write_text(BASE + 'api_key = ""\n[instance.a.docker]\npublish_address = "0.0.0.0"\n')
    assert main(["-c", str(config), "validate", "--offline"]) == 0
    out = capsys.readouterr().out
    assert "instance.a.server.api_key: warning: is \"\"" in out
    assert "published on 0.0.0.0 without an API key" in out


def test_a_plain_env_value_is_not_called_secret(tmp_path, capsys):
    config = tmp_path / "fleet.toml"
    config.write_text(BASE + "[instance.a.docker]\nenv = { LEVEL = 3 }\n")
    assert main(["-c", str(config), "validate", "--offline"]) == 2
    out = capsys.readouterr().out
    assert "env.LEVEL: error: expected string, got integer" in out and "it is secret" not in out


def test_extra_args_may_still_carry_other_flags_and_values(tmp_path, capsys):
    """Only flags vllm-orch reads are refused: a value that looks like one, and flags after `--`, pass."""
    config = tmp_path / "fleet.toml"
    config.write_text(BASE + 'extra_args = ["--seed", "1", "--max-num-seqs=8", "--", "--port"]\n')
    assert main(["-c", str(config), "validate", "--offline"]) == 0, capsys.readouterr()


def test_valid_image_references_pass():
    from orchestrator.config.settings_check import image_problem

    for image in ("img:1", "vllm/vllm-openai:v0.8.5", "localhost:5000/team/vllm:Latest", "Registry.Example.com/a/b",
                  "a" * 40 + "@sha256:" + "0" * 64, "[::1]:5000/x:y", "sha256:" + "a" * 64, "a__b-c.d"):
        assert image_problem(image) is None, image
    for image in ("--privileged", "IMG:Latest", "img:", "img:-x", "a b", "img@sha256:xyz", "/img", "img//x"):
        assert image_problem(image) is not None, image


def test_validation_asks_the_option_table_once_per_instance(tmp_path, monkeypatch):
    """Linear, not quadratic: every instance's keys are looked up once whatever the fleet's size
    (the check used to walk all instances for each one). bench/validate_scale.py times it."""
    from orchestrator.project import open_project
    from orchestrator.vllm_options import OptionTable

    calls = {"n": 0}
    lookup = OptionTable.lookup

    def counting(self, key):
        calls["n"] += 1
        return lookup(self, key)

    monkeypatch.setattr(OptionTable, "lookup", counting)
    counts = []
    for n in (10, 40):
        config = tmp_path / f"fleet{n}.toml"
        config.write_text("[docker]\nimage = \"img:1\"\n[instance.control]\ngpu_ids = \"none\"\n" + "".join(
            f'[instance.i{i}.server]\nmodel = "/m"\nport = {9000 + i}\nmax_model_len = 8\n' for i in range(n)))
        calls["n"] = 0
        open_project(config, env={})
        counts.append(calls["n"])
    assert counts[1] == 4 * counts[0]


@pytest.mark.parametrize("argv,env,source", [
    (["--set", "instance.server.port=0"], {}, "--set instance.server.port: instance.server.port"),
    (["--set", 'instance.server.extra_args=["--api-key", "x"]'], {},
     "--set instance.server.extra_args: instance.a.server.extra_args[0]"),
    (["--set", 'docker.image="IMG:Latest"'], {}, "--set docker.image: instance.a.docker.image"),
    (["--set", 'instance.a.server.extra_args=["--port", "1"]'], {}, "--set instance.a.server.extra_args: "),
    ([], {"AUTO_INFER_VLLM_OVERRIDES": '{"instance": {"a": {"server": {"port": -1}}}}'},
     "AUTO_INFER_VLLM_OVERRIDES: instance.a.server.port"),
])
def test_a_problem_names_the_layer_that_caused_it(tmp_path, capsys, monkeypatch, argv, env, source):
    monkeypatch.delenv("AUTO_INFER_VLLM_OVERRIDES", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    config = tmp_path / "fleet.toml"
    config.write_text(BASE.replace("port = 8001\n", ""))
    assert main(["-c", str(config), *argv, "plan", "--offline"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(source), err
    assert str(config) not in err


def test_a_file_value_that_wins_over_a_layer_default_is_the_file_s(tmp_path, capsys):
    """--set docker.image is a default; the instance's own image in the file wins, and is blamed."""
    config = tmp_path / "fleet.toml"
    config.write_text(BASE + '[instance.a.docker]\nimage = "--privileged"\n')
    assert main(["-c", str(config), "--set", 'docker.image="img:2"', "plan", "--offline"]) == 2
    assert capsys.readouterr().err.startswith(f"{config}: instance.a.docker.image")


def test_an_error_message_stays_one_line_whatever_it_quotes(capsys, monkeypatch):
    """The CLI's boundary escapes the message of any error, not only config problems."""
    from orchestrator import cli
    from orchestrator.errors import OrchestratorError

    def failing(args):
        raise OrchestratorError("engine said: no such image: a\nvllm-orch: fake line\x1b[2J")

    monkeypatch.setitem(cli.COMMANDS, "schema", failing)
    assert main(["schema"]) == 1
    err = capsys.readouterr().err
    assert err == "vllm-orch: error: engine said: no such image: a\\x0avllm-orch: fake line\\x1b[2J\n"
