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


def test_engine_and_compose_shapes_agree():
    ids = GpuRequest.parse([1, 3])
    (engine,) = ids.docker_device_requests()
    (compose,) = ids.compose_devices()
    assert engine["DeviceIDs"] == compose["device_ids"] == ["1", "3"]
    assert engine["Capabilities"] == [["gpu"]] and compose["capabilities"] == ["gpu"]
    assert GpuRequest.parse("all").docker_device_requests()[0]["Count"] == -1
    assert GpuRequest.parse("all").compose_devices()[0]["count"] == "all"
    assert GpuRequest.parse("none").docker_device_requests() == []
    assert GpuRequest.parse("none").compose_devices() == []


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
