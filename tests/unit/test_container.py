"""The Docker rendering (orchestrator/container.py): what only a container adds to the
target-neutral instance spec, and the GPU request in the engine's and Compose's spellings."""

from __future__ import annotations

from orchestrator.compose import gpu_devices
from orchestrator.container import ENTRYPOINT, HEALTH_PROBE, device_requests, render_container
from orchestrator.labels import LABEL_LOG, LABEL_OWNER, LABEL_PROJECT, LABEL_URL
from orchestrator.spec import GpuRequest
from tests.builders import config, container_of, instance

A100_GPU = "GPU-513536b6-7d19-9063-b049-1e69664bb298"
A100_MIG = "MIG-ce861fb0-a248-58ce-a9a8-f9adbc22a66a"


def test_engine_and_compose_spell_the_same_gpus():
    ids = GpuRequest.parse([1, 3])
    (engine,) = device_requests(ids)
    (compose,) = gpu_devices(ids)
    assert engine["DeviceIDs"] == compose["device_ids"] == ["1", "3"]
    assert engine["Capabilities"] == [["gpu"]] and compose["capabilities"] == ["gpu"]
    assert device_requests(GpuRequest.parse("all"))[0]["Count"] == -1
    assert gpu_devices(GpuRequest.parse("all"))[0]["count"] == "all"
    assert device_requests(GpuRequest.parse("none")) == gpu_devices(GpuRequest.parse("none")) == []


def test_uuids_reach_the_engine_and_compose_as_they_are():
    request = GpuRequest.parse([A100_GPU, A100_MIG])
    (engine,) = device_requests(request, "nvidia")
    (compose,) = gpu_devices(request)
    assert engine["DeviceIDs"] == compose["device_ids"] == [A100_GPU, A100_MIG]
    assert engine["Count"] == 0


def test_the_neutral_spec_holds_no_docker_spelling(tmp_path):
    spec = instance(config(docker='health_interval = 7\nlabels = { team = "infra" }'), tmp_path)
    work = spec.workload
    assert "VLLM_ORCH_LOG_FILE" not in dict(work.env)  # the log wrapper's variable is Docker's
    assert all(m.target != spec.log_file for m in work.mounts)  # so is the log file's bind mount
    assert work.health.command == () and work.health.url == "http://127.0.0.1:8001/health"
    assert work.health.interval_s == 7
    assert dict(work.labels) == {"team": "infra"}


def test_the_container_adds_the_log_wrapper_its_mount_and_the_cmd_health_test(tmp_path):
    spec = instance(config(), tmp_path)
    c = container_of(spec)
    assert c.entrypoint == ENTRYPOINT and c.command == spec.command
    assert (c.mounts[0].source, c.mounts[0].target) == (c.host_log_file, spec.log_file)
    assert c.environment()["VLLM_ORCH_LOG_FILE"] == spec.log_file
    assert c.healthcheck.test == ("CMD", "python3", "-c", HEALTH_PROBE, "http://127.0.0.1:8001/health")
    labels = dict(c.labels)
    assert labels[LABEL_OWNER] == "vllm-orch" and labels[LABEL_LOG] == c.host_log_file
    assert labels[LABEL_URL] == "http://127.0.0.1:8001"


def test_a_health_command_is_exec_form_and_user_labels_cannot_claim_ours(tmp_path):
    spec = instance(config(docker='health_cmd = ["curl", "-f", "http://localhost:8000/health"]\n'
                                  'labels = { "io.vllm-orch.project" = "theirs", team = "a" }'), tmp_path)
    c = container_of(spec)
    assert c.healthcheck.test == ("CMD", "curl", "-f", "http://localhost:8000/health")
    assert dict(c.labels)[LABEL_PROJECT] == "fleet" and dict(c.labels)["team"] == "a"


def test_the_environment_keeps_the_order_every_release_wrote(tmp_path):
    """The order shows in `docker inspect`, the Compose export's bytes and the pod template,
    whose change alone would roll every Deployment."""
    spec = instance(config(docker='user = "1000"\nenv = { EXTRA = "1" }', control='gpu_ids = "none"'), tmp_path)
    assert list(container_of(spec).environment(caches=False)) == [
        "PYTHONUNBUFFERED", "CUDA_DEVICE_ORDER", "VLLM_ORCH_INSTANCE", "VLLM_ORCH_LOG_FILE",
        "NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "HOME", "EXTRA"]
    assert [key for key, _ in spec.workload.env] == [
        "PYTHONUNBUFFERED", "CUDA_DEVICE_ORDER", "VLLM_ORCH_INSTANCE",
        "NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES", "HOME", "EXTRA"]


def test_user_env_still_wins_over_ours(tmp_path):
    spec = instance(config(docker='env = { VLLM_ORCH_INSTANCE = "custom", PYTHONUNBUFFERED = "0" }'), tmp_path)
    env = container_of(spec).environment()
    assert env["VLLM_ORCH_INSTANCE"] == "custom" and env["PYTHONUNBUFFERED"] == "0"


def test_rendering_again_gives_the_same_record(tmp_path):
    """The record is what upgrades compare: the same instance renders to the same record."""
    spec = instance(config(), tmp_path)
    again = render_container(spec, project="fleet", config_file=dict(container_of(spec).labels)["io.vllm-orch.config-file"],
                             host_log_file=container_of(spec).host_log_file, gpu_driver="nvidia")
    assert again.to_json() == container_of(spec).to_json() and again.config_hash() == container_of(spec).config_hash()
