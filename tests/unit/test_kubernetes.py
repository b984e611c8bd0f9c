"""`vllm-orch k8s`: the plan as Kubernetes manifests, checked offline against the strict schemas
of Kubernetes 1.30 and 1.37 (PyPI's kubernetes-validate; no cluster can run here, so scheduling,
the NVIDIA device plugin and image pulls are not exercised)."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from orchestrator.cli import main
from orchestrator.exporters.kubernetes_settings import SETTINGS

from .conftest import CONFIGS

VERSIONS = ("1.30", "1.37")
API_KEY = "sk-k8s-unit-api-key-31337"
HF_TOKEN = "hf_k8s_unit_token_4242"
WANDB_KEY = "wandb-k8s-unit-value-777"
INLINE_SECRET = "inline-secret-value-555"

GPU_FLEET = f"""
[master]
pixi_project_dir = "/workspace/pixi"

[instance.control]
log_dir = "/var/log/vllm"

[instance.server]
host = "0.0.0.0"
api_key = "{API_KEY}"
hf_token = "{HF_TOKEN}"
gpu_memory_utilization = 0.9

[instance.big.control]
gpu_ids = "0,1,2,3"
[instance.big.server]
model = "/llm-models/Qwen2-VL-7B-Instruct"
served_model_name = "qwen2-vl-7b"
tensor_parallel_size = 4
port = 8000
limit_mm_per_prompt = {{ image = 2 }}
[instance.big.kubernetes]
replicas = 2
resources = {{ requests = {{ cpu = 16, memory = "128Gi" }}, limits = {{ memory = "192Gi" }} }}

[instance.small.control]
gpu_ids = "all"
[instance.small.server]
model = "/llm-models/Qwen2-VL-7B-Instruct"
port = 8001
[instance.small.kubernetes]
gpu_count = 1
service_type = "LoadBalancer"
service_annotations = {{ "service.beta.kubernetes.io/aws-load-balancer-internal" = "true" }}

[instance.off.control]
enabled = false
gpu_ids = "4"
[instance.off.server]
model = "/llm-models/Qwen2-VL-7B-Instruct"
port = 8002

[docker]
project = "gpu-fleet"
image = "registry.example.com/infer-dev:stage-2"
shm_size = "1.5g"
stop_timeout = 120
health_start_period = 1795
health_interval = 15
user = "1000:1000"
volumes = ["/llm-models:/llm-models:ro", "/srv/hf-cache:/root/.cache/huggingface"]
pixi_project_host_dir = "/srv/pixi"
secret_env = ["WANDB_API_KEY", "INLINE_TOKEN"]
env = {{ VLLM_LOGGING_LEVEL = "INFO", INLINE_TOKEN = "{INLINE_SECRET}" }}

[kubernetes]
namespace = "inference"
node_selector = {{ "nvidia.com/gpu.product" = "NVIDIA-H200" }}
tolerations = [{{ key = "nvidia.com/gpu", operator = "Exists", effect = "NoSchedule" }}]
runtime_class_name = "nvidia"
image_pull_secrets = ["registry-pull"]
secret_name = "vllm-secrets"
labels = {{ team = "ml-platform" }}
annotations = {{ "example.com/owner" = "ml-platform" }}
[kubernetes.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution]
nodeSelectorTerms = [{{ matchExpressions = [{{ key = "gpu", operator = "In", values = ["h200"] }}] }}]
[kubernetes.volumes."/llm-models"]
claim = "llm-models"
[kubernetes.volumes."/root/.cache/huggingface"]
host_path = "/mnt/hf-cache"
"""


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def k8s(capsys, config: Path, *extra: str, sets: tuple[str, ...] = ()) -> tuple[int, str, str]:
    args = ["-c", str(config)]
    for assignment in sets:
        args += ["--set", assignment]
    return run(capsys, *args, "k8s", "--offline", *extra)


def documents(text: str) -> list[dict]:
    return list(yaml.safe_load_all(text))


def assert_strictly_valid(text: str) -> None:
    docs = documents(text)
    assert docs, "no manifests"
    for version in VERSIONS:
        for doc in docs:
            # validate() falls back to an older schema set when one is missing: insist on the one asked for
            assert kubernetes_validate.validate(doc, version, strict=True) == version


def deployments(text: str) -> dict[str, dict]:
    return {d["metadata"]["annotations"]["vllm-orch.io/instance"]: d for d in documents(text) if d["kind"] == "Deployment"}


def container(deployment: dict) -> dict:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


def plan_commands(capsys, config: Path, *, sets: tuple[str, ...] = (), backend: str = "docker") -> dict[str, list[str]]:
    args = ["-c", str(config)]
    for assignment in sets:
        args += ["--set", assignment]
    code, out, err = run(capsys, *args, "plan", "--json", "--offline", "--backend", backend)
    assert code == 0, err
    return {i["name"]: i["command"] for i in json.loads(out)["instances"]}


@pytest.fixture
def gpu_fleet(write_toml, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    return write_toml(GPU_FLEET)


# ----------------------------------------------------------------------------- the three kinds of config
def test_demo_config_passes_the_strict_schemas_and_runs_plans_argv(capsys):
    demo = CONFIGS / "demo.toml"
    code, out, err = k8s(capsys, demo)
    assert code == 0, err
    assert_strictly_valid(out)
    kinds = [(d["kind"], d["metadata"]["name"]) for d in documents(out)]
    assert kinds == [("Deployment", "demo-tiny-a"), ("Service", "demo-tiny-a"),
                     ("Deployment", "demo-tiny-b"), ("Service", "demo-tiny-b")]
    # The demo's model directory is made at set-up time, so plan is asked on the local backend
    # (it checks no host paths); the argv is the same for every backend.
    plans = plan_commands(capsys, demo, backend="local")
    for name, deployment in deployments(out).items():
        c = container(deployment)
        assert c["command"] + c["args"] == plans[name]
        assert not any("/bin/sh" in token for token in c["command"])  # no Docker log wrapper: stdout is the log
    assert "kubectl logs" in out.split("---")[0]


@pytest.mark.parametrize("example, gpus", [("real-qwen2-vl-7b.toml", 1), ("real-qwen2-vl-7b-tp8.toml", 8)])
def test_contract_examples_pass_the_strict_schemas(capsys, examples_dir, example, gpus):
    sets = ("docker.image=infer-dev:stage-2", f"kubernetes.gpu_count={gpus}")
    code, out, err = k8s(capsys, examples_dir / example, sets=sets)
    assert code == 0, err
    assert_strictly_valid(out)
    plans = plan_commands(capsys, examples_dir / example, sets=sets)
    (name, deployment), = deployments(out).items()
    c = container(deployment)
    assert c["command"] + c["args"] == plans[name]
    assert c["command"][:2] == ["pixi", "run"]  # the contract's launch path, as under Docker
    assert c["resources"]["limits"]["nvidia.com/gpu"] == gpus


def test_multi_gpu_config_with_secrets(capsys, gpu_fleet):
    code, out, err = k8s(capsys, gpu_fleet)
    assert code == 0, err
    assert_strictly_valid(out)
    for secret in (API_KEY, HF_TOKEN, WANDB_KEY, INLINE_SECRET):
        assert secret not in out and secret not in err

    # On one Docker host "all" would share big's GPUs, which `plan` refuses (in a cluster each pod
    # gets GPUs of its own); gpu_ids never enter the argv, so plan is asked with other ids.
    plans = plan_commands(capsys, gpu_fleet, backend="local", sets=('instance.small.control.gpu_ids="5"',))
    found = deployments(out)
    assert sorted(found) == ["big", "off", "small"]
    for name, deployment in found.items():
        c = container(deployment)
        assert c["command"] + c["args"] == plans[name]
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in c["env"] if "valueFrom" in e}
        assert refs == {key: {"name": "vllm-secrets", "key": key}
                        for key in ("VLLM_API_KEY", "HF_TOKEN", "WANDB_API_KEY", "INLINE_TOKEN")}
        plain = {e["name"]: e["value"] for e in c["env"] if "value" in e}
        assert "CUDA_VISIBLE_DEVICES" not in plain  # host ids never reach a container
        assert plain["VLLM_LOGGING_LEVEL"] == "INFO"
        assert deployment["metadata"]["namespace"] == "inference"

    big, small, off = (found[n] for n in ("big", "small", "off"))
    assert container(big)["resources"] == {"requests": {"cpu": "16", "memory": "128Gi"},
                                           "limits": {"memory": "192Gi", "nvidia.com/gpu": 4}}
    assert container(small)["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert big["spec"]["replicas"] == 2 and small["spec"]["replicas"] == 1
    assert off["spec"]["replicas"] == 0  # disabled: kept, scaled to zero
    assert big["metadata"]["annotations"]["vllm-orch.io/gpu-ids"] == "0,1,2,3"
    gpu_warnings = [line for line in err.splitlines() if "gpu_ids" in line and "Kubernetes picks" in line]
    assert len(gpu_warnings) == 2  # big ("0,1,2,3") and off ("4"), one line each

    pod = big["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 120
    assert pod["securityContext"] == {"runAsUser": 1000, "runAsGroup": 1000}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H200"}
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["imagePullSecrets"] == [{"name": "registry-pull"}]
    assert pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"] == {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1536Mi"}}
    assert volumes["llm-models"]["persistentVolumeClaim"] == {"claimName": "llm-models", "readOnly": True}
    assert volumes["root-cache-huggingface"]["hostPath"] == {"path": "/mnt/hf-cache"}
    assert volumes["workspace-pixi"]["hostPath"] == {"path": "/srv/pixi"}
    mounts = {m["mountPath"]: m for m in container(big)["volumeMounts"]}
    assert set(mounts) == {"/dev/shm", "/llm-models", "/root/.cache/huggingface", "/workspace/pixi"}
    assert mounts["/llm-models"]["readOnly"] is True

    startup = container(big)["startupProbe"]
    assert startup["httpGet"] == {"path": "/health", "port": "http"}
    assert startup["periodSeconds"] == 15 and startup["failureThreshold"] * 15 >= 1795
    assert big["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
    template = big["spec"]["template"]["metadata"]
    assert template["annotations"]["prometheus.io/port"] == "8000"
    assert template["labels"]["team"] == "ml-platform"

    services = {d["metadata"]["name"]: d for d in documents(out) if d["kind"] == "Service"}
    lb = services["gpu-fleet-small"]
    assert lb["spec"]["type"] == "LoadBalancer" and lb["spec"]["ports"][0]["port"] == 8001
    assert lb["metadata"]["annotations"] == {"service.beta.kubernetes.io/aws-load-balancer-internal": "true"}

    header = out.split("\n---")[0]
    assert ("kubectl -n inference create secret generic vllm-secrets --from-env-file=vllm-secrets.env"
            "   # keys: VLLM_API_KEY HF_TOKEN WANDB_API_KEY INLINE_TOKEN") in header


def test_same_inputs_give_the_same_bytes(capsys, gpu_fleet, monkeypatch):
    first = k8s(capsys, gpu_fleet)
    assert first[0] == 0
    monkeypatch.setenv("WANDB_API_KEY", "a different value entirely")
    assert k8s(capsys, gpu_fleet) == first  # secret values never enter the output


# ----------------------------------------------------------------------------- GPUs
def gpu_limit(text: str, instance: str) -> int | None:
    limits = container(deployments(text)[instance]).get("resources", {}).get("limits", {})
    return limits.get("nvidia.com/gpu")


def test_all_gpus_without_a_count_asks_for_the_gpus_vllm_uses_and_says_so(capsys, gpu_fleet):
    code, out, err = k8s(capsys, gpu_fleet, sets=('instance.big.control.gpu_ids="all"',))
    assert code == 0, err
    assert gpu_limit(out, "big") == 4
    assert (f'{gpu_fleet}: instance.big.control.gpu_ids: warning: "all": each pod asks for 4 GPU(s), the count vLLM '
            "uses (tensor 4 x pipeline 1 x data 1) (set [instance.big.kubernetes] gpu_count for another number)") in err
    assert_strictly_valid(out)


def test_omitted_gpu_ids_count_tensor_pipeline_and_data_parallel_sizes(capsys, write_toml):
    config = write_toml("""
        [instance.wide.server]
        model = "/m"
        tensor_parallel_size = 2
        pipeline_parallel_size = 2
        data_parallel_size = 2
        [instance.one.server]
        model = "/m"
        port = 8001
        [docker]
        image = "example/vllm:1"
        """)
    code, out, err = k8s(capsys, config)
    assert code == 0, err
    assert gpu_limit(out, "wide") == 8 and gpu_limit(out, "one") == 1
    assert "each pod asks for 8 GPU(s), the count vLLM uses (tensor 2 x pipeline 2 x data 2)" in err


def test_a_written_gpu_count_still_wins_over_the_parallel_sizes(capsys, gpu_fleet):
    code, out, err = k8s(capsys, gpu_fleet, sets=('instance.big.control.gpu_ids="all"', "instance.big.kubernetes.gpu_count=6"))
    assert code == 0, err
    assert gpu_limit(out, "big") == 6 and "instance.big.control.gpu_ids: warning" not in err


def test_all_gpus_where_no_count_can_be_known_is_one_config_error(write_toml):
    """Only an argv vLLM itself would refuse leaves no count (validate reports that argv too:
    rendered here without those checks, as the exporter meets it)."""
    from orchestrator.errors import ConfigError
    from orchestrator.exporters.kubernetes import render_kubernetes
    from orchestrator.project import open_project

    config = write_toml("""
        [instance.big.server]
        model = "/m"
        extra_args = ["--tensor-parallel-size", "auto"]
        [docker]
        image = "example/vllm:1"
        """)
    project = open_project(config, env={}, backend="kubernetes", checks=False)
    with pytest.raises(ConfigError) as caught:
        render_kubernetes(project)
    assert [p.format() for p in caught.value.problems] == [
        f"{config}: instance.big.control.gpu_ids: error: \"all\" has no count in Kubernetes, and the parallel sizes "
        "do not give one: set [kubernetes] gpu_count (e.g. [instance.big.kubernetes] gpu_count = 1)"]
    # Disabled, the same instance is a warning and the others are exported.
    config.write_text(config.read_text() + "[instance.big.control]\nenabled = false\n")
    rendering = render_kubernetes(open_project(config, env={}, backend="kubernetes", checks=False))
    assert [p.severity for p in rendering.warnings if p.path == "instance.big.control.gpu_ids"] == ["warning"]
    assert rendering.manifests[0]["spec"]["replicas"] == 0


@pytest.mark.parametrize("disable", ["instance.off.control.enabled=false", "master.enable=false"])
def test_a_disabled_instance_never_blocks_the_export(capsys, gpu_fleet, disable):
    """Its Deployment has replicas: 0; what would be wrong once it runs is a warning until then."""
    sets = ('instance.off.control.gpu_ids="all"', "instance.off.server.tensor_parallel_size=2", disable)
    code, out, err = k8s(capsys, gpu_fleet, sets=sets)
    assert code == 0, err
    assert deployments(out)["off"]["spec"]["replicas"] == 0 and gpu_limit(out, "off") == 2
    assert "instance.off.control.gpu_ids: warning: \"all\": each pod asks for 2 GPU(s)" in err
    assert_strictly_valid(out)
    code, out, err = k8s(capsys, gpu_fleet, sets=('instance.off.control.gpu_ids="all"', "instance.off.kubernetes.gpu_count=1",
                                                  "instance.off.server.tensor_parallel_size=2", disable))
    assert code == 0 and "instance.off.kubernetes.gpu_count: warning: 1 GPU(s) but vLLM needs 2" in err
    code, out, err = k8s(capsys, gpu_fleet, sets=("instance.off.kubernetes.gpu_count=3", disable))
    assert code == 0 and "instance.off.kubernetes.gpu_count: warning: 3 contradicts gpu_ids = '4'" in err


def test_the_count_vllm_uses_reads_extra_args_as_vllms_parser_does():
    from orchestrator.exporters.kubernetes import vllm_gpu_count

    def count(server: dict, extra: tuple[str, ...] = ()):
        spec = type("Spec", (), {"server": server, "extra_args": extra})()
        return vllm_gpu_count(spec)

    assert count({}) == (1, "tensor 1 x pipeline 1 x data 1")
    assert count({"tensor_parallel_size": 2}, ("-pp", "2", "--data-parallel-size=3"))[0] == 12
    assert count({"tensor_parallel_size": 2}, ("--tensor-parallel-size", "4", "-tp", "8"))[0] == 8  # the last one wins
    assert count({}, ("--", "-tp", "8"))[0] == 1  # after "--": positional, not a flag
    assert count({"tensor_parallel_size": "auto"}) is None
    assert count({}, ("-tp",)) is None


def test_no_gpus_means_no_gpu_resource_and_a_void_device_list(capsys, write_toml):
    config = write_toml("""
        [instance.cpu.control]
        gpu_ids = "none"
        [instance.cpu.server]
        model = "/m"
        [docker]
        image = "example/vllm:1"
        """)
    code, out, err = k8s(capsys, config)
    assert code == 0, err
    assert "nvidia.com/gpu" not in out
    c = container(deployments(out)["cpu"])
    assert "resources" not in c
    assert {"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"} in c["env"]


def test_gpu_count_must_cover_the_parallel_sizes(capsys, gpu_fleet):
    code, _, err = k8s(capsys, gpu_fleet, sets=("instance.small.server.tensor_parallel_size=2",))
    assert code == 2
    assert "instance.small.kubernetes.gpu_count: error: 1 GPU(s) but vLLM needs 2" in err


# ----------------------------------------------------------------------------- namespace, names
def test_namespace_flag_sets_every_object_and_wins_over_the_config(capsys, gpu_fleet):
    code, out, err = k8s(capsys, gpu_fleet, "--namespace", "team-b")
    assert code == 0, err
    assert {d["metadata"]["namespace"] for d in documents(out)} == {"team-b"}
    assert "kubectl -n team-b create secret" in out


def test_without_any_namespace_kubectl_chooses(capsys, write_toml):
    config = write_toml("""
        [instance.a.server]
        model = "/m"
        [instance.a.control]
        gpu_ids = "0"
        [docker]
        image = "example/vllm:1"
        """)
    code, out, _ = k8s(capsys, config)
    assert code == 0
    assert all("namespace" not in d["metadata"] for d in documents(out))


def test_a_bad_namespace_is_a_config_error(capsys, gpu_fleet):
    code, out, err = k8s(capsys, gpu_fleet, "--namespace", "Team_B")
    assert code == 2 and out == ""
    assert "--namespace: error: namespace 'Team_B' is not a valid Kubernetes namespace" in err


def test_instances_whose_kubernetes_names_collide_are_refused(capsys, write_toml):
    config = write_toml("""
        [instance.server]
        model = "/m"
        [instance.control]
        gpu_ids = "none"
        [instance.chat_a.server]
        port = 8001
        [instance.chat-a.server]
        port = 8002
        [docker]
        image = "example/vllm:1"
        """)
    code, _, err = k8s(capsys, config)
    assert code == 2
    assert "instance.chat-a: error: has the same Kubernetes name 'fleet-chat-a' as instance 'chat_a'" in err


# ----------------------------------------------------------------------------- what cannot be expressed
def test_what_kubernetes_cannot_express_is_one_warning_line_each(capsys, write_toml):
    config = write_toml("""
        [instance.a.control]
        gpu_ids = "none"
        [instance.a.server]
        model = "/m"
        [instance.a.docker]
        network_mode = "host"
        user = "vllm"
        [docker]
        image = "example/vllm:1"
        publish_address = "0.0.0.0"
        restart = "on-failure"
        ipc = "host"
        log_host_dir = "/var/log/fleet"
        """)
    code, out, err = k8s(capsys, config)
    assert code == 0, err
    assert_strictly_valid(out)
    warnings = [line for line in err.splitlines() if ": warning: " in line]
    for path in ("docker.publish_address", "docker.restart", "docker.ipc", "docker.log_host_dir",
                 "instance.a.docker.network_mode", "instance.a.docker.user"):
        assert len([w for w in warnings if f": {path}: warning: " in w]) == 1, path
        assert f"#   {path}: " in out  # and a comment in the header
    pod = deployments(out)["a"]["spec"]["template"]["spec"]
    assert "hostNetwork" not in pod and "hostIPC" not in pod and "securityContext" not in pod
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in pod["volumes"]  # the default shm_size


def test_a_loopback_server_host_is_refused(capsys, gpu_fleet):
    code, _, err = k8s(capsys, gpu_fleet, sets=("instance.big.server.host=127.0.0.1",))
    assert code == 2
    assert "instance.big.server.host: error: vLLM would listen on 127.0.0.1 only" in err


def test_two_secret_values_for_one_secret_key_are_refused_without_showing_them(capsys, gpu_fleet):
    other = "sk-other-value-for-small-999"
    code, out, err = k8s(capsys, gpu_fleet, sets=(f'instance.small.server.api_key="{other}"',))
    assert code == 2
    assert "instances 'big' and 'small' read VLLM_API_KEY from the Secret 'vllm-secrets'" in err
    assert other not in err and API_KEY not in err
    code, out, err = k8s(capsys, gpu_fleet, sets=(f'instance.small.server.api_key="{other}"',
                                                   'instance.small.kubernetes.secret_name="small-secrets"'))
    assert code == 0, err
    assert other not in out


def test_a_volume_mapping_for_a_path_nothing_mounts_is_refused(capsys, gpu_fleet):
    code, _, err = run(capsys, "-c", str(gpu_fleet), "--override", '{"kubernetes": {"volumes": {"/llm-model": {"claim": "x"}}}}',
                       "k8s", "--offline")
    assert code == 2
    assert "kubernetes.volumes./llm-model: error: no [docker] volumes entry mounts there (did you mean /llm-models?)" in err


def test_a_header_value_cannot_break_out_of_its_comment(capsys, tmp_path):
    directory = tmp_path / "evil\nkind: Secret\n"
    directory.mkdir()
    config = directory / "fleet.toml"
    config.write_text('[instance.a.server]\nmodel = "/m"\n[instance.a.control]\ngpu_ids = "none"\n'
                      '[docker]\nimage = "example/vllm:1"\nproject = "fleet"\n')
    code, out, err = k8s(capsys, config)
    assert code == 0, err
    header = out.split("\n---\n")[0]
    assert all(line.startswith("#") for line in header.splitlines())
    assert [d["kind"] for d in documents(out)] == ["Deployment", "Service"]


def test_disabled_master_scales_everything_to_zero(capsys, gpu_fleet):
    code, out, err = k8s(capsys, gpu_fleet, sets=("master.enable=false",))
    assert code == 0, err
    assert {d["spec"]["replicas"] for d in documents(out) if d["kind"] == "Deployment"} == {0}
    assert "master.enable = false: every Deployment has replicas: 0" in out


# ----------------------------------------------------------------------------- the [kubernetes] table
def test_validate_rejects_unknown_kubernetes_keys_with_a_did_you_mean(capsys, gpu_fleet):
    code, out, _ = run(capsys, "-c", str(gpu_fleet), "--set", 'kubernetes.node_selecter={ a = "b" }',
                       "--set", "instance.big.kubernetes.replica=3", "validate", "--offline")
    assert code == 2
    assert "kubernetes.node_selecter: error: unknown key (did you mean node_selector?)" in out
    assert "instance.big.kubernetes.replica: error: unknown key (did you mean replicas?)" in out


def test_validate_checks_kubernetes_values(capsys, gpu_fleet):
    code, out, _ = run(capsys, "-c", str(gpu_fleet), "--set", 'kubernetes.service_type="Ingress"',
                       "--set", 'instance.big.kubernetes.resources.requests.memory="lots"', "validate", "--offline")
    assert code == 2
    assert "kubernetes.service_type: error: must be one of 'ClusterIP', 'NodePort', 'LoadBalancer'" in out
    assert "instance.big.kubernetes.resources.requests.memory: error: 'lots' does not match" in out


def test_the_strict_schemas_do_reject_an_unknown_field(capsys, gpu_fleet):
    """The check above is worth something only if strict mode refuses what Kubernetes would."""
    code, out, _ = k8s(capsys, gpu_fleet)
    deployment = documents(out)[0]
    container(deployment)["gpus"] = 4
    for version in VERSIONS:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(deployment, version, strict=True)


def test_readme_lists_every_kubernetes_key():
    from orchestrator.exporters.kubernetes_settings import markdown_rows

    readme = (CONFIGS.parent / "README.md").read_text()
    assert markdown_rows() in readme, "regenerate: python -m orchestrator.exporters.kubernetes_settings"
    assert len(SETTINGS) == len(markdown_rows().splitlines()) - 2


def test_process_limits_are_a_warning_each_and_change_no_manifest(capsys, write_toml):
    """pids_limit and ulimits have no pod field (the kubelet's podPidsLimit, the runtime's ulimits)."""
    plain = """
        [docker]
        image = "example/vllm:1"
        [instance.a.control]
        gpu_ids = "none"
        [instance.a.server]
        model = "/m"
        """
    code, base, _ = k8s(capsys, write_toml(plain))
    assert code == 0
    limited = plain.replace('image = "example/vllm:1"\n', 'image = "example/vllm:1"\n        pids_limit = 4096\n') + \
        "[instance.a.docker]\nulimits = { memlock = -1 }\n"
    code, out, err = k8s(capsys, write_toml(limited))
    assert code == 0, err
    assert [line.split(": ", 1)[1] for line in err.splitlines() if ": warning: " in line and "limit" in line] == [
        "docker.pids_limit: warning: not used: a pod's process limit is the kubelet's podPidsLimit",
        "instance.a.docker.ulimits: warning: not used: a pod's ulimits are the container runtime's (set them on the nodes)"]
    assert documents(out) == documents(base)


# ----------------------------------------------------------------------------- the option table's promise
# A value for every [docker] setting the option table says the export maps (Setting.kubernetes
# empty); a new setting without one fails the test below, so none is dropped without a word.
MAPPED_SAMPLES = {
    "project": '"other"', "image": '"img:2"', "pixi_project_host_dir": '"pixi"',
    "volumes": '["models:/models2:ro"]', "publish": "false", "publish_port": "9001", "env": '{ X = "1" }',
    "secret_env": '["TOKEN_X"]', "shm_size": '"2g"', "user": '"1000"', "restart": '"on-failure"',
    "stop_timeout": "30", "health_start_period": "60", "health_interval": "3", "gpu_driver": '"amd"',
}
MAPPED_BASE = """
[master]
pixi_project_dir = "/work/pixi"
[docker]
{lines}
[instance.control]
gpu_ids = "none"
[instance.a.server]
model = "/models/m"
port = 8001
"""


def test_every_setting_the_table_says_is_mapped_shows_in_the_manifests_or_a_warning(capsys, write_toml, monkeypatch):
    from orchestrator.options import SETTINGS

    monkeypatch.setenv("TOKEN_X", "x")
    mapped = [s.key for s in SETTINGS if not s.kubernetes]
    assert sorted(mapped) == sorted(MAPPED_SAMPLES), "give each mapped setting a sample value here"
    def docker_table(**settings: str) -> str:
        return MAPPED_BASE.format(lines="\n".join(f"{k} = {v}" for k, v in {"image": '"img:1"', **settings}.items()))

    config = write_toml(docker_table())
    for directory in ("models", "pixi"):
        (config.parent / directory).mkdir()
    code, base, err = k8s(capsys, config)
    assert code == 0, err
    for key in mapped:
        code, out, err = k8s(capsys, write_toml(docker_table(**{key: MAPPED_SAMPLES[key]})))
        assert code == 0, (key, err)
        assert out != base or f"docker.{key}" in err, f"[docker] {key} changes nothing in the Kubernetes export"


def test_the_exporter_reads_only_the_resolved_project(gpu_fleet):
    """The TOML is read and merged once (resolve); the exporter never walks the document again,
    so a project whose document is gone exports the same manifests and warnings."""
    from orchestrator.exporters.kubernetes import render_kubernetes
    from orchestrator.project import open_project

    class Gone(dict):
        def __getitem__(self, key):
            raise AssertionError(f"the exporter read the TOML's {key!r}")

        get = __getitem__

    project = open_project(gpu_fleet, env={}, backend="kubernetes", sets=["instance.big.docker.restart='no'"])
    before = render_kubernetes(project)
    project.loaded.data = Gone()
    after = render_kubernetes(project)
    assert after.text == before.text and after.warnings == before.warnings
    assert any(w.path == "instance.big.docker.restart" for w in after.warnings)
