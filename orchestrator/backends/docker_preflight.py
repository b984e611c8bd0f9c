"""Docker's preflight: everything that can be known before `up` changes anything (images,
secrets, host paths, names and ports held by other containers, free ports, log space, the NVIDIA
runtime and the host's GPUs), so a run that cannot succeed leaves nothing half-done.
Reached through DockerBackend.preflight."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from orchestrator import secret_files
from orchestrator.addresses import bind_refused
from orchestrator.backends.engine import is_local_address
from orchestrator.backends.engine_body import gpu_device_requests
from orchestrator.container import ContainerSpec
from orchestrator.errors import PreflightError
from orchestrator.labels import LABEL_URL
from orchestrator.plan import CREATE, RECREATE, START, Action

if TYPE_CHECKING:
    from orchestrator.backends.docker import DockerBackend
    from orchestrator.gpus import Inventory
    from orchestrator.project import Project

MIN_LOG_SPACE = 1 << 20  # bytes free in a log directory for `up` to start servers writing there
GPU_DRIVER_ERROR = "could not select device driver"


def preflight(backend: DockerBackend, project: Project, actions: list[Action], image_ids: dict[str, str], *,
              blocking: bool = True) -> list[str]:
    """Everything that can be known before changing anything (nothing half-done): every problem
    found, in one PreflightError (a missing image, an unset secret, a missing host path, a name
    or port another container holds, a port in use, a full log disk, no NVIDIA runtime, GPUs the
    host lacks), so one run names them all. `image_ids` (image -> id, from image_ids with
    missing_ok) lacks the images this host does not have. The GPUs are checked against what is on
    the host; with `blocking` False (`up --no-preflight`) their problems are warnings. Returns the
    warnings and notes."""
    from orchestrator.config.validate import missing_model_dir  # here: `ps` and `down` never load the config layer

    starting = [a for a in actions if a.kind in (CREATE, RECREATE, START)]
    creating = [a for a in actions if a.kind in (CREATE, RECREATE)]
    problems = missing_images(creating, image_ids)
    for action in creating:
        container = action.container
        for key, value in container.secret_env:
            if value is None:
                problems.append(f"instance {action.instance!r}: secret {key} is not set in the environment "
                                "(export it before `up`)")
        for mount in container.mounts:
            if mount.source != container.host_log_file and not os.path.exists(mount.source):
                problems.append(f"instance {action.instance!r}: host path {mount.source} does not exist")
        if container.secrets_as_files and not secret_files.writable(container.secret_dir):
            problems.append(f"instance {action.instance!r}: cannot write its secret files in {container.secret_dir} "
                            f"(set {secret_files.SECRETS_DIR_ENV} to a directory this user may write)")
        missing_model = missing_model_dir(action.spec, container)
        if missing_model:
            problems.append(f"instance {action.instance!r}: {missing_model}")
    held = _check_other_containers(backend, [a for a in actions if a.kind == CREATE], creating, problems)
    if is_local_address(backend.engine.address):  # a remote engine's host ports and disks are not ours to check
        _check_ports_free([a for a in creating if a.instance not in held], problems)
        try:
            check_log_space(starting)
        except PreflightError as exc:
            problems.extend(exc.problems)
    notes: list[str] = []
    gpu_actions = [a for a in starting if a.spec and a.spec.gpu.mode != "none"
                   and (a.kind == START or a.container.image in image_ids)]  # a missing image is reported already
    if gpu_actions:
        try:
            notes = _check_gpus(backend, project, gpu_actions[0], actions, blocking, problems)
        except PreflightError as exc:
            problems.extend(exc.problems)
    if problems:
        raise PreflightError(problems=problems)
    return notes


def missing_images(creating: list[Action], image_ids: dict[str, str]) -> list[str]:
    """One problem per image the containers to create need and this host does not have."""
    missing = sorted({a.container.image for a in creating if a.container.image not in image_ids})
    return [image_missing(image) for image in missing]


def image_missing(image: str) -> str:
    return (f"image {image!r} not found on this Docker host "
            f"(build it, e.g. scripts/build-images.sh for the bundled images, or `docker pull {image}`)")


def _check_gpus(backend: DockerBackend, project: Project, first: Action, actions: list[Action], blocking: bool,
                problems: list[str]) -> list[str]:
    """The NVIDIA runtime, and the host's GPUs against the plan. On the GPU host itself NVML
    answers (then a throwaway container checks the runtime, as before); otherwise one probe
    container does both. Costs the same one container as the runtime check alone did. Errors
    go to `problems`; warnings and notes are returned."""
    from orchestrator.gpu_readers import read_nvml
    from orchestrator.gpus import InventoryUnavailable, project_problems

    container = first.container
    try:
        if is_local_address(backend.engine.address):
            try:
                inventory = read_nvml()
            except InventoryUnavailable:
                inventory = backend.probe_gpus(container.image, container.gpu_driver, asker=first.instance, container=container)
            else:
                _check_gpu_runtime(backend, first)
        else:
            inventory = backend.probe_gpus(container.image, container.gpu_driver, asker=first.instance, container=container)
    except InventoryUnavailable as exc:
        return [f"GPU inventory skipped: {exc}"]
    running = {a.observed.id for a in actions if a.observed is not None and a.observed.running}
    found = project_problems(project, inventory, running, blocking=blocking)
    problems.extend(p.format() for p in found if p.is_error)
    return [p.format() for p in found if not p.is_error]


def _check_other_containers(backend: DockerBackend, creates: list[Action], creating: list[Action],
                            problems: list[str]) -> set[str]:
    """Names and host ports held by containers this plan does not replace (one list call).
    The ports are checked here too, not only by binding them (below): with Docker's
    userland proxy off, a published port is an iptables rule that no bind() would meet.
    Returns the instances whose port another container publishes (no need to bind it too)."""
    if not creating:
        return set()
    order = {a.instance: i for i, a in enumerate(creating)}
    names = {a.container.name: a.instance for a in creates}
    ports = {port.host_port: (a, port) for a in creating for port in [a.container.port] if port}
    replaced = {a.observed.id for a in creating if a.observed is not None}
    found: list[tuple[int, str]] = []  # reported in config order, whatever order the engine lists in
    held: set[str] = set()
    for row in backend.read(lambda e: e.containers()):
        if row["Id"] in replaced:
            continue
        for name in row.get("Names") or []:
            instance = names.get(name.lstrip("/"))
            if instance is not None:
                found.append((order[instance], (
                    f"instance {instance!r}: a container named {name.lstrip('/')} exists and is not "
                    "managed by this project (rename or remove it, or set [docker] project)")))
        if row.get("State") not in ("running", "paused", "restarting"):  # these hold their ports
            continue
        for published in row.get("Ports") or []:
            wanted = ports.get(published.get("PublicPort"))
            if wanted is None or published.get("Type", "tcp") != "tcp" or wanted[0].instance in held:
                continue
            action, port = wanted
            if addresses_overlap(port.host_address, published.get("IP") or "0.0.0.0"):
                holder = (row.get("Names") or ["?"])[0].lstrip("/")
                held.add(action.instance)
                found.append((order[action.instance], (
                    f"instance {action.instance!r}: host port {port.host_address}:{port.host_port} is published "
                    f"by container {holder}; set [instance.{action.instance}.docker] publish_port")))
    problems.extend(message for _, message in sorted(found))
    return held


def _check_ports_free(creating: list[Action], problems: list[str]) -> None:
    for action in creating:
        port = action.container.port
        if port is None:
            continue
        old = action.observed
        if old is not None and old.running and port.url == old.labels.get(LABEL_URL):
            continue  # held by the container this one replaces
        why = bind_refused(port.host_address, port.host_port)
        if why:
            problems.append(f"instance {action.instance!r}: host port {port.host_address}:{port.host_port} is not free "
                            f"({why}); set [instance.{action.instance}.docker] publish_port")


def _check_gpu_runtime(backend: DockerBackend, action: Action) -> None:
    """A GPU container only fails at start on a host without the NVIDIA runtime; find out
    with a throwaway container before starting anything real."""
    container = action.container
    code, _, err = backend.run_once(container.image, ["/bin/sh", "-c", "exit 0"], timeout=60,
                                 device_requests=gpu_device_requests(container))
    if code == 0:
        return
    if GPU_DRIVER_ERROR in err:
        raise PreflightError(gpu_message(action.instance, container, err))
    raise PreflightError(f"instance {action.instance!r}: GPU check failed: {err or f'exit code {code}'}")


def probe_gpus(backend: DockerBackend, image: str, driver: str = "nvidia", *, asker: str = "",
               container: ContainerSpec | None = None) -> "Inventory":
    """The engine host's GPUs from `nvidia-smi` in a throwaway container of `image` with every
    GPU (the NVIDIA runtime mounts nvidia-smi into any image). No NVIDIA runtime on the engine:
    PreflightError; the container ran but nvidia-smi could not answer: InventoryUnavailable."""
    from orchestrator.gpu_readers import NOT_FOUND_EXIT, PROBE_SCRIPT
    from orchestrator.gpus import InventoryUnavailable, parse_probe_output

    request = [{"Driver": driver, "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}]
    code, out, err = backend.run_once(image, ["/bin/sh", "-c", PROBE_SCRIPT], timeout=60,
                                   device_requests=request, host_pids=True)
    if GPU_DRIVER_ERROR in err:
        if asker and container is not None:
            raise PreflightError(gpu_message(asker, container, err))
        raise PreflightError(f"this Docker host has no NVIDIA runtime ({err.strip()}): install the NVIDIA "
                             "container toolkit")
    if code == -1:
        raise PreflightError(f"{'instance ' + repr(asker) + ': ' if asker else ''}GPU check failed: "
                             f"{err.strip() or out.strip()}")
    text = out + err
    if f"@@rc {NOT_FOUND_EXIT}" in text.split("@@apps")[0]:
        raise InventoryUnavailable(f"no nvidia-smi in the probe container (image {image}): the engine's NVIDIA "
                                   "runtime did not mount it, so it cannot list this host's GPUs")
    inventory = parse_probe_output(text)
    return inventory.replace(source=f"nvidia-smi in a probe container ({image}) on {backend.engine.address}")


def check_log_space(starting: list[Action]) -> None:
    """A full log filesystem makes the container's log wrapper fail at its first write (exit 70):
    refuse before starting anything rather than leave exited containers behind."""
    for directory in sorted({os.path.dirname(a.container.host_log_file) for a in starting}):
        existing = directory
        while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)  # made by _prepare_log_file, on its parent's filesystem
        try:
            stats = os.statvfs(existing)
        except OSError:
            continue  # unreadable: _prepare_log_file reports it
        free = stats.f_bavail * stats.f_frsize
        if free < MIN_LOG_SPACE:
            raise PreflightError(
                f"log directory {directory}: no space left on its filesystem ({free // 1024} KiB free, "
                f"{MIN_LOG_SPACE // (1 << 20)} MiB needed to start): free some, or set [docker] log_host_dir elsewhere")




def gpu_message(instance: str, container: ContainerSpec, exc: Exception | str) -> str:
    return (
        f"instance {instance!r} asks for GPUs (gpu_ids = {container.gpu.describe()!r}) but this Docker host has no "
        f"NVIDIA runtime ({exc}): install the NVIDIA container toolkit, or set gpu_ids = \"none\""
    )


def addresses_overlap(a: str, b: str) -> bool:
    wildcard = ("0.0.0.0", "::", "")
    return a == b or a in wildcard or b in wildcard
