"""gpu_ids forms and the shapes each backend gets from them."""

from __future__ import annotations

import pytest

from orchestrator.spec import GpuRequest


@pytest.mark.parametrize(
    "value, mode, ids",
    [
        (None, "all", ()),
        ("all", "all", ()),
        ("ALL", "all", ()),
        ("none", "none", ()),
        ("0", "ids", (0,)),
        ("0,1, 3", "ids", (0, 1, 3)),
        (2, "ids", (2,)),
        ([4, 5], "ids", (4, 5)),
    ],
)
def test_gpu_ids_forms(value, mode, ids):
    request = GpuRequest.parse(value)
    assert (request.mode, request.ids) == (mode, ids)


@pytest.mark.parametrize("value", ["gpu0", "0;1", "1,,2", -1, [1, "2"], [], True, 1.5, "0,0", {"a": 1}])
def test_bad_gpu_ids_are_errors(value):
    with pytest.raises(ValueError):
        GpuRequest.parse(value)


def test_process_env_uses_host_ids_and_container_env_never_does():
    ids = GpuRequest.parse("2,3")
    assert ids.process_env() == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "2,3"}
    assert ids.container_env() == {}
    assert GpuRequest.parse("none").process_env() == {"CUDA_VISIBLE_DEVICES": ""}
    assert GpuRequest.parse("all").process_env() == {}


@pytest.mark.parametrize("value, size", [
    ("8g", 8 << 30), ("512m", 512 << 20), ("1.5G", 1536 << 20), ("64mb", 64 << 20), ("8 GB", 8 << 30),
    ("4096", 4096), (4096, 4096),
])
def test_sizes_docker_and_compose_accept(value, size):
    from orchestrator.spec import parse_size

    assert parse_size(value) == size


@pytest.mark.parametrize("value", ["8x", "", "g", "8 gigs", -1, True, "8t"])
def test_bad_sizes_are_errors(value):
    from orchestrator.spec import parse_size

    with pytest.raises(ValueError, match="is not a size"):
        parse_size(value)


# --- UUIDs and MIG ----------------------------------------------------------------------------
# UUIDs from real `nvidia-smi -L` outputs (tests/fixtures/gpus/*.list.txt, each naming its source).
A100_GPU = "GPU-513536b6-7d19-9063-b049-1e69664bb298"
A100_GPU1 = "GPU-d8594bd4-0fc3-8595-e355-7c98138f3b95"
A100_MIG = "MIG-ce861fb0-a248-58ce-a9a8-f9adbc22a66a"
LEGACY_MIG = "MIG-GPU-932bfb2c-849a-2a22-1e84-9eff6bc02b39/1/0"


@pytest.mark.parametrize("value, uuids", [
    (A100_GPU, (A100_GPU,)),
    (f"{A100_GPU}, {A100_GPU1}", (A100_GPU, A100_GPU1)),
    ([A100_GPU1, A100_GPU], (A100_GPU1, A100_GPU)),  # order kept: it is CUDA's device order
    (A100_MIG, (A100_MIG,)),
    (LEGACY_MIG, (LEGACY_MIG,)),
    (A100_GPU.upper().replace("GPU-", "gpu-"), (A100_GPU,)),  # written in capitals: as nvidia-smi prints it
])
def test_gpu_ids_take_gpu_and_mig_uuids(value, uuids):
    request = GpuRequest.parse(value)
    assert (request.mode, request.uuids, request.count) == ("uuids", uuids, len(uuids))


@pytest.mark.parametrize("value, says", [
    ("GPU-8f3c", "is not a GPU or MIG UUID"),  # abbreviated
    ("GPU-513536b6-7d19-9063-b049-1e69664bb29", "is not a GPU or MIG UUID"),  # one digit short
    ("GPU-513536b6-7d19-9063-b049-1e69664bb29z", "is not a GPU or MIG UUID"),
    ("MIG-GPU-932bfb2c-849a-2a22-1e84-9eff6bc02b39", "is not a GPU or MIG UUID"),  # legacy without /gi/ci
    (f"0,{A100_GPU}", "mixes indexes and UUIDs"),
    ([0, A100_GPU], "mixes indexes and UUIDs"),
    (f"{A100_GPU},{A100_GPU.upper().replace('GPU-', 'GPU-')}", "lists a GPU twice"),
    ([A100_GPU, A100_GPU], "lists a GPU twice"),
    ([A100_GPU, "x"], "is not a GPU or MIG UUID"),
])
def test_bad_uuids_are_one_line_errors(value, says):
    with pytest.raises(ValueError) as caught:
        GpuRequest.parse(value)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_uuids_reach_cuda_as_they_are():
    request = GpuRequest.parse([A100_GPU, A100_MIG])
    # CUDA takes UUIDs in CUDA_VISIBLE_DEVICES; their order is the device order, no PCI ordering needed.
    assert request.process_env() == {"CUDA_VISIBLE_DEVICES": f"{A100_GPU},{A100_MIG}"}
    assert request.container_env() == {}  # never host ids (or UUIDs) as CUDA_VISIBLE_DEVICES in a container
    assert request.describe() == f"{A100_GPU},{A100_MIG}"
    assert request.to_json() == [A100_GPU, A100_MIG]


def test_index_shapes_are_byte_identical_to_the_previous_release(write_toml):
    """Containers made by the previous release must not be recreated: for index ids the spec's
    JSON (and so its hash) is what 8a54adf made. Checked then against that commit's code
    (git archive 8a54adf) with the same config: equal hashes for all, "2,3", 1 and "none"."""
    import json

    from orchestrator.project import open_project

    path = write_toml("""
        [docker]
        image = "img:1"
        [instance.two.control]
        gpu_ids = "2,3"
        [instance.two.server]
        model = "/m"
        [instance.every.server]
        model = "/m"
        port = 8001
    """)
    project = open_project(path, env={}, strict=False)
    two, every = project.resolved.instances
    assert json.dumps(project.resolved.container_of(two.name).to_json()["device_requests"], sort_keys=True) == (
        '[{"Capabilities": [["gpu"]], "Count": 0, "DeviceIDs": ["2", "3"], "Driver": "nvidia", "Options": {}}]')
    assert json.dumps(project.resolved.container_of(every.name).to_json()["device_requests"], sort_keys=True) == (
        '[{"Capabilities": [["gpu"]], "Count": -1, "DeviceIDs": null, "Driver": "nvidia", "Options": {}}]')
    assert two.to_json()["gpu_ids"] == [2, 3] and every.to_json()["gpu_ids"] == "all"
    assert dict(project.resolved.container_of(two.name).labels)["io.vllm-orch.gpus"] == "2,3"
