"""`validate`: every problem at once, with key paths and hints."""

from __future__ import annotations

import textwrap

import pytest

from orchestrator.errors import ConfigError
from orchestrator.project import open_project


def problems_of(write_toml, text: str, backend: str = "docker", with_model: bool = True, **kwargs):
    if with_model:  # every real vLLM instance needs one; most cases here are about something else
        text = '[instance.server]\nmodel = "/models/m"\n' + textwrap.dedent(text)
    path = write_toml(text)
    try:
        project = open_project(path, env={}, backend=backend, strict=False, **kwargs)
        return project.problems
    except ConfigError as exc:
        return exc.problems


def errors_of(*args, **kwargs):
    return [p for p in problems_of(*args, **kwargs) if p.is_error]


def test_unknown_keys_get_a_did_you_mean_and_all_are_reported(write_toml):
    errors = errors_of(write_toml, """
        [master]
        enabel = true
        [instance.a.control]
        gpu_id = "0"
        [docker]
        imgae = "x"
    """)
    found = {p.path: p.hint for p in errors}
    assert found == {
        "master.enabel": "did you mean enable?",
        "instance.a.control.gpu_id": "did you mean gpu_ids?",
        "docker.imgae": "did you mean image?",
    }


def test_wrong_types_are_named(write_toml):
    errors = errors_of(write_toml, """
        [master]
        enable = "yes"
        [instance.a.server]
        port = "8000"
    """)
    messages = {p.path: p.message for p in errors}
    assert messages["master.enable"] == "expected boolean, got string 'yes'"
    assert messages["instance.a.server.port"] == "expected integer, got string '8000'"


def test_bad_gpu_ids(write_toml):
    errors = errors_of(write_toml, """
        [docker]
        image = "img"
        [instance.a.control]
        gpu_ids = "gpu0"
    """)
    assert [p.path for p in errors] == ["instance.a.control.gpu_ids"]


def test_two_instances_on_one_published_port(write_toml):
    text = """
        [docker]
        image = "img"
        [instance.control]
        gpu_ids = "none"
        [instance.a.server]
        port = 8000
        [instance.b.server]
        port = 8001
        [instance.b.docker]
        publish_port = 8000
    """
    errors = errors_of(write_toml, text)
    assert len(errors) == 1 and "host port 8000 is also used by instance 'a'" in errors[0].message
    # As processes they listen on different ports: fine.
    assert errors_of(write_toml, text, backend="local") == []


def test_two_processes_on_one_server_port(write_toml):
    errors = errors_of(write_toml, """
        [instance.control]
        gpu_ids = "none"
        [instance.a.server]
        port = 8000
        [instance.b.server]
        port = 8000
    """, backend="local")
    assert "port 8000 is also used by instance 'a'" in errors[0].message


def test_disabled_instances_do_not_conflict(write_toml):
    assert errors_of(write_toml, """
        [docker]
        image = "img"
        [instance.a.server]
        port = 8000
        [instance.b.control]
        enabled = false
        [instance.b.server]
        port = 8000
    """) == []


def test_tensor_parallel_larger_than_the_gpus_given(write_toml):
    errors = errors_of(write_toml, """
        [docker]
        image = "img"
        [instance.a.control]
        gpu_ids = "0,1"
        [instance.a.server]
        tensor_parallel_size = 4
    """)
    assert errors[0].path == "instance.a.server.tensor_parallel_size"
    assert "needs 4 GPUs" in errors[0].message


def test_memory_utilization_summed_over_one_gpu(write_toml):
    errors = errors_of(write_toml, """
        [docker]
        image = "img"
        [instance.a.control]
        gpu_ids = "0"
        [instance.a.server]
        port = 8000
        gpu_memory_utilization = 0.6
        [instance.b.control]
        gpu_ids = [0, 1]
        [instance.b.server]
        port = 8001
        gpu_memory_utilization = 0.5
        [instance.c.control]
        gpu_ids = 1
        [instance.c.server]
        port = 8002
        gpu_memory_utilization = 0.4
    """)
    assert len(errors) == 1
    assert "GPU 0 is shared by a (0.6), b (0.5)" in errors[0].message


def test_loopback_host_in_a_published_container(write_toml):
    errors = errors_of(write_toml, """
        [docker]
        image = "img"
        [instance.a.server]
        host = "127.0.0.1"
    """)
    assert errors[0].path == "instance.a.server.host"
    assert "unreachable" in errors[0].message


def test_host_network_makes_loopback_fine(write_toml):
    assert errors_of(write_toml, """
        [docker]
        image = "img"
        network_mode = "host"
        [instance.a.server]
        host = "127.0.0.1"
    """) == []


def test_world_published_without_api_key_is_a_warning(write_toml):
    problems = problems_of(write_toml, """
        [docker]
        image = "img"
        publish_address = "0.0.0.0"
        [instance.a.server]
        port = 8000
    """)
    assert [(p.severity, p.path) for p in problems] == [("warning", "instance.a.docker.publish_address")]


@pytest.mark.parametrize("host", ["0.0.0.0", None])
def test_host_network_without_api_key_on_every_interface_is_a_warning(write_toml, host):
    problems = problems_of(write_toml, f"""
        [docker]
        image = "img"
        network_mode = "host"
        [instance.a.server]
        port = 8000
        {f'host = "{host}"' if host else ""}
    """)
    assert [(p.severity, p.path) for p in problems] == [("warning", "instance.a.server.host")]
    assert "without an API key" in problems[0].message


def test_host_network_with_api_key_or_on_loopback_is_quiet(write_toml):
    for server in ('host = "127.0.0.1"', 'api_key = "sk-1"'):
        assert problems_of(write_toml, f"""
            [docker]
            image = "img"
            network_mode = "host"
            [instance.a.server]
            port = 8000
            {server}
        """) == []


def test_cuda_visible_devices_in_container_env_is_refused(write_toml):
    errors = errors_of(write_toml, """
        [docker]
        image = "img"
        env = { CUDA_VISIBLE_DEVICES = "3" }
    [instance.a.server]
        port = 8000
    """)
    assert errors[0].path == "instance.a.docker.env.CUDA_VISIBLE_DEVICES"


def test_missing_host_path(write_toml):
    errors = errors_of(write_toml, """
        [docker]
        image = "img"
        volumes = ["/does/not/exist:/models:ro"]
        [instance.a.server]
        port = 8000
    """)
    assert "host path /does/not/exist does not exist" in errors[0].message


def test_control_key_in_server_table(write_toml):
    errors = errors_of(write_toml, """
        [docker]
        image = "img"
        [instance.a.server]
        gpu_ids = "0"
    """)
    assert errors[0].path == "instance.a.server.gpu_ids" and "control" in errors[0].hint


def test_instance_names_must_be_usable_as_container_names(write_toml):
    errors = errors_of(write_toml, """
        [instance."my model".server]
        port = 8000
    """)
    assert errors[0].path == "instance.my model"


@pytest.mark.parametrize("name", ["real-qwen2-vl-7b.toml", "real-qwen2-vl-7b-tp8.toml"])
def test_contract_examples_are_valid(examples_dir, name):
    project = open_project(examples_dir / name, env={}, backend=None)
    assert project.backend == "local"  # no [docker] table: the in-container launcher's file
    assert project.errors == []


def test_two_instances_on_the_same_gpus_by_default_do_not_fit(write_toml):
    errors = errors_of(write_toml, """
        [docker]
        image = "img"
        [instance.a.server]
        port = 8000
        [instance.b.server]
        port = 8001
    """)
    assert [p.message for p in errors] == [
        "every GPU is shared by a (0.9), b (0.9): gpu_memory_utilization sums to 1.8 > 1"
    ]


def test_model_is_required_for_vllm_but_not_for_another_module(write_toml):
    text = """
        [docker]
        image = "img"
        [instance.a.server]
        port = 8000
    """
    errors = errors_of(write_toml, text, with_model=False)
    assert [p.path for p in errors] == ["instance.a.server.model"]
    other = '[master]\napi_server_module = "my.server"\n' + textwrap.dedent(text)
    assert errors_of(write_toml, other, with_model=False) == []


def test_a_model_path_missing_under_its_volume_is_refused_before_anything_starts(write_toml, tmp_path):
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    text = f"""
        [docker]
        image = "img"
        volumes = ["{tmp_path}/models:/llm-models:ro"]
        [instance.ok.server]
        model = "/llm-models/tiny"
        [instance.typo.server]
        model = "/llm-models/tinyy"
        port = 8001
        [instance.hub.server]
        model = "Qwen/Qwen3-0.6B"
        port = 8002
    """
    found = [p for p in problems_of(write_toml, text, with_model=False) if p.path.endswith(".server.model")]
    assert [(p.path, p.message) for p in found] == [(
        "instance.typo.server.model",
        f"/llm-models/tinyy is {tmp_path}/models/tinyy on this host (volume {tmp_path}/models:/llm-models), "
        "which does not exist; vLLM would take it for a Hugging Face Hub name")]
    assert found[0].is_error and "volumes" in found[0].hint


def test_model_path_missing_under_its_volume(write_toml, tmp_path):
    """The fleet-wide check: a model directory that is not on this host is a validate error."""
    models = tmp_path / "models"
    (models / "present").mkdir(parents=True)
    body = f"""
        [docker]
        image = "img"
        volumes = ["{models}:/llm-models:ro"]
        [instance.a.server]
        port = 8000
        model = "/llm-models/%s"
    """
    errors = errors_of(write_toml, body % "absent")
    assert [e.path for e in errors] == ["instance.a.server.model"]
    assert f"{models}/absent" in errors[0].message and "does not exist" in errors[0].message
    assert errors_of(write_toml, body % "present") == []


def test_model_path_inside_the_image_is_not_checked(write_toml):
    assert errors_of(write_toml, """
        [docker]
        image = "img"
        [instance.a.server]
        port = 8000
        model = "/opt/models/baked-in"
    """) == []


@pytest.mark.parametrize("text", [
    '[instance.a.server]\nport = 8001\n[[gateway]]\nport = 8000\napi_key = "sk-LEAKME1"\n',
    '[[instance.a.server]]\nport = 8001\napi_key = "sk-LEAKME1"\n',
    '[instance.a.server]\nport = 8001\n[[instance.a.docker]]\nenv = { MY_TOKEN = "sk-LEAKME1" }\n',
    '[instance.a.server]\nport = 8001\n[instance.a.docker]\nenv = "HF_TOKEN=sk-LEAKME1"\n',
    '[instance.a.server]\nport = 8001\n[docker]\nimage = "i"\nsecret_env = "HF_TOKEN=sk-LEAKME1"\n',
    '[instance.a.server]\nport = 8001\n[docker]\nimage = "i"\nsecret_env = ["HF_TOKEN=sk-LEAKME1"]\n',
])
def test_a_table_of_the_wrong_shape_never_shows_the_secret_it_holds(write_toml, text):
    messages = [p.message for p in problems_of(write_toml, text)]
    assert any("not shown" in m for m in messages), messages
    assert not any("LEAKME" in m for m in messages), messages
