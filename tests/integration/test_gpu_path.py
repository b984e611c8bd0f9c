"""gpu_ids -> DeviceRequest -> what the process in the container sees, through the real engine.

The host has no GPU: scripts/setup-host.sh puts a stand-in `nvidia-container-runtime-hook`
(which does nothing) on dockerd's PATH, so the engine's own NVIDIA device driver accepts GPU
requests and sets NVIDIA_VISIBLE_DEVICES for the container's processes. Nothing else of the
GPU stack is emulated: these tests check the request and the environment, not CUDA.
"""

from __future__ import annotations

from tests.integration.conftest import free_port, http_json

CONFIG = """
[instance.server]
host = "0.0.0.0"
# Four instances overlap on GPUs; small shares keep the memory check satisfied.
gpu_memory_utilization = 0.2

[instance.every.control]
gpu_ids = "all"
[instance.every.server]
port = {p1}

[instance.two.control]
gpu_ids = "2,3"
[instance.two.server]
port = {p2}

[instance.cpu.control]
gpu_ids = "none"
[instance.cpu.server]
port = {p3}

[instance.one.control]
gpu_ids = 1
[instance.one.server]
port = {p4}
"""


def test_gpu_ids_reach_the_engine_and_the_process(fleet):
    ports = {f"p{i}": free_port() for i in range(1, 5)}
    fleet.write(CONFIG.format(**ports))
    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 0, err

    def requests(name):
        return fleet.container(name).attrs["HostConfig"]["DeviceRequests"] or []

    def process_env(port):
        status, info = http_json(f"http://127.0.0.1:{port}/standin/info")
        assert status == 200
        return info["env"]

    (every,) = requests("every")
    assert every["Count"] == -1 and every["Driver"] == "nvidia" and every["Capabilities"] == [["gpu"]]
    assert process_env(ports["p1"])["NVIDIA_VISIBLE_DEVICES"] == "all"

    (two,) = requests("two")
    assert two["DeviceIDs"] == ["2", "3"]
    env = process_env(ports["p2"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "2,3"
    # The container sees its GPUs as 0 and 1: the host ids must not leak into CUDA's view.
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"

    assert requests("cpu") == []
    env = process_env(ports["p3"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void" and env["CUDA_VISIBLE_DEVICES"] == ""

    (one,) = requests("one")
    assert one["DeviceIDs"] == ["1"]
    assert process_env(ports["p4"])["NVIDIA_VISIBLE_DEVICES"] == "1"

    rows = {r["name"]: r["gpus"] for r in fleet.cli_json("ps")["instances"]}
    assert rows == {"every": "all", "two": "2,3", "cpu": "none", "one": "1"}
