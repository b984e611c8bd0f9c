"""What is on the GPU host, and whether the fleet fits on it: records, parsers, checks.

Pure functions over parsed records. The readers that fill them (NVML through nvidia-ml-py, or
`nvidia-smi` in a short-lived probe container) are thin adapters in `gpu_readers.py`, so
everything decided here is tested against recorded real outputs (tests/fixtures/gpus/).

The checks are the ones vLLM would otherwise fail on after a long model load: a GPU id or UUID
the host does not have, more GPUs needed (tensor x pipeline) than "all" gives, and memory: vLLM
starts only when the memory free on each of its GPUs is at least gpu_memory_utilization x total
("Free memory on device ... is less than desired GPU memory utilization"), so the memory other
processes hold plus every instance's share must fit in the total.
"""

from __future__ import annotations

import csv
import re
from typing import Any, Iterable

from orchestrator.errors import Problem
from orchestrator.spec import normalize_uuid
from orchestrator.value import Value


class GpuDevice(Value):
    """One GPU, or one MIG device of a GPU (then `parent_uuid` is set). Memory in MiB, None
    where the driver does not report it (unified-memory parts such as GB10)."""

    index: int  # nvidia-smi's index; for a MIG device, its index within the parent
    uuid: str
    name: str
    memory_total_mib: int | None = None
    memory_used_mib: int | None = None
    parent_uuid: str = ""
    gpu_instance: int | None = None  # MIG only, where known (NVML): the legacy MIG-GPU-<uuid>/<gi>/<ci> form
    compute_instance: int | None = None

    @property
    def is_mig(self) -> bool:
        return bool(self.parent_uuid)

    def legacy_mig_uuid(self) -> str | None:
        if not self.is_mig or self.gpu_instance is None or self.compute_instance is None:
            return None
        return f"MIG-{self.parent_uuid}/{self.gpu_instance}/{self.compute_instance}"

    def label(self) -> str:
        if self.is_mig:
            return f"MIG device {self.uuid} ({self.name})"
        return f"GPU {self.index} ({self.name}, {self.uuid})"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"index": self.index, "uuid": self.uuid, "name": self.name,
                               "memory_total_mib": self.memory_total_mib, "memory_used_mib": self.memory_used_mib}
        if self.is_mig:
            doc.update(parent_uuid=self.parent_uuid, gpu_instance=self.gpu_instance,
                       compute_instance=self.compute_instance)
        return doc


class GpuProcess(Value):
    """A process holding GPU memory, and whom it belongs to where that could be found out:
    the container it runs in (from its cgroup) or the vllm-orch project of a launched process."""

    gpu_uuid: str
    pid: int
    used_mib: int | None
    container_id: str = ""
    project: str = ""  # VLLM_ORCH_PROJECT of a process `vllm-orch launch` started
    owner_known: bool = False  # False: its cgroup could not be read (another pid namespace)

    def to_json(self) -> dict[str, Any]:
        return {"gpu_uuid": self.gpu_uuid, "pid": self.pid, "used_mib": self.used_mib,
                "container_id": self.container_id or None, "project": self.project or None}


class Inventory(Value):
    gpus: tuple[GpuDevice, ...]
    migs: tuple[GpuDevice, ...] = ()
    processes: tuple[GpuProcess, ...] = ()
    source: str = ""  # "NVML on this host", "nvidia-smi in a probe container (image ...)"
    driver_version: str = ""

    def by_index(self, index: int) -> GpuDevice | None:
        return next((g for g in self.gpus if g.index == index), None)

    def by_uuid(self, uuid: str) -> GpuDevice | None:
        uuid = normalize_uuid(uuid)
        for device in self.gpus + self.migs:
            if device.uuid == uuid or device.legacy_mig_uuid() == uuid:
                return device
        return None

    def processes_on(self, device: GpuDevice) -> list[GpuProcess]:
        return [p for p in self.processes if p.gpu_uuid == device.uuid]

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "driver_version": self.driver_version or None,
                "gpus": [g.to_json() for g in self.gpus], "migs": [m.to_json() for m in self.migs],
                "processes": [p.to_json() for p in self.processes]}


class InventoryUnavailable(Exception):
    """No inventory from this source; the message says why in one line."""


# --------------------------------------------------------------------------- nvidia-smi parsers
_NA = {"[N/A]", "N/A", "[Not Supported]", "[Insufficient Permissions]", "[Unknown Error]"}


def _mib(text: str) -> int | None:
    """'81559', '81559 MiB' (--format=csv with units), '[N/A]' -> None."""
    text = text.strip()
    if text in _NA:
        return None
    return int(float(text.split()[0]))


def _rows(text: str, header_starts: str) -> list[list[str]]:
    rows = []
    for row in csv.reader(text.splitlines(), skipinitialspace=True):
        if not row or not "".join(row).strip():
            continue
        if row[0].strip().lower().startswith(header_starts):  # --format=csv without noheader
            continue
        rows.append([cell.strip() for cell in row])
    return rows


def parse_query_gpu(text: str) -> list[GpuDevice]:
    """`nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used --format=csv[,noheader][,nounits]`."""
    devices = []
    for row in _rows(text, "index"):
        if len(row) < 5 or not row[0].isdigit() or not row[1].upper().startswith("GPU-"):
            raise InventoryUnavailable(f"unexpected nvidia-smi --query-gpu line: {', '.join(row)[:200]!r}")
        devices.append(GpuDevice(int(row[0]), normalize_uuid(row[1]), row[2], _mib(row[3]), _mib(row[4])))
    return devices


def parse_compute_apps(text: str) -> list[GpuProcess]:
    """`nvidia-smi --query-compute-apps=gpu_uuid,pid,used_memory --format=csv[,noheader][,nounits]`."""
    processes = []
    for row in _rows(text, "gpu_uuid"):
        if len(row) < 3 or not row[1].isdigit():
            if "no running" in ",".join(row).lower():
                continue
            raise InventoryUnavailable(f"unexpected nvidia-smi --query-compute-apps line: {', '.join(row)[:200]!r}")
        processes.append(GpuProcess(normalize_uuid(row[0]), int(row[1]), _mib(row[2])))
    return processes


_LIST_GPU = re.compile(r"^GPU (\d+): (.+?) \(UUID: (GPU-[0-9a-fA-F-]+)\)\s*$")
_LIST_MIG = re.compile(r"^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: (MIG-[^)\s]+)\)\s*$")
_LEGACY_MIG = re.compile(r"^MIG-(GPU-[0-9a-f-]+)/(\d+)/(\d+)$")


def parse_list(text: str) -> tuple[list[GpuDevice], list[GpuDevice]]:
    """`nvidia-smi -L`: the GPUs and their MIG devices (name = MIG profile, e.g. 1g.10gb).
    Memory is not in this listing; the legacy MIG-GPU-<uuid>/<gi>/<ci> form carries gi and ci."""
    gpus: list[GpuDevice] = []
    migs: list[GpuDevice] = []
    for line in text.splitlines():
        if match := _LIST_GPU.match(line):
            gpus.append(GpuDevice(int(match.group(1)), normalize_uuid(match.group(3)), match.group(2)))
        elif (match := _LIST_MIG.match(line)) and gpus:
            uuid = normalize_uuid(match.group(3))
            legacy = _LEGACY_MIG.match(uuid)
            migs.append(GpuDevice(int(match.group(2)), uuid, f"MIG {match.group(1)}", parent_uuid=gpus[-1].uuid,
                                  gpu_instance=int(legacy.group(2)) if legacy else None,
                                  compute_instance=int(legacy.group(3)) if legacy else None))
    return gpus, migs


_CGROUP_CONTAINER = re.compile(r"(?:docker[-/]|/containerd/|libpod-|/moby/)([0-9a-f]{64})")


def container_id_from_cgroup(text: str) -> str:
    """The container id in a process's /proc/<pid>/cgroup: cgroup v1 (`...:/docker/<id>`),
    v2 with the systemd driver (`0::/system.slice/docker-<id>.scope`) or cgroupfs
    (`0::/docker/<id>`); "" for a process outside any container."""
    match = _CGROUP_CONTAINER.search(text)
    return match.group(1) if match else ""


PROBE_SECTIONS = ("gpus", "apps", "list", "cgroups")


def parse_probe_output(text: str) -> Inventory:
    """The probe container's output: `@@<section>` blocks (see gpu_readers.PROBE_SCRIPT), each
    ending with `@@rc <exit code>` of its nvidia-smi call. The GPU query must have worked;
    the process list and the MIG listing are extras."""
    sections: dict[str, list[str]] = {}
    codes: dict[str, int] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("@@rc ") and current:
            codes[current] = int(line[5:].strip() or 1)
        elif line.startswith("@@") and line[2:].strip() in PROBE_SECTIONS:
            current = line[2:].strip()
            sections[current] = []
        elif current:
            sections[current].append(line)
    body = {name: "\n".join(lines) for name, lines in sections.items()}
    if "gpus" not in body:
        raise InventoryUnavailable("the probe printed no GPU listing")
    if codes.get("gpus", 0) != 0:
        said = " ".join(body["gpus"].split())[:300] or f"exit code {codes['gpus']}"
        raise InventoryUnavailable(f"nvidia-smi failed in the probe container: {said}")
    gpus = parse_query_gpu(body["gpus"])
    if not gpus:
        raise InventoryUnavailable("nvidia-smi lists no GPU")
    processes = parse_compute_apps(body.get("apps", "")) if codes.get("apps", 0) == 0 else []
    migs: list[GpuDevice] = []
    if codes.get("list", 0) == 0 and body.get("list"):
        _, migs = parse_list(body["list"])
    owners: dict[int, str] = {}
    readable: set[int] = set()
    for line in body.get("cgroups", "").splitlines():
        pid, _, cgroup = line.strip().partition(" ")
        if pid.isdigit() and cgroup.strip():
            readable.add(int(pid))
            owners[int(pid)] = container_id_from_cgroup(cgroup)
    processes = [p.replace(container_id=owners.get(p.pid, ""), owner_known=p.pid in readable) for p in processes]
    return Inventory(tuple(gpus), tuple(migs), tuple(processes))


# --------------------------------------------------------------------------- the checks
class Ours(Value):
    """What belongs to the project being checked: its running containers (by id) and, for
    processes `vllm-orch launch` started, its name (VLLM_ORCH_PROJECT in their environment)."""

    project: str
    container_ids: frozenset[str] = frozenset()

    def owns(self, process: GpuProcess) -> bool:
        if process.container_id and any(cid.startswith(process.container_id) or process.container_id.startswith(cid)
                                        for cid in self.container_ids):
            return True
        return bool(process.project) and process.project == self.project

    @property
    def running(self) -> bool:
        return bool(self.container_ids)


def placement(spec: Any, inventory: Inventory) -> tuple[list[GpuDevice], list[str]]:
    """The devices an instance's gpu_ids name on this host, and the ids it names that the host
    does not have ("all" is every GPU)."""
    gpu = spec.gpu
    if gpu.mode == "all":
        return list(inventory.gpus), []
    if gpu.mode == "ids":
        found = [inventory.by_index(i) for i in gpu.ids]
        return [d for d in found if d], [str(i) for i, d in zip(gpu.ids, found) if d is None]
    devices, missing = [], []
    for uuid in gpu.uuids:
        device = inventory.by_uuid(uuid)
        legacy = _LEGACY_MIG.match(uuid)
        if device is None and legacy and inventory.by_uuid(legacy.group(1)) and not inventory.migs:
            continue  # a MIG device of a GPU this host has; without a MIG listing gi/ci cannot be checked
        if device is None:
            missing.append(uuid)
        else:
            devices.append(device)
    return devices, missing


def inventory_problems(instances: Iterable[Any], inventory: Inventory, ours: Ours, source: str,
                       *, utilization: Any, turns: bool = False) -> list[Problem]:
    """Every enabled GPU instance against the host's GPUs. `utilization(spec)` is the instance's
    gpu_memory_utilization (None: not a number, skip). Problems name the GPU and the fix."""
    from orchestrator.config.validate import parallel_sizes

    out: list[Problem] = []
    users: dict[str, list[tuple[Any, float, str]]] = {}  # device uuid -> (spec, share, how it was named)
    devices: dict[str, GpuDevice] = {}
    for spec in instances:
        if not spec.enabled or spec.gpu.mode == "none":
            continue
        path = f"instance.{spec.name}.control.gpu_ids"
        placed, missing = placement(spec, inventory)
        if missing:
            have = ", ".join(f"{g.index} {g.uuid}" for g in inventory.gpus)
            what = "GPU index" if spec.gpu.mode == "ids" else "UUID"
            out.append(Problem("error", path, f"{what} {', '.join(missing)} is not on this host (it has {have})",
                               hint="see `vllm-orch gpus`", source=source))
        sizes = parallel_sizes(spec.server)
        if spec.gpu.mode == "all" and sizes and sizes[0] * sizes[1] > len(inventory.gpus):
            tp, pp, _ = sizes
            out.append(Problem("error", f"instance.{spec.name}.server.tensor_parallel_size",
                               f"needs {tp * pp} GPUs (tensor {tp} x pipeline {pp}) but this host has {len(inventory.gpus)}",
                               source=source))
        share = utilization(spec)
        if share is None:
            continue
        how = "all" if spec.gpu.mode == "all" else ("index" if spec.gpu.mode == "ids" else "uuid")
        for device in placed:
            devices[device.uuid] = device
            users.setdefault(device.uuid, []).append((spec, share, how))
    for uuid, on_it in users.items():
        out += _memory_problems(devices[uuid], on_it, inventory, ours, source, turns=turns)
    return out


def project_problems(project: Any, inventory: Inventory, running_container_ids: set[str] | frozenset[str],
                     *, blocking: bool = True) -> list[Problem]:
    """inventory_problems for an opened project (`validate`, `up`'s preflight): what is ours is
    its running containers (`running_container_ids`) or launched processes. With `blocking`
    False (`up --no-preflight`) errors become warnings."""
    from orchestrator.config.validate import gpu_memory_utilization

    ours = Ours(project.name, frozenset(running_container_ids))
    problems = inventory_problems(project.resolved.instances, inventory, ours, str(project.loaded.path),
                                  utilization=gpu_memory_utilization, turns=project.backend == "docker")
    if not blocking:
        problems = [p.replace(severity="warning") for p in problems]
    return problems


def _memory_problems(device: GpuDevice, on_it: list[tuple[Any, float, str]], inventory: Inventory,
                     ours: Ours, source: str, *, turns: bool) -> list[Problem]:
    total, used = device.memory_total_mib, device.memory_used_mib
    if total is None or used is None:
        return []  # the driver does not say (unified memory): nothing to compare
    aliased = {how for _, _, how in on_it} >= {"index", "uuid"}
    # Under `up` (`turns`) on-demand instances take turns (the activator's budget): the card holds
    # the always-on ones plus the largest of those; the launcher starts them all at once.
    taking_turns = [u for u in on_it if turns and u[0].workload is not None and u[0].workload.on_demand]
    on_it = [u for u in on_it if u not in taking_turns] + sorted(taking_turns, key=lambda u: -u[1])[:1]
    shares = sum(share for _, share, _ in on_it)
    if shares > 1.0 + 1e-9 and len(on_it) > 1 and not aliased:
        return []  # validate's own check already said the shares alone exceed the card
    processes = inventory.processes_on(device)
    ours_mib = sum(p.used_mib or 0 for p in processes if ours.owns(p))
    unknown = [p for p in processes if not p.owner_known and not p.project and not ours.owns(p)]
    others = max(used - ours_mib, 0)
    need = round(shares * total)
    if others + need <= total:
        return []
    names = " + ".join(f"{spec.name} {share:g} ({round(share * total)} MiB)" for spec, share, _ in on_it)
    severity = "error"
    hint = "lower gpu_memory_utilization, move an instance to another GPU, or free the GPU (see `vllm-orch gpus`)"
    if unknown and ours.running:
        # Whose processes these are could not be read, and this project's own containers run:
        # the memory may be theirs, which a recreate frees.
        severity = "warning"
        hint = "some of that memory may be this project's own (their owners could not be read); " + hint
    return [Problem(severity, "instance",
                    f"{device.label()}: {others} MiB held by other processes + {names} = {others + need} MiB "
                    f"> {total} MiB total; vLLM would stop after loading the model (\"Free memory on device ... "
                    "is less than desired GPU memory utilization\")", hint=hint, source=source)]
