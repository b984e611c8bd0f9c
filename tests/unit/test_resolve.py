"""The contract's merge rules, launch command and defaults, and the container spec built on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.container import ENTRYPOINT, device_requests
from tests.builders import container_of, remember, resolve_file, resolve_toml


BASE = """
[master]
enable = true

[instance.control]
log_dir = "/var/log/vllm"
background = true
gpu_ids = "all"

[instance.server]
host = "0.0.0.0"
max_model_len = 4096
extra_args = ["--disable-log-stats"]

[instance.a.server]
port = 8001
model = "/models/a"
max_model_len = 8192
extra_args = ["--seed", "7"]

[instance.b.control]
gpu_ids = "1,2"
background = false
log_file = "/logs/b.log"

[instance.b.server]
port = 8002
model = "/models/b"
"""


def test_control_merges_key_by_key_and_server_keys_replace(tmp_path):
    a, b = resolve_toml(BASE, tmp_path).instances
    assert (a.background, a.gpu.mode, a.log_file) == (True, "all", "/var/log/vllm/vllm-server-a.log")
    assert (b.background, b.gpu.ids, b.log_file) == (False, (1, 2), "/logs/b.log")
    # Global server keys first, replaced in place; the instance's new keys after; extra_args last,
    # the global list followed by the instance's.
    assert a.server_args == (
        "--host", "0.0.0.0", "--max-model-len", "8192", "--port", "8001", "--model", "/models/a",
        "--disable-log-stats", "--seed", "7",
    )
    assert b.server_args[-1] == "--disable-log-stats"


def test_launch_command_without_pixi_is_python_module(tmp_path):
    a = resolve_toml(BASE, tmp_path).instances[0]
    assert a.command[:3] == ("python", "-m", "vllm.entrypoints.openai.api_server")
    assert dict(a.env)["PYTHONUNBUFFERED"] == "1"


def test_launch_command_with_pixi(tmp_path):
    spec = resolve_toml("""
        [master]
        pixi_project_dir = "/ws/pixi"
        pixi_environment = "cuda"
        api_server_module = "my.server"
        [instance.x.server]
        model = "/m"
    """, tmp_path).instances[0]
    assert spec.command == (
        "pixi", "run", "--manifest-path", "/ws/pixi", "--environment", "cuda", "--frozen",
        "python", "-m", "my.server", "--model", "/m",
    )


def test_disabled_instance_is_kept_with_enabled_false(tmp_path):
    resolved = resolve_toml("""
        [instance.a.control]
        enabled = false
        [instance.a.server]
        model = "/m"
    """, tmp_path)
    assert [(i.name, i.enabled) for i in resolved.instances] == [("a", False)]


def test_api_key_goes_to_the_environment_not_argv(tmp_path):
    spec = resolve_toml("""
        [docker]
        image = "img"
        [instance.a.server]
        model = "/m"
        api_key = "sk-very-secret"
    """, tmp_path).instances[0]
    assert "sk-very-secret" not in " ".join(spec.command)
    assert "--api-key" not in spec.command
    container = container_of(spec)
    assert dict(container.secret_env) == {"VLLM_API_KEY": "sk-very-secret"}  # a file at `up`, not in Env
    assert "sk-very-secret" not in repr(container.environment(reveal=True)) + repr(container.to_json())
    assert container.environment()["VLLM_ORCH_SECRET_ENV"] == "VLLM_API_KEY"  # the log wrapper exports it
    # Nor in the objects' reprs, which end up in tracebacks and test reports.
    assert "sk-very-secret" not in repr(spec) and "secret_env=<not shown>" in repr(container)


def test_changed_secret_changes_the_hash_without_appearing_in_it(tmp_path):
    text = """
        [docker]
        image = "img"
        [instance.a.server]
        api_key = "{key}"
    """
    first = resolve_toml(text.format(key="one"), tmp_path).container_of("a")
    second = resolve_toml(text.format(key="two"), tmp_path).container_of("a")
    assert first.to_json() == second.to_json()
    assert first.config_hash() != second.config_hash()


def test_container_spec_defaults(tmp_path: Path):
    spec = resolve_toml("""
        [docker]
        image = "infer-dev:stage-2"
        [instance.control]
        log_dir = "/tmp"
        [instance.a.control]
        gpu_ids = "2,3"
        [instance.a.server]
        host = "0.0.0.0"
        port = 8001
    """, tmp_path).instances[0]
    c = container_of(spec)
    assert c.name == "fleet-a"  # project defaults to the file's stem
    assert c.image == "infer-dev:stage-2"
    assert c.entrypoint == ENTRYPOINT and c.command == spec.command
    # Published on loopback by default, on the same port.
    assert (c.port.host_address, c.port.host_port, c.port.container_port) == ("127.0.0.1", 8001, 8001)
    # Host ids go to the engine's DeviceRequest; never into CUDA_VISIBLE_DEVICES in the container.
    assert device_requests(c.gpu)[0]["DeviceIDs"] == ["2", "3"]
    env = c.environment()
    assert "CUDA_VISIBLE_DEVICES" not in env and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    # Only the log file is bind-mounted, from <config dir>/logs, at the in-container path.
    log_mount = c.mounts[0]
    assert (log_mount.source, log_mount.target) == (str(tmp_path / "logs" / "vllm-server-a.log"), "/tmp/vllm-server-a.log")
    assert c.shm_size == "8g" and c.init and c.stop_signal == "SIGTERM" and c.stop_timeout == 60
    assert c.healthcheck.test[-1] == "http://127.0.0.1:8001/health"
    labels = dict(c.labels)
    assert labels["io.vllm-orch.project"] == "fleet" and labels["io.vllm-orch.instance"] == "a"


def test_gpu_none_hides_gpus_even_with_nvidia_as_default_runtime(tmp_path):
    c = resolve_toml("""
        [docker]
        image = "img"
        [instance.a.control]
        gpu_ids = "none"
    """, tmp_path).container_of("a")
    assert device_requests(c.gpu) == []
    assert c.environment()["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert c.environment()["CUDA_VISIBLE_DEVICES"] == ""


def test_docker_tables_merge_per_instance_and_paths_are_relative_to_the_file(tmp_path):
    c = resolve_toml("""
        [docker]
        image = "img"
        project = "prod"
        publish_address = "0.0.0.0"
        env = { A = "1", B = "2" }
        volumes = ["models:/llm-models:ro"]
        [instance.a.docker]
        env = { B = "3" }
        publish_port = 9000
        [instance.a.server]
        port = 8000
    """, tmp_path).container_of("a")
    assert c.name == "prod-a"
    assert (c.port.host_address, c.port.host_port, c.port.container_port) == ("0.0.0.0", 9000, 8000)
    assert c.environment()["A"] == "1" and c.environment()["B"] == "3"
    models = [m for m in c.mounts if m.target == "/llm-models"][0]
    assert models.source == str(tmp_path / "models") and models.read_only


def test_secret_env_comes_from_the_host_environment(tmp_path):
    c = resolve_toml("""
        [docker]
        image = "img"
        secret_env = ["HF_TOKEN"]
        [instance.a.server]
        model = "/m"
    """, tmp_path, env={"HF_TOKEN": "hf_abc"}).container_of("a")
    assert dict(c.secret_env) == {"HF_TOKEN": "hf_abc"}
    assert c.environment(reveal=True)["HF_TOKEN_PATH"] == "/run/secrets/HF_TOKEN"  # huggingface_hub reads the file
    assert "hf_abc" not in repr(c.environment(reveal=True)) + repr(c.to_json())


@pytest.mark.parametrize("name", ["real-qwen2-vl-7b.toml", "real-qwen2-vl-7b-tp8.toml"])
def test_contract_examples_resolve_to_the_runner_command(examples_dir, name):
    path = examples_dir / name
    resolved = resolve_file(path)
    (spec,) = resolved.instances
    assert spec.command[:8] == (
        "pixi", "run", "--manifest-path", "/hard/volume/workspace/vllm-pixi-offline",
        "--environment", "default", "--frozen", "python",
    )
    args = spec.server_args
    assert args[:4] == ("--host", "0.0.0.0", "--port", "8000")
    assert "--trust-remote-code" in args
    assert args[args.index("--model") + 1] == "/llm-models/Qwen2-VL-7B-Instruct"
    assert spec.log_file == f"/tmp/vllm-server-{spec.name}.log"
    tp = args[args.index("--tensor-parallel-size") + 1]
    assert tp == ("8" if "tp8" in name else "1")
    if "tp8" not in name:
        assert "--enforce-eager" in args and args[args.index("--max-model-len") + 1] == "8192"


def test_an_option_table_rerenders_only_the_instances_of_its_image(tmp_path):
    """`[docker] image` decides which vLLM parses an instance's argv, so only that image's table
    may change its rendering; the container runs exactly the re-rendered command."""
    from orchestrator.resolve import apply_tables
    from tests.unit.test_argv import TABLE

    text = """
[docker]
image = "with-table:1"
[instance.a.server]
model = "/m"
served_model_name = ["x", "y"]
enable_prefix_caching = false
extra_args = ["--seed", "7"]
[instance.b.docker]
image = "other:1"
[instance.b.server]
model = "/m"
served_model_name = ["x", "y"]
enable_prefix_caching = false
"""
    plain = resolve_toml(text, tmp_path)
    tabled = remember(apply_tables(plain, {"with-table:1": TABLE}))
    a, b = tabled.instances
    # The table knows --served-model-name takes several values and --enable-prefix-caching has a
    # --no- form; the contract's literal rules (instance b) repeat the flag and drop a false flag.
    assert a.server_args == ("--model", "/m", "--served-model-name", "x", "y", "--no-enable-prefix-caching",
                             "--seed", "7")
    assert b.server_args == ("--model", "/m", "--served-model-name", "x", "--served-model-name", "y")
    assert b == plain.instances[1]
    assert a.command[-len(a.server_args):] == a.server_args and container_of(a).command == a.command
    assert container_of(a).config_hash() != container_of(plain.instances[0]).config_hash()
    # Everything else of the resolution stands, and the first one is not modified.
    assert container_of(a).replace(command=()) == container_of(plain.instances[0]).replace(command=())
    assert plain.instances[0].server_args[2:4] == ("--served-model-name", "x")
