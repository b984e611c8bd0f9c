"""The GPU inventory through the real engine: the probe container (every GPU, the host's pid
namespace), `vllm-orch gpus`, and validate / up checking gpu_ids and memory against it.

The host has no GPU. The engine's own NVIDIA device driver accepts the probe's GPU request
because scripts/setup-host.sh puts a stand-in `nvidia-container-runtime-hook` on dockerd's PATH;
the probe's image is the stand-in vLLM image plus a stand-in `nvidia-smi`
(tests/images/nvidia-smi-standin) that prints a recorded real H200 listing
(tests/fixtures/gpus/h200-141c-4gpu.query-gpu.csv) and, as GPU processes, the host pids this
test writes into it: one of the fleet's own containers and this pytest process. Which container
a pid runs in is read by the probe from the host's /proc, as on a GPU host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.integration.conftest import STANDIN_IMAGE, free_port, http_json

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "gpus"
GPU0 = "GPU-78aaaccb-3af1-11b3-b1f8-3828c251d9f2"  # 144384 MiB, 45662 MiB used in the recording


def _fixture(name: str) -> str:
    return "\n".join(l for l in (FIXTURES / name).read_text().splitlines() if not l.startswith("#")) + "\n"


@pytest.fixture
def probe_images(tmp_path):
    """Builds images FROM the stand-in with the nvidia-smi stand-in and the given process list;
    removes them afterwards."""
    made: list[str] = []

    def build(apps: str) -> str:
        context = tmp_path / f"ctx{len(made)}"
        (context / "standin").mkdir(parents=True)
        shutil.copy(REPO / "tests" / "images" / "nvidia-smi-standin" / "nvidia-smi", context / "nvidia-smi")
        (context / "standin" / "gpus.csv").write_text(_fixture("h200-141c-4gpu.query-gpu.csv"))
        (context / "standin" / "apps.csv").write_text(apps)
        (context / "standin" / "list.txt").write_text("")
        (context / "Dockerfile").write_text(
            f"FROM {STANDIN_IMAGE}\nCOPY nvidia-smi /usr/local/bin/nvidia-smi\nCOPY standin /etc/nvidia-smi-standin\n")
        tag = f"vllm-orch/gpu-probe-test:{uuid.uuid4().hex[:10]}"
        done = subprocess.run(["docker", "build", "-q", "-t", tag, str(context)], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        made.append(tag)
        return tag

    yield build
    for tag in made:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)


CONFIG = """
[instance.server]
host = "0.0.0.0"
model = "/m"
[instance.chat.control]
gpu_ids = "{gpu0}"
[instance.chat.server]
port = {port}
gpu_memory_utilization = {util}
"""


def test_probe_inventory_sees_our_container_and_checks_memory(fleet, probe_images):
    port = free_port()
    plain = probe_images("")
    # In the recording, 45662 MiB of GPU 0 are in use: a 0.5 share still fits.
    fleet.write(CONFIG.format(gpu0=GPU0, port=port, util=0.5), image=plain)
    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 0, err
    # The UUID reached the engine as a DeviceRequest id, and the process as NVIDIA_VISIBLE_DEVICES.
    assert fleet.container("chat").attrs["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == [GPU0]
    status, info = http_json(f"http://127.0.0.1:{port}/standin/info")
    assert status == 200 and info["env"]["NVIDIA_VISIBLE_DEVICES"] == GPU0

    # Now the GPU holds 40000 MiB of our container's server and 5662 MiB of a host process.
    chat = fleet.container("chat")
    chat_pid = chat.attrs["State"]["Pid"]
    busy = probe_images(f"{GPU0}, {chat_pid}, 40000\n{GPU0}, {os.getpid()}, 5662\n")

    doc = fleet.cli_json("gpus", "--image", busy)
    assert [g["uuid"] for g in doc["gpus"]][0] == GPU0 and len(doc["gpus"]) == 4
    by_pid = {p["pid"]: p for p in doc["processes"]}
    assert by_pid[chat_pid]["container_id"] == chat.id
    assert by_pid[chat_pid]["container"] == {"name": chat.name, "project": fleet.name, "instance": "chat"}
    assert by_pid[os.getpid()]["container"] is None  # a host process, in no container
    code, out, _ = fleet.cli("gpus", "--image", busy)
    assert code == 0 and f"{chat_pid} {chat.name} 40000 MiB" in out

    # validate: 0.8 of 144384 MiB plus the 5662 MiB others hold fits; chat's own 40000 MiB is not
    # "other" (counted as other, 45662 + 115507 would not fit).
    fleet.write(CONFIG.format(gpu0=GPU0, port=port, util=0.8), image=busy)
    code, out, _ = fleet.cli("validate")
    assert code == 0, out
    assert "GPUs: checked against 4 GPU(s) from nvidia-smi in a probe container" in out

    # A second instance naming the same GPU by index: together they no longer fit.
    fleet.write(CONFIG.format(gpu0=GPU0, port=port, util=0.8) + f"""
[instance.embed.control]
gpu_ids = 0
[instance.embed.server]
port = {free_port()}
gpu_memory_utilization = 0.18
""", image=busy)
    code, out, _ = fleet.cli("validate")
    assert code == 2, out
    assert ("GPU 0 (NVIDIA H200-141C, GPU-78aaaccb-3af1-11b3-b1f8-3828c251d9f2): 5662 MiB held by other processes "
            "+ chat 0.8 (115507 MiB) + embed 0.18 (25989 MiB) = 147158 MiB > 144384 MiB total") in out


def test_up_refuses_a_gpu_the_host_does_not_have(fleet, probe_images):
    image = probe_images("")
    fleet.write(CONFIG.format(gpu0="GPU-513536b6-7d19-9063-b049-1e69664bb298", port=free_port(), util=0.5), image=image)
    code, _, err = fleet.cli("up")
    assert code == 4, err
    assert ("instance.chat.control.gpu_ids: error: UUID GPU-513536b6-7d19-9063-b049-1e69664bb298 is not on this host"
            in err)
    assert fleet.containers() == []  # nothing was created
