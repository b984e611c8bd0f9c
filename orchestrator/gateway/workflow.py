"""The gateway's part of `up`, `down`, `ps` and `logs`: the hook points app.py calls.

Each takes the project (or its name) and the Docker backend and does the gateway's share after
the instances' (routes follow what the instances' run made), so app.py only calls in here.
"""

from __future__ import annotations

from typing import Any, Collection

from orchestrator.errors import OrchestratorError, PreflightError
from orchestrator.gateway import service
from orchestrator.gateway.settings import GATEWAY_NAME, GatewaySpec
from orchestrator.labels import LABEL_CONFIG
from orchestrator.plan import Action


def spec_of(project) -> GatewaySpec | None:
    gateway = project.resolved.gateway
    if gateway is None:
        return None
    from orchestrator.activator.workflow import on_demand

    names = tuple(sorted(s.name for s in on_demand(project)))
    return gateway.replace(on_demand=names) if names else gateway


def plan_for_up(project, backend, *, fresh: bool = False) -> service.GatewayPlan | None:
    """The gateway's step for this `up` (None: no gateway, none running). Its image must exist.
    The gateway's container is read from the backend's last observe (no call of its own) unless
    `fresh` (after the instances changed: their addresses may be new) and a gateway is wanted."""
    gateway = spec_of(project)
    image_id = None
    if gateway is not None:
        try:
            image_id = backend.image_ids([gateway.image])[gateway.image]
        except PreflightError:
            raise PreflightError(f"gateway: image {gateway.image!r} not found on this Docker host "
                                 "(build it: scripts/build-images.sh gateway)") from None
    if fresh and gateway is not None:
        observed, addresses = service.observe(backend.engine, project.name)
    else:
        observed, addresses = service.from_rows(backend.last_rows)
    if gateway is not None and gateway.on_demand:  # the activator: each on-demand model's backup server
        from orchestrator.activator.workflow import gateway_extras

        gateway = gateway.replace(**gateway_extras(project, backend))
    return service.plan(gateway, observed, image_id=image_id, instances=project.resolved.instances,
                        addresses=addresses)


def as_action(step: service.GatewayPlan) -> Action:
    """The step in the instances' Action shape, for `up --dry-run` and `up --json`."""
    return Action(step.kind, GATEWAY_NAME, step.reasons)


def apply_for_up(step: service.GatewayPlan, backend):
    """Carry the step out; an ActionResult like the instances' (a failure is in it, not raised)."""
    from orchestrator.backends.docker import ActionResult

    action = as_action(step)
    try:
        return ActionResult(action, True, service.apply(backend.engine, step))
    except OrchestratorError as exc:
        return ActionResult(action, False, str(exc), error_exit_code=exc.exit_code)


def remove_for_down(project_name: str, backend, names: tuple[str, ...], config_file: str | None = None):
    """`down` (all, or naming `gateway`): the gateway's removal result, None when there is none."""
    from orchestrator.backends.docker import ActionResult
    from orchestrator.plan import REMOVE

    if names and GATEWAY_NAME not in names:
        return None
    observed, _ = service.from_rows(backend.last_rows)  # what `down` just listed
    if observed is None:
        return None
    made_by = (observed.get("Labels") or {}).get(LABEL_CONFIG)
    if config_file is not None and made_by not in (None, "", config_file):
        return None  # another config's gateway, as `down` leaves another config's instances
    action = Action(REMOVE, GATEWAY_NAME, ("down",))
    try:
        service.remove_observed(backend.engine, observed)
    except OrchestratorError as exc:
        return ActionResult(action, False, str(exc), error_exit_code=exc.exit_code)
    return ActionResult(action, True, "stopped and removed")


def ps_row(project_name: str, project, backend) -> dict[str, Any] | None:
    observed, _ = service.from_rows(backend.last_rows)  # what `ps` just listed (any owner)
    if observed is None:
        gateway = spec_of(project) if project is not None else None
        if gateway is None:
            return None
        return {"name": GATEWAY_NAME, "container": gateway.container_name, "owner": "", "state": "not created",
                "exit_code": None, "health": "", "gpus": "", "url": gateway.url, "model": "", "uptime": "",
                "status": "", "configured": True, "cause": None, **service.NOT_WATCHED}
    return service.status_row(observed, configured=project is not None and spec_of(project) is not None)


def log_file(project) -> str | None:
    gateway = spec_of(project)
    return gateway.log_file if gateway is not None else None


def preflight(step: service.GatewayPlan) -> None:
    """Before any change: a new gateway's port must be free (a running one holds its own)."""
    if step.kind == service.CREATE and step.gateway is not None:
        service.check_port_free(step.gateway)


def wait_healthy(gateway: GatewaySpec, timeout: float, healthy: Collection[str] = ()) -> float:
    return service.wait_healthy(gateway, timeout, healthy)
