"""Thin adapters that fill `gpus.Inventory`: NVML (nvidia-ml-py, imported only here and only when
asked) on the GPU host itself, `nvidia-smi` on this machine, or `nvidia-smi` in a short-lived
probe container with every GPU (for a remote engine, or a host without NVML where vllm-orch runs).
All parsing and deciding is in gpus.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from orchestrator.gpus import (
    GpuDevice,
    GpuProcess,
    Inventory,
    InventoryUnavailable,
    container_id_from_cgroup,
    parse_compute_apps,
    parse_list,
    parse_query_gpu,
)
from orchestrator.spec import normalize_uuid

QUERY_GPU = ["--query-gpu=index,uuid,name,memory.total,memory.used", "--format=csv,noheader,nounits"]
QUERY_APPS = ["--query-compute-apps=gpu_uuid,pid,used_memory", "--format=csv,noheader,nounits"]

# The probe container's command: a constant (no config value reaches it). With the host's pid
# namespace, nvidia-smi lists the processes of every container and /proc/<pid>/cgroup says which
# container each runs in; `@@rc` carries each call's exit code to gpus.parse_probe_output.
PROBE_SCRIPT = (
    "echo @@gpus; nvidia-smi " + " ".join(QUERY_GPU) + " 2>&1; echo \"@@rc $?\"\n"
    "echo @@apps; nvidia-smi " + " ".join(QUERY_APPS) + " 2>&1; echo \"@@rc $?\"\n"
    "echo @@list; nvidia-smi -L 2>&1; echo \"@@rc $?\"\n"
    "echo @@cgroups\n"
    "for pid in $(nvidia-smi --query-compute-apps=pid --format=csv,noheader 2>/dev/null); do\n"
    "  [ -r \"/proc/$pid/cgroup\" ] && echo \"$pid $(tr '\\n' ' ' < \"/proc/$pid/cgroup\")\"\n"
    "done\n"
    "echo \"@@rc 0\"\n"
)
NOT_FOUND_EXIT = 127


def host_inventory(probe: Callable[[], Inventory] | None = None, *, local: bool = True) -> Inventory:
    """NVML when vllm-orch runs on the GPU host (`local`), else the probe container; without a
    probe (the process backend), nvidia-smi on this machine. InventoryUnavailable says why none."""
    reasons = []
    if local:
        try:
            return read_nvml()
        except InventoryUnavailable as exc:
            reasons.append(f"NVML: {exc}")
    if probe is not None:
        try:
            return probe()
        except InventoryUnavailable as exc:
            reasons.append(str(exc))
    elif local:
        try:
            return read_nvidia_smi_here()
        except InventoryUnavailable as exc:
            reasons.append(str(exc))
    raise InventoryUnavailable("; ".join(reasons) or "no way to ask")


# --------------------------------------------------------------------------- NVML
def read_nvml() -> Inventory:
    try:
        import pynvml  # nvidia-ml-py; only this path pays for it
    except ImportError:
        raise InventoryUnavailable("nvidia-ml-py is not installed") from None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        raise InventoryUnavailable(f"{exc} (no NVIDIA driver here)") from None
    try:
        return nvml_inventory(pynvml, owner=process_owner)
    except pynvml.NVMLError as exc:
        raise InventoryUnavailable(f"NVML: {exc}") from None
    finally:
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
            pass


def nvml_inventory(nvml: Any, owner: Callable[[int], tuple[str, str, bool]] = lambda pid: ("", "", False)) -> Inventory:
    """The inventory from an NVML binding (the `pynvml` module, or a stand-in with its functions
    in the unit tests). `owner(pid)` -> (container id, vllm-orch project, whether it could be read)."""
    gpus, migs, processes = [], [], []
    for index in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = normalize_uuid(_text(nvml.nvmlDeviceGetUUID(handle)))
        total, used = _memory(nvml, handle)
        gpus.append(GpuDevice(index, uuid, _text(nvml.nvmlDeviceGetName(handle)), total, used))
        processes += _processes(nvml, handle, uuid, owner)
        for mig_index, mig in _mig_handles(nvml, handle):
            mig_uuid = normalize_uuid(_text(nvml.nvmlDeviceGetUUID(mig)))
            mig_total, mig_used = _memory(nvml, mig)
            migs.append(GpuDevice(mig_index, mig_uuid, _text(nvml.nvmlDeviceGetName(mig)), mig_total, mig_used,
                                  parent_uuid=uuid, gpu_instance=_optional(nvml, nvml.nvmlDeviceGetGpuInstanceId, mig),
                                  compute_instance=_optional(nvml, nvml.nvmlDeviceGetComputeInstanceId, mig)))
            processes += _processes(nvml, mig, mig_uuid, owner)
    driver = _optional(nvml, nvml.nvmlSystemGetDriverVersion)
    return Inventory(tuple(gpus), tuple(migs), tuple(processes), source="NVML on this host",
                     driver_version=_text(driver) if driver else "")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(nvml: Any, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except nvml.NVMLError:
        return None


def _memory(nvml: Any, handle: Any) -> tuple[int | None, int | None]:
    """MiB total and used. The v2 call first: its `used` leaves out the driver's reservation,
    as nvidia-smi does (v1 counts ~0.5-1 GiB more on an idle A100). Unified-memory parts answer
    NOT_SUPPORTED: (None, None)."""
    try:
        info = nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
    except (nvml.NVMLError, AttributeError, TypeError):
        try:
            info = nvml.nvmlDeviceGetMemoryInfo(handle)
        except nvml.NVMLError:
            return None, None
    return info.total >> 20, info.used >> 20


def _processes(nvml: Any, handle: Any, uuid: str, owner: Callable[[int], tuple[str, str, bool]]) -> list[GpuProcess]:
    try:
        running = nvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except nvml.NVMLError:
        return []
    found = []
    for process in running:
        used = process.usedGpuMemory
        container_id, project, known = owner(process.pid)
        found.append(GpuProcess(uuid, process.pid, None if used is None or used >= (1 << 63) else used >> 20,
                                container_id=container_id, project=project, owner_known=known))
    return found


def _mig_handles(nvml: Any, handle: Any) -> list[tuple[int, Any]]:
    try:
        current, _pending = nvml.nvmlDeviceGetMigMode(handle)
    except nvml.NVMLError:  # not MIG-capable
        return []
    if current != nvml.NVML_DEVICE_MIG_ENABLE:
        return []
    handles = []
    for index in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            handles.append((index, nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, index)))
        except nvml.NVMLError:  # an empty slot
            continue
    return handles


def process_owner(pid: int, proc: Path = Path("/proc")) -> tuple[str, str, bool]:
    """(container id, VLLM_ORCH_PROJECT, readable) of a host process: its cgroup names its
    container; `vllm-orch launch` puts VLLM_ORCH_PROJECT into the environment of what it starts."""
    try:
        cgroup = (proc / str(pid) / "cgroup").read_text()
    except OSError:
        return "", "", False
    project = ""
    try:
        for entry in (proc / str(pid) / "environ").read_bytes().split(b"\0"):
            if entry.startswith(b"VLLM_ORCH_PROJECT="):
                project = entry.split(b"=", 1)[1].decode(errors="replace")
    except OSError:  # another user's process: its cgroup is still readable
        pass
    return container_id_from_cgroup(cgroup), project, True


# --------------------------------------------------------------------------- nvidia-smi here
def read_nvidia_smi_here(run: Callable[[list[str]], tuple[int, str]] | None = None) -> Inventory:
    """nvidia-smi on this machine (the process backend on a host without nvidia-ml-py)."""
    run = run or _run
    code, out = run(["nvidia-smi", *QUERY_GPU])
    if code != 0:
        raise InventoryUnavailable("nvidia-smi: " + (" ".join(out.split())[:300] or f"exit code {code}"))
    gpus = parse_query_gpu(out)
    code, apps = run(["nvidia-smi", *QUERY_APPS])
    processes = parse_compute_apps(apps) if code == 0 else []
    code, listing = run(["nvidia-smi", "-L"])
    migs = parse_list(listing)[1] if code == 0 else []
    owned = []
    for process in processes:
        container_id, project, known = process_owner(process.pid)
        owned.append(process.replace(container_id=container_id, project=project, owner_known=known))
    return Inventory(tuple(gpus), tuple(migs), tuple(owned), source="nvidia-smi on this host")


def _run(argv: list[str]) -> tuple[int, str]:
    import subprocess

    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        return NOT_FOUND_EXIT, "nvidia-smi is not installed here"
    except subprocess.TimeoutExpired:
        return 1, "nvidia-smi did not answer within 30 s"
    return done.returncode, done.stdout + done.stderr
