"""The project's GPUs against the host's, for `validate` and `vllm-orch gpus`: which reader to
ask (gpu_readers), what belongs to the project (its running containers, its launched
processes), and the checks (gpus.project_problems, which `up`'s preflight in
backends/docker_preflight.py asks too)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from orchestrator.errors import OrchestratorError, PreflightError, Problem

if TYPE_CHECKING:  # gpus (and csv) are imported only where a GPU inventory is read
    from orchestrator.gpus import Inventory


def wants_gpus(project: Any, selected: set[str] | None = None) -> bool:
    return any(i.enabled and i.gpu.mode != "none" and (selected is None or i.name in selected)
               for i in project.resolved.instances)


def validate_gpus(project: Any, engine: Any | None, *, offline: bool, engine_note: str = "") -> tuple[list[Problem], str]:
    """(problems, one line saying what the GPUs were checked against or why not). `engine` is the
    DockerBackend when the engine answered; None for the process backend or an unreachable engine."""
    if not wants_gpus(project):
        return [], ""
    if offline:
        return [], "not checked against the host (--offline)"
    from orchestrator.gpu_readers import host_inventory
    from orchestrator.gpus import InventoryUnavailable

    running: set[str] = set()
    probe = None
    local = True
    if engine is not None:
        from orchestrator.backends.engine import is_local_address

        local = is_local_address(engine.engine.address)
        first = next(i for i in project.resolved.instances if i.enabled and i.gpu.mode != "none")
        container = project.resolved.containers.get(first.name)
        if container and container.image:
            image, driver = container.image, container.gpu_driver
            probe = lambda: engine.probe_gpus(image, driver)  # noqa: E731
        running = {o.id for o in engine.observe(project.name) if o.running}
    # Without an engine (the process backend, or one that did not answer), NVML or nvidia-smi
    # here still knows this machine's GPUs.
    try:
        inventory = host_inventory(probe, local=local)
    except InventoryUnavailable as exc:
        return [], f"not checked against the host ({exc})"
    except OrchestratorError as exc:  # the probe: no NVIDIA runtime on the engine
        return [Problem("warning", "", str(exc), source=str(project.loaded.path))], "not checked against the host"
    from orchestrator.gpus import project_problems

    problems = project_problems(project, inventory, running)
    return problems, f"checked against {len(inventory.gpus)} GPU(s) from {inventory.source}"


def host_gpus(image: str | None, default_image: Callable[[], str | None]) -> tuple[Inventory, dict[str, dict[str, str]]]:
    """`vllm-orch gpus`: the engine host's inventory and, for each container id seen holding a
    GPU, its name and vllm-orch labels. NVML when vllm-orch runs on that host, else a probe
    container of `image` (or the config's first image). Neither: PreflightError, one line."""
    from orchestrator.backends.base import DOCKER, backend_for
    from orchestrator.backends.engine import engine_address, is_local_address
    from orchestrator.errors import DockerUnavailable
    from orchestrator.gpu_readers import read_nvml
    from orchestrator.gpus import InventoryUnavailable

    reasons = []
    backend = backend_for(DOCKER)
    inventory = None
    if is_local_address(engine_address()):
        try:
            inventory = read_nvml()
        except InventoryUnavailable as exc:
            reasons.append(f"NVML: {exc}")
    if inventory is None:
        image = image or default_image()
        if not image:
            raise PreflightError("no GPU inventory: " + "; ".join(reasons + [
                "the probe container needs an image: pass --image IMAGE (any image with /bin/sh; the NVIDIA "
                "runtime mounts nvidia-smi into it) or -c a config with [docker] image"]))
        try:
            inventory = backend.probe_gpus(image)
        except InventoryUnavailable as exc:
            raise PreflightError("no GPU found: " + "; ".join(reasons + [str(exc)])) from None
        except DockerUnavailable as exc:
            raise PreflightError("no GPU found: " + "; ".join(reasons + [str(exc)])) from None
    return inventory, _containers(backend, inventory)


def _containers(backend: Any, inventory: Inventory) -> dict[str, dict[str, str]]:
    """Container id -> name and vllm-orch project/instance, for the containers holding a GPU
    (one list call; nothing when the engine does not answer: the pids are still shown)."""
    from orchestrator.labels import LABEL_INSTANCE, LABEL_PROJECT

    wanted = {p.container_id for p in inventory.processes if p.container_id}
    if not wanted:
        return {}
    try:
        rows = backend.all_containers()
    except OrchestratorError:
        return {}
    found = {}
    for row in rows:
        if row["Id"] in wanted:
            labels = row.get("Labels") or {}
            found[row["Id"]] = {"name": (row.get("Names") or ["?"])[0].lstrip("/"),
                                "project": labels.get(LABEL_PROJECT, ""), "instance": labels.get(LABEL_INSTANCE, "")}
    return found
