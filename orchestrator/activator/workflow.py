"""The activator's part of `up`, `down` and `ps`: the hook points app.py and the gateway call.

`up`: after the instances' run, the state file is written and the activator's container planned
and applied; the gateway is then rendered with it as each on-demand model's backup server
(`gateway_extras`). `down` removes it; `ps` shows its row and the on-demand instances' states.
"""

from __future__ import annotations

import os
from typing import Any

from orchestrator.activator import service
from orchestrator.activator.state import STATE_FILE, OnDemand, Resident, State, write
from orchestrator.errors import OrchestratorError
from orchestrator.plan import Action

CONTAINER_STATE_DIR = "activator"


def on_demand(project) -> list:
    rendered = project.resolved.containers
    return [s for s in project.resolved.instances if s.enabled and s.workload.on_demand and s.name in rendered]


def wanted_here(project) -> bool:
    return project.resolved.gateway is not None and bool(on_demand(project))


def _gpus(spec) -> tuple[str, ...]:
    if spec.gpu.mode == "none":
        return ("host",)
    if spec.gpu.mode == "all":
        return ("all",)
    return tuple(str(g) for g in spec.gpu.device_ids)


def _share(spec) -> float | None:
    """gpu_memory_utilization where the config sets it (on a host without GPUs it is the share of
    the host's one budget, so a host that holds one model at a time can say so)."""
    from orchestrator.config.validate import gpu_memory_utilization

    if spec.gpu.mode == "none" and "gpu_memory_utilization" not in spec.server:
        return None
    return gpu_memory_utilization(spec)


def build_state(project, engine_address: str) -> State:
    from orchestrator.gateway.routes import _address
    from orchestrator.sleep_api import supports_sleep

    gateway = project.resolved.gateway
    instances = []
    for spec in on_demand(project):
        address = _address(spec, {})
        model = spec.served_model or spec.server.get("model")
        if not address or not isinstance(model, str):
            continue
        container = project.resolved.container_of(spec.name)
        instances.append(OnDemand(
            name=spec.name, model=model, aliases=spec.model_aliases, address=address, container=container.name,
            sleep=supports_sleep(spec),
            idle_stop_after=spec.workload.idle_stop_after, gpus=_gpus(spec), share=_share(spec),
            log_file=container.host_log_file, start_timeout_s=float(spec.workload.health.start_period_s) + 60,
            stop_timeout_s=int(spec.workload.stop_timeout or 30)))
    residents = tuple(Resident(s.name, _gpus(s), _share(s)) for s in project.resolved.instances
                      if s.enabled and not s.workload.on_demand and s.name in project.resolved.containers)
    # `gpu_ids = "all"` shares a GPU with every instance that names one: its key set holds them all.
    held = [i.gpus for i in instances] + [r.gpus for r in residents]
    named = {g for gpus in held for g in gpus if g not in ("all", "host")}
    instances = [i.replace(gpus=i.gpus + tuple(sorted(named))) if i.gpus == ("all",) else i for i in instances]
    residents = tuple(r.replace(gpus=r.gpus + tuple(sorted(named))) if r.gpus == ("all",) else r for r in residents)
    keys = os.path.join(gateway.secret_dir, "keys") if gateway is not None and gateway.api_key else ""
    return State(project=project.name, engine_address=engine_address,
                 hold_s=float(gateway.on_demand_wait) if gateway is not None else 300.0,
                 instances=tuple(instances), residents=residents, keys_file=keys)


def state_path(project) -> str:
    gateway = project.resolved.gateway
    assert gateway is not None
    return os.path.join(gateway.host_dir, CONTAINER_STATE_DIR, STATE_FILE)


REMOTE_ENGINE = "on-demand instances need a local Docker engine (the activator runs next to it), not {address}"


def _wanted(project, backend, observed: dict | None) -> service.Wanted:
    from orchestrator.run_lock import lock_state_dir

    address = backend.engine.address
    state = build_state(project, address)
    path = state_path(project)
    binds = [f"{os.path.dirname(path)}:{os.path.dirname(path)}:ro"]
    sock = service.socket_path(address)
    if sock is None:
        raise OrchestratorError(REMOTE_ENGINE.format(address=address))
    binds.append(f"{sock}:{sock}")
    lock_dir = str(lock_state_dir() / "docker-runs")
    os.makedirs(lock_dir, exist_ok=True)
    binds.append(f"{lock_dir}:{lock_dir}")
    if state.keys_file:
        secret = os.path.dirname(state.keys_file)
        binds.append(f"{secret}:{secret}:ro")
    for directory in service.log_dirs([i.log_file for i in state.instances]):
        binds.append(f"{directory}:{directory}:ro")
    env = (("VLLM_ORCH_STATE_DIR", str(lock_state_dir())), ("DOCKER_HOST", address))
    # A running activator keeps its ports; one that is not running (its port taken after a reboot,
    # say, so it exits and Docker restarts it in a loop) is made again on ports free now.
    ports = (service.ports_of(observed) if (observed or {}).get("State") == "running" else None) or service.free_ports()
    return service.Wanted(project.name, project.resolved.config_file, path, tuple(binds), env, ports=ports)


def plan_for_up(project, backend) -> service.Step | None:
    """The activator's step (from the backend's last observe): None when none is wanted or there."""
    observed = service.find(backend.last_rows)
    if not wanted_here(project):
        return service.plan(None, observed, None)
    image_id = backend.image_ids([service.IMAGE], missing_ok=True).get(service.IMAGE)
    return service.plan(_wanted(project, backend, observed), observed, image_id)


def preflight(project, backend) -> list[str]:
    """Before anything changes: the activator's image, and an engine it can run next to."""
    if not wanted_here(project):
        return []
    found = []
    if not backend.image_ids([service.IMAGE], missing_ok=True):
        found.append(f"activator: image {service.IMAGE!r} not found on this Docker host "
                     "(build it: scripts/build-images.sh activator)")
    if service.socket_path(backend.engine.address) is None:
        found.append(REMOTE_ENGINE.format(address=backend.engine.address))
    return found


def as_action(step: service.Step) -> Action:
    return Action(step.kind, service.ACTIVATOR_NAME, step.reasons)


def apply_for_up(project, backend, step: service.Step):
    """Write the state file, then carry the step out: an ActionResult (a failure in it)."""
    from orchestrator.backends.docker import ActionResult

    action = as_action(step)
    try:
        if step.wanted is not None:
            write(step.wanted.state_path, build_state(project, backend.engine.address))
        return ActionResult(action, True, service.apply(backend.engine, step))
    except (OrchestratorError, OSError) as exc:
        return ActionResult(action, False, str(exc), error_exit_code=getattr(exc, "exit_code", 1))


def gateway_extras(project, backend) -> dict[str, Any]:
    """What the gateway's HAProxy needs: the activator's address, its agent port and the
    on-demand instances (empty when there is no activator)."""
    from orchestrator.labels import LABEL_PROJECT, LABEL_ROLE

    rows = backend.read(lambda e: e.containers(labels=[f"{LABEL_PROJECT}={project.name}",
                                                       f"{LABEL_ROLE}={service.ACTIVATOR_NAME}"]))
    ports = service.ports_of(rows[0]) if rows and wanted_here(project) else None
    if ports is None:
        return {}
    return {"activator": f"127.0.0.1:{ports[0]}", "agent_port": ports[1],
            "on_demand": tuple(sorted(s.name for s in on_demand(project)))}


def remove_for_down(backend, names: tuple[str, ...], config_file: str | None):
    from orchestrator.backends.docker import ActionResult
    from orchestrator.labels import LABEL_CONFIG
    from orchestrator.plan import REMOVE

    if names and service.ACTIVATOR_NAME not in names:
        return None
    observed = service.find(backend.last_rows)
    if observed is None:
        return None
    made_by = (observed.get("Labels") or {}).get(LABEL_CONFIG)
    if config_file is not None and made_by not in (None, "", config_file):
        return None
    action = Action(REMOVE, service.ACTIVATOR_NAME, ("down",))
    try:
        service.apply(backend.engine, service.Step(REMOVE, ("down",), observed=observed))
    except OrchestratorError as exc:
        return ActionResult(action, False, str(exc), error_exit_code=exc.exit_code)
    return ActionResult(action, True, "stopped and removed")


def decorate_rows(rows: list[dict[str, Any]], project, backend, *, own_row: bool = True) -> None:
    """`ps`: the on-demand instances' states in words (`failed (on demand)` with its error as the
    cause), `last_request`, and the activator's row."""
    observed = service.find(backend.last_rows)
    seen = {s["name"]: s for s in service.snapshot(observed)}
    names = {s.name for s in on_demand(project)} if project is not None else set(seen)
    for row in rows:
        if row.get("name") not in names:
            continue
        found = seen.get(row["name"], {})
        phase = found.get("phase")
        row["on_demand"] = True
        row["on_demand_known"] = bool(found)  # the activator answered for it (else its state is unknown)
        row["last_request"] = found.get("last_request")
        row["last_start_s"] = found.get("last_start_s")
        if phase == "starting":
            row["state"] = "starting (request)"
        elif phase == "sleeping":
            row["state"] = "sleeping"
        elif row.get("state") in ("created", "exited") and phase == "failed":
            # Its last start failed: say so, and why (the activator's error names the log's last line).
            row["state"] = "failed (on demand)"
            row["cause"] = found.get("last_error") or row.get("cause")
        elif row.get("state") in ("created", "exited") and phase in (None, "stopped"):
            row["state"] = "stopped (on demand)"
            row["cause"] = None
    if observed is not None and own_row:
        rows.append(service.status_row(observed, configured=project is not None and wanted_here(project)))
