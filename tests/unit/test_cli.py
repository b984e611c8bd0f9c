"""The command line as a user meets it, without an engine (`--offline` keeps Docker out)."""

from __future__ import annotations

import json

from orchestrator.cli import main

GOOD = """
[docker]
image = "img:1"
[instance.control]
gpu_ids = "none"
[instance.a.server]
model = "/m"
port = 8001
api_key = "sk-unit-secret"
"""


def test_validate_ok(write_toml, capsys):
    path = write_toml(GOOD)
    assert main(["-c", str(path), "validate", "--offline"]) == 0
    out = capsys.readouterr().out
    assert "ok: 1 instance(s), 1 enabled" in out
    assert "image check skipped (--offline)" in out


def test_validate_reports_every_error_and_exits_2(write_toml, capsys):
    path = write_toml(GOOD + '[instance.b.control]\ngpu_ids = "x"\n[instance.b.server]\nmodel = "/m"\nport = 8001\n'
                      '[instance.c.control]\nenabeld = true\n')
    assert main(["-c", str(path), "validate", "--offline"]) == 2
    out = capsys.readouterr().out
    assert "instance.c.control.enabeld: error: unknown key (did you mean enabled?)" in out
    # Schema errors stop the report before meaning checks (they would be noise on a broken shape).
    path = write_toml(GOOD + '[instance.b.control]\ngpu_ids = "x"\n[instance.b.server]\nmodel = "/m"\nport = 8001\n')
    assert main(["-c", str(path), "validate", "--offline"]) == 2
    out = capsys.readouterr().out
    assert "instance.b.control.gpu_ids: error" in out
    assert "host port 8001 is also used by instance 'a'" in out


def test_validate_json(write_toml, capsys):
    path = write_toml(GOOD.replace("port = 8001", 'port = "x"'))
    assert main(["-c", str(path), "validate", "--offline", "--json"]) == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["problems"][0]["path"] == "instance.a.server.port"


def test_plan_json_has_the_documented_shape_and_no_secret(write_toml, capsys):
    path = write_toml(GOOD)
    assert main(["-c", str(path), "plan", "--json", "--offline"]) == 0
    raw = capsys.readouterr().out
    assert "sk-unit-secret" not in raw
    (instance,) = json.loads(raw)["instances"]
    for key in ("name", "enabled", "command", "server_args", "env", "gpu_ids", "log_file", "background", "container"):
        assert key in instance
    # The key is a file (/run/secrets/VLLM_API_KEY), not in the container's environment: only its name is.
    assert "VLLM_API_KEY" not in instance["env"] and instance["env"]["VLLM_ORCH_SECRET_ENV"] == "VLLM_API_KEY"
    assert instance["container"]["secret_env"] == ["VLLM_API_KEY"]
    assert instance["container"]["image"] == "img:1"


def test_plan_local_backend_shows_process_env(write_toml, capsys):
    path = write_toml(GOOD)
    assert main(["-c", str(path), "plan", "--json", "--backend", "local"]) == 0
    (instance,) = json.loads(capsys.readouterr().out)["instances"]
    assert instance["env"]["CUDA_VISIBLE_DEVICES"] == "" and "container" not in instance


def test_no_config_is_one_line(monkeypatch, capsys):
    monkeypatch.delenv("AUTO_INFER_VLLM_CONFIG", raising=False)
    assert main(["plan"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "no config file: pass -c FILE or set AUTO_INFER_VLLM_CONFIG" in err[0]


def test_config_from_environment(write_toml, monkeypatch, capsys):
    monkeypatch.setenv("AUTO_INFER_VLLM_CONFIG", str(write_toml(GOOD)))
    assert main(["validate", "--offline"]) == 0


def test_unknown_instance_name_gets_a_suggestion(write_toml, capsys):
    path = write_toml(GOOD.replace("instance.a.", "instance.alpha."))
    assert main(["-c", str(path), "logs", "alpah"]) == 2
    assert "instance.alpah: error: no such instance in the config (did you mean alpha?)" in capsys.readouterr().err



def test_options_parse_alike_whether_or_not_only_the_command_is_built(write_toml, capsys):
    """Only the named command's arguments are built; the global options before it (their
    values, abbreviations included) must not be mistaken for the command."""
    import pytest

    from orchestrator.cli import build_parser, command_named

    cases = [
        ["-c", "up", "validate", "--offline", "--json"],        # a config file named like a command
        ["--conf", "ps", "-p", "down", "up", "a", "--wait"],     # abbreviated option, project "down"
        ["--set", "instance.a.server.port=1", "logs", "a", "-n", "5"],
        ["--config=x.toml", "down", "--timeout", "3"],
        ["ps", "--json"],
        ["plan", "--backend", "local"],
    ]
    for argv in cases:
        full = build_parser().parse_args(argv)
        assert command_named(argv) == full.command, argv
        assert vars(build_parser(only=command_named(argv)).parse_args(argv)) == vars(full), argv
    assert command_named(["--version"]) is None and command_named(["uq"]) is None
    # Without a command, the commands are listed (help) without building their arguments.
    assert build_parser(arguments=False).format_help() == build_parser().format_help()
    # A typo is reported by argparse with every command listed, as before.
    with pytest.raises(SystemExit):
        main(["uq"])
    assert "invalid choice: 'uq'" in capsys.readouterr().err


def test_logs_of_an_engine_on_another_machine_says_where_the_file_is(write_toml, monkeypatch, capsys):
    path = write_toml(GOOD)
    monkeypatch.setenv("DOCKER_HOST", "unix:///var/run/docker.sock")
    assert main(["-c", str(path), "logs", "a"]) == 1
    assert "no log yet for 'a'" in capsys.readouterr().err
    monkeypatch.setenv("DOCKER_HOST", "ssh://me@gpu-box")
    assert main(["-c", str(path), "logs", "a"]) == 1
    err = capsys.readouterr().err
    assert "the engine at ssh://me@gpu-box writes it on its own machine" in err and len(err.splitlines()) == 1


def test_bad_gpu_uuid_is_one_line_and_exit_2(write_toml, capsys):
    path = write_toml(GOOD.replace('gpu_ids = "none"', 'gpu_ids = "GPU-8f3c,0"'))
    assert main(["-c", str(path), "validate", "--offline"]) == 2
    errors = [line for line in capsys.readouterr().out.splitlines() if ": error: " in line]
    assert errors == [f"{path}: instance.a.control.gpu_ids: error: gpu_ids mixes indexes and UUIDs: 'GPU-8f3c,0' "
                      "(use one or the other)"]


def test_gpus_without_any_gpu_is_one_line_exit_4(tmp_path, monkeypatch, capsys):
    # No NVML here (no driver) and an engine that does not answer: one line, no traceback.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    assert main(["gpus", "--image", "img:1"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vllm-orch: error: no GPU found: NVML: ")


def test_progress_lines_from_parallel_instances_never_interleave(monkeypatch):
    """apply() reports from worker threads; each report must stay one whole line."""
    import threading
    import time

    from orchestrator import cli

    class SlowStream:
        def __init__(self):
            self.parts = []

        def write(self, text):
            self.parts.append(text)
            time.sleep(0.0005)  # give another thread the chance to write in between

        def flush(self):
            pass

    stream = SlowStream()
    monkeypatch.setattr(cli.sys, "stderr", stream)
    threads = [threading.Thread(target=lambda n=n: [cli._stderr(f"tiny_{n}: created") for _ in range(20)])
               for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = "".join(stream.parts).splitlines()
    assert len(lines) == 160 and all(line.endswith(": created") and line.count(":") == 1 for line in lines)


def test_stdin_config_checks_the_text_as_if_it_were_the_file(write_toml, capsys, monkeypatch):
    """What a provisioning tool's check mode needs: the new text judged under the file's name
    (project name, relative paths), with the file on disk left as it is."""
    import io

    path = write_toml(GOOD)
    monkeypatch.setattr("sys.stdin", io.StringIO(GOOD.replace("port = 8001", "port = = 1")))
    assert main(["-c", str(path), "--stdin-config", "validate", "--offline"]) == 2
    out = capsys.readouterr().out
    assert f"{path}:8:" in out and "TOML syntax" in out
    monkeypatch.setattr("sys.stdin", io.StringIO(GOOD.replace('model = "/m"', 'model = "/n"')))
    assert main(["-c", str(path), "--stdin-config", "plan", "--json", "--offline"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["project"] == path.stem and doc["instances"][0]["model"] == "/n"
    assert path.read_text() == GOOD


def test_up_prints_every_preflight_problem_one_line_each_and_exits_4(write_toml, capsys, monkeypatch):
    """Issue 20, part 3, as the user reads it (the real engine: tests/integration/test_failures.py)."""
    from orchestrator import app
    from orchestrator.errors import PreflightError

    def refused(*args, **kwargs):
        raise PreflightError(problems=["image 'x:1' not found on this Docker host",
                                       "instance 'a': host port 127.0.0.1:8001 is not free"])

    monkeypatch.setattr(app, "up", refused)
    assert main(["-c", str(write_toml(GOOD)), "up"]) == 4
    assert capsys.readouterr().err.splitlines() == [
        "vllm-orch: error: image 'x:1' not found on this Docker host",
        "vllm-orch: error: instance 'a': host port 127.0.0.1:8001 is not free",
        "vllm-orch: 2 preflight problems; nothing was changed",
    ]
    monkeypatch.setattr(app, "up", lambda *a, **k: (_ for _ in ()).throw(PreflightError("one thing")))
    assert main(["-c", str(write_toml(GOOD)), "up"]) == 4
    assert capsys.readouterr().err.splitlines() == ["vllm-orch: error: one thing"]  # one problem: as before
