"""The GPU inventory: parsing real nvidia-smi / NVML outputs (tests/fixtures/gpus, each file
naming where it was published) and checking a fleet against the host they describe."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from orchestrator.gpu_readers import nvml_inventory, read_nvidia_smi_here
from orchestrator.gpus import (
    GpuDevice,
    GpuProcess,
    Inventory,
    InventoryUnavailable,
    Ours,
    container_id_from_cgroup,
    inventory_problems,
    parse_compute_apps,
    parse_list,
    parse_probe_output,
    parse_query_gpu,
)
from orchestrator.project import open_project
from orchestrator.config.validate import gpu_memory_utilization

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gpus"
CID = "4f1e3c2b" * 8  # a container id (64 hex)


def fixture(name: str) -> str:
    """A fixture without its `#` source header."""
    return "\n".join(line for line in (FIXTURES / name).read_text().splitlines() if not line.startswith("#"))


def h200() -> Inventory:
    return Inventory(tuple(parse_query_gpu(fixture("h200-141c-4gpu.query-gpu.csv"))), source="fixture")


# --------------------------------------------------------------------------- parsers
def test_query_gpu_csv_with_header_and_units():
    gpus = parse_query_gpu(fixture("h200-141c-4gpu.query-gpu.csv"))
    assert [(g.index, g.name, g.memory_total_mib, g.memory_used_mib) for g in gpus] == [
        (0, "NVIDIA H200-141C", 144384, 45662), (1, "NVIDIA H200-141C", 144384, 131470),
        (2, "NVIDIA H200-141C", 144384, 137255), (3, "NVIDIA H200-141C", 144384, 111082)]
    assert gpus[3].uuid == "GPU-8187d0e1-3af1-11b3-a3da-3990b94501cf"


def test_query_gpu_noheader_nounits_as_the_probe_asks():
    text = "0, GPU-78aaaccb-3af1-11b3-b1f8-3828c251d9f2, NVIDIA H200-141C, 144384, 45662\n"
    (gpu,) = parse_query_gpu(text)
    assert (gpu.memory_total_mib, gpu.memory_used_mib) == (144384, 45662)


def test_unified_memory_reports_no_memory():
    # GB10: nvidia-smi prints [N/A] for every framebuffer field.
    header, values = fixture("gb10.query-gpu.csv").strip().splitlines()
    total, used = [cell.strip() for cell in values.split(",")][:2]
    (gpu,) = parse_query_gpu(f"0, GPU-513536b6-7d19-9063-b049-1e69664bb298, NVIDIA GB10, {total}, {used}\n")
    assert (gpu.memory_total_mib, gpu.memory_used_mib) == (None, None)


def test_compute_apps_one_process_on_two_gpus():
    processes = parse_compute_apps(fixture("h100-4gpu.query-apps.csv"))
    assert [(p.gpu_uuid[:12], p.pid, p.used_mib) for p in processes] == [
        ("GPU-e82ab913", 1912379, 518), ("GPU-f7c1496c", 3891903, 74698), ("GPU-cfd9ce0a", 1912379, 518)]
    assert parse_compute_apps("") == []


def test_nvidia_smi_list_with_mig_devices():
    gpus, migs = parse_list(fixture("a100-sxm4-80gb-mig.list.txt"))
    assert [g.index for g in gpus] == [0, 1, 2, 3] and gpus[0].name == "NVIDIA A100-SXM4-80GB"
    assert [(m.index, m.name, m.parent_uuid) for m in migs] == [
        (i, "MIG 1g.20gb", "GPU-513536b6-7d19-9063-b049-1e69664bb298") for i in range(4)]
    gpus, migs = parse_list(fixture("a100-80gb-pcie-mig.list.txt"))
    assert [m.uuid for m in migs] == ["MIG-0929581a-2be6-5dec-bf34-0954c6c529a6", "MIG-3adbed3a-d03d-549f-a016-ba1fd7359f23"]
    assert all(m.gpu_instance is None for m in migs)  # new-style ids carry no gi/ci


def test_legacy_mig_listing_carries_instance_ids():
    text = ("GPU 0: A100-SXM4-40GB (UUID: GPU-932bfb2c-849a-2a22-1e84-9eff6bc02b39)\n"
            "  MIG 1g.5gb Device 0: (UUID: MIG-GPU-932bfb2c-849a-2a22-1e84-9eff6bc02b39/7/0)\n")
    _, (mig,) = parse_list(text)
    assert (mig.gpu_instance, mig.compute_instance) == (7, 0)
    assert mig.legacy_mig_uuid() == "MIG-GPU-932bfb2c-849a-2a22-1e84-9eff6bc02b39/7/0"


@pytest.mark.parametrize("cgroup, expected", [
    (f"12:memory:/docker/{CID}\n11:cpu:/docker/{CID}\n", CID),  # cgroup v1
    (f"0::/system.slice/docker-{CID}.scope\n", CID),  # v2, systemd driver
    (f"0::/docker/{CID}\n", CID),  # v2, cgroupfs driver
    ("0::/user.slice/user-1000.slice/session-3.scope\n", ""),  # a host process
])
def test_container_of_a_process(cgroup, expected):
    assert container_id_from_cgroup(cgroup) == expected


def probe_output(*, gpus_rc: int = 0, gpus: str | None = None, cgroups: str = "") -> str:
    return "\n".join([
        "@@gpus", gpus if gpus is not None else fixture("h100-4gpu.query-gpu-used.csv").replace(", 0 %", "").replace(", 98 %", ""),
        f"@@rc {gpus_rc}", "@@apps", fixture("h100-4gpu.query-apps.csv"), "@@rc 0",
        "@@list", "", "@@rc 0", "@@cgroups", cgroups, "@@rc 0"])


def test_probe_output_joins_processes_to_containers():
    gpus = fixture("h200-141c-4gpu.query-gpu.csv")
    inventory = parse_probe_output(probe_output(gpus=gpus, cgroups=f"1912379 0::/system.slice/docker-{CID}.scope \n"
                                                                    "3891903 0::/user.slice/session-3.scope \n"))
    assert len(inventory.gpus) == 4
    by_pid = {p.pid: p for p in inventory.processes}
    assert by_pid[1912379].container_id == CID and by_pid[1912379].owner_known
    assert by_pid[3891903].container_id == "" and by_pid[3891903].owner_known


def test_probe_without_nvidia_smi_says_why():
    with pytest.raises(InventoryUnavailable, match="nvidia-smi: not found"):
        parse_probe_output(probe_output(gpus="/bin/sh: 1: nvidia-smi: not found", gpus_rc=127))
    with pytest.raises(InventoryUnavailable, match="couldn't communicate with the NVIDIA driver"):
        parse_probe_output(probe_output(gpus_rc=9, gpus="NVIDIA-SMI has failed because it couldn't communicate "
                                                      "with the NVIDIA driver."))


# --------------------------------------------------------------------------- NVML adapter
class _Error(Exception):
    pass


def fake_nvml(doc: dict, *, memory_supported: bool = True, mig: dict | None = None) -> types.SimpleNamespace:
    """An NVML binding answering from a recorded document (the functions nvml_inventory calls)."""
    devices = doc["devices"]

    def memory(handle, version=None):
        if not memory_supported:
            raise _Error("Not Supported")
        m = handle["memory"]
        return types.SimpleNamespace(total=m["total"], used=m["used"], free=m["free"])

    def mig_mode(handle):
        if handle.get("mig") is None:
            raise _Error("Not Supported")
        return (1, 1)

    return types.SimpleNamespace(
        NVMLError=_Error, nvmlMemory_v2=0x02000028, NVML_DEVICE_MIG_ENABLE=1,
        nvmlDeviceGetCount=lambda: len(devices),
        nvmlDeviceGetHandleByIndex=lambda i: dict(devices[i], mig=(mig or {}).get(i)),
        nvmlDeviceGetUUID=lambda h: h["uuid"].encode(), nvmlDeviceGetName=lambda h: h["name"],
        nvmlDeviceGetMemoryInfo=memory,
        nvmlDeviceGetComputeRunningProcesses=lambda h: [types.SimpleNamespace(**p) for p in h.get("processes", [])],
        nvmlDeviceGetMigMode=mig_mode,
        nvmlDeviceGetMaxMigDeviceCount=lambda h: len(h["mig"]),
        nvmlDeviceGetMigDeviceHandleByIndex=lambda h, i: h["mig"][i],
        nvmlDeviceGetGpuInstanceId=lambda h: h["gi"], nvmlDeviceGetComputeInstanceId=lambda h: h["ci"],
        nvmlSystemGetDriverVersion=lambda: "550.90.07",
    )


def test_nvml_and_nvidia_smi_agree_on_the_same_host():
    doc = json.loads((FIXTURES / "nvml-h200-4gpu.json").read_text())
    from_nvml = nvml_inventory(fake_nvml(doc))
    assert [g.to_json() for g in from_nvml.gpus] == [g.to_json() for g in h200().gpus]
    assert from_nvml.driver_version == "550.90.07"


def test_nvml_without_memory_figures_and_with_mig():
    doc = json.loads((FIXTURES / "nvml-h200-4gpu.json").read_text())
    doc["devices"][0]["processes"] = [{"pid": 4242, "usedGpuMemory": 2 << 30}, {"pid": 4243, "usedGpuMemory": None}]
    migs = {0: [{"uuid": "MIG-ce861fb0-a248-58ce-a9a8-f9adbc22a66a", "name": "NVIDIA H200 MIG 1g.18gb",
                 "memory": {"total": 16 << 30, "used": 0, "free": 16 << 30}, "gi": 7, "ci": 0}]}
    inventory = nvml_inventory(fake_nvml(doc, mig=migs), owner=lambda pid: (CID, "", True) if pid == 4242 else ("", "", True))
    (mig,) = inventory.migs
    assert mig.legacy_mig_uuid() == f"MIG-{doc['devices'][0]['uuid']}/7/0" and mig.memory_total_mib == 16384
    assert [(p.pid, p.used_mib, p.container_id) for p in inventory.processes] == [(4242, 2048, CID), (4243, None, "")]
    gb10 = nvml_inventory(fake_nvml(doc, memory_supported=False))
    assert gb10.gpus[0].memory_total_mib is None


def test_nvidia_smi_on_this_host_reader():
    answers = {"--query-gpu": fixture("h200-141c-4gpu.query-gpu.csv"), "--query-compute-apps": "", "-L": ""}
    inventory = read_nvidia_smi_here(lambda argv: (0, next(v for k, v in answers.items() if argv[1].startswith(k))))
    assert len(inventory.gpus) == 4 and inventory.source == "nvidia-smi on this host"
    with pytest.raises(InventoryUnavailable, match="not installed"):
        read_nvidia_smi_here(lambda argv: (127, "nvidia-smi is not installed here"))


# --------------------------------------------------------------------------- checks
def check(write_toml, toml: str, inventory: Inventory, ours: Ours | None = None):
    project = open_project(write_toml(toml), env={}, strict=False, backend="local")
    return inventory_problems(project.resolved.instances, inventory, ours or Ours(project.name), "fleet.toml",
                              utilization=gpu_memory_utilization)


SERVER = '[instance.server]\nmodel = "/m"\n'


def test_ids_and_uuids_that_are_not_on_the_host(write_toml):
    problems = check(write_toml, SERVER + """
        [instance.a.control]
        gpu_ids = "3,4"
        [instance.b.control]
        gpu_ids = "GPU-513536b6-7d19-9063-b049-1e69664bb298"
        [instance.b.server]
        port = 8001
        gpu_memory_utilization = 0.1
    """, h200())
    messages = {p.path: p.message for p in problems if p.is_error}
    assert "GPU index 4 is not on this host" in messages["instance.a.control.gpu_ids"]
    assert "UUID GPU-513536b6-7d19-9063-b049-1e69664bb298 is not on this host" in messages["instance.b.control.gpu_ids"]


def test_mig_uuids_against_the_listing(write_toml):
    gpus, migs = parse_list(fixture("a100-80gb-pcie-mig.list.txt"))
    inventory = Inventory(tuple(g.replace(memory_total_mib=81920, memory_used_mib=0) for g in gpus), tuple(migs))
    ok = check(write_toml, SERVER + '[instance.a.control]\ngpu_ids = "MIG-3adbed3a-d03d-549f-a016-ba1fd7359f23"\n',
               inventory)
    assert ok == []
    # The legacy form on a driver that names MIG devices MIG-<uuid>: the toolkit answers "unknown device".
    legacy = check(write_toml, SERVER + '[instance.a.control]\ngpu_ids = "MIG-GPU-932bfb2c-849a-2a22-1e84-9eff6bc02b39/1/0"\n',
                   inventory)
    assert [p.path for p in legacy] == ["instance.a.control.gpu_ids"]


def test_all_gives_fewer_gpus_than_tensor_x_pipeline(write_toml):
    idle = Inventory(tuple(g.replace(memory_used_mib=0) for g in h200().gpus))
    problems = check(write_toml, SERVER + "[instance.a.server]\ntensor_parallel_size = 4\npipeline_parallel_size = 2\n", idle)
    assert [p.message for p in problems] == ["needs 8 GPUs (tensor 4 x pipeline 2) but this host has 4"]


def test_memory_other_processes_hold_counts(write_toml):
    # GPU 0 of the H200 host: 45662 of 144384 MiB used. 0.6 fits (45662 + 86630); 0.7 does not.
    base = SERVER + '[instance.a.control]\ngpu_ids = 0\n[instance.a.server]\ngpu_memory_utilization = {}\n'
    assert check(write_toml, base.format(0.6), h200()) == []
    (problem,) = check(write_toml, base.format(0.7), h200())
    assert problem.is_error
    assert problem.message.startswith("GPU 0 (NVIDIA H200-141C, GPU-78aaaccb-3af1-11b3-b1f8-3828c251d9f2): 45662 MiB "
                                      "held by other processes + a 0.7 (101069 MiB) = 146731 MiB > 144384 MiB total")
    # vLLM's default share (0.9) on the busiest GPU:
    (problem,) = check(write_toml, SERVER + '[instance.a.control]\ngpu_ids = 2\n', h200())
    assert "137255 MiB held by other processes + a 0.9" in problem.message


def test_this_projects_own_processes_are_not_others(write_toml):
    gpu = h200().gpus[1]  # 131470 MiB used, all of it by one of our containers
    inventory = Inventory((gpu,), processes=(GpuProcess(gpu.uuid, 77, 131470, container_id=CID, owner_known=True),))
    toml = SERVER + '[instance.a.control]\ngpu_ids = 0\n[instance.a.server]\ngpu_memory_utilization = 0.8\n'
    inventory = inventory.replace(gpus=(gpu.replace(index=0),))
    assert check(write_toml, toml, inventory, Ours("fleet", frozenset({CID}))) == []
    (problem,) = check(write_toml, toml, inventory, Ours("fleet"))  # someone else's container
    assert problem.is_error
    # Owners unreadable while this project runs: a warning, not a refusal.
    unknown = inventory.replace(processes=(GpuProcess(gpu.uuid, 77, 131470),))
    (problem,) = check(write_toml, toml, unknown, Ours("fleet", frozenset({"f" * 64})))
    assert problem.severity == "warning" and "may be this project's own" in problem.hint


def test_an_index_and_a_uuid_naming_the_same_gpu_share_it(write_toml):
    uuid = h200().gpus[0].uuid
    problems = check(write_toml, SERVER + f"""
        [instance.a.control]
        gpu_ids = 0
        [instance.a.server]
        gpu_memory_utilization = 0.3
        [instance.b.control]
        gpu_ids = "{uuid}"
        [instance.b.server]
        port = 8001
        gpu_memory_utilization = 0.4
    """, h200())
    (problem,) = problems
    assert "a 0.3 (43315 MiB) + b 0.4 (57754 MiB)" in problem.message


def test_shares_over_one_are_left_to_validates_own_check(write_toml):
    empty = Inventory(tuple(g.replace(memory_used_mib=0) for g in h200().gpus))
    problems = check(write_toml, SERVER + """
        [instance.a.control]
        gpu_ids = 0
        [instance.b.control]
        gpu_ids = 0
        [instance.b.server]
        port = 8001
    """, empty)
    assert problems == []  # semantic_problems already says "GPU 0 is shared by a (0.9), b (0.9)"


def test_unknown_memory_is_not_judged(write_toml):
    gb10 = Inventory((GpuDevice(0, "GPU-513536b6-7d19-9063-b049-1e69664bb298", "NVIDIA GB10"),))
    assert check(write_toml, SERVER + '[instance.a.control]\ngpu_ids = 0\n', gb10) == []


def test_ps_table_shortens_uuids_only():
    from orchestrator.status import short_gpus

    assert short_gpus("GPU-513536b6-7d19-9063-b049-1e69664bb298,MIG-ce861fb0-a248-58ce-a9a8-f9adbc22a66a") == (
        "GPU-513536b6,MIG-ce861fb0")
    assert short_gpus("MIG-GPU-932bfb2c-849a-2a22-1e84-9eff6bc02b39/1/0") == "MIG-GPU-932bfb2c/1/0"
    assert short_gpus("0,1") == "0,1" and short_gpus("all") == "all"


def test_on_demand_instances_on_one_gpu_need_room_for_one_of_them_at_a_time(write_toml):
    # GPU 0 of the H200 host has 45662 of 144384 MiB used: 0.4 + 0.4 at once would not fit, one
    # 0.4 at a time does, and the activator never runs both (it stops one to start the other).
    toml = SERVER + "[gateway]\nport = 9000\n" + "".join(
        f'[instance.{n}.control]\ngpu_ids = 0\n[instance.{n}.docker]\non_demand = true\n'
        f'[instance.{n}.server]\nport = {p}\ngpu_memory_utilization = 0.4\n' for n, p in (("a", 8001), ("b", 8002)))
    project = open_project(write_toml(toml), env={}, strict=False, on_host=False)
    problems = inventory_problems(project.resolved.instances, h200(), Ours(project.name), "fleet.toml",
                                  utilization=gpu_memory_utilization, turns=True)
    assert problems == []
    # The launcher starts both at once: both count.
    (launched,) = inventory_problems(project.resolved.instances, h200(), Ours(project.name), "fleet.toml",
                                     utilization=gpu_memory_utilization)
    assert "+ a 0.4 (57754 MiB) + b 0.4 (57754 MiB)" in launched.message
    always = toml.replace("[instance.b.docker]\non_demand = true\n", "")
    project = open_project(write_toml(always), env={}, strict=False, on_host=False)
    (problem,) = inventory_problems(project.resolved.instances, h200(), Ours(project.name), "fleet.toml",
                                    utilization=gpu_memory_utilization, turns=True)
    assert "45662 MiB held by other processes + b 0.4 (57754 MiB) + a 0.4 (57754 MiB)" in problem.message
