"""Prometheus' part of `up`, `down` and `ps`: the hook points app.py calls (as gateway/workflow.py's).

`up` plans Prometheus with the instances (its image and port are checked in their preflight,
before anything changes) and applies it last, planned again from what the run made, so its
targets are the instances that now exist.
"""

from __future__ import annotations

from typing import Any

from orchestrator.errors import OrchestratorError, PreflightError
from orchestrator.labels import LABEL_CONFIG, LABEL_OWNER, LABEL_PROJECT, OWNER_UP
from orchestrator.monitoring import service
from orchestrator.monitoring.settings import MONITORING_NAME, MonitoringSpec
from orchestrator.plan import Action


def spec_of(project) -> MonitoringSpec | None:
    return project.resolved.monitoring


def _addresses(rows: list[dict]) -> dict[str, str]:
    from orchestrator.gateway.service import from_rows

    return from_rows(rows)[1]


def _activator(rows: list[dict]) -> str | None:
    """The on-demand activator's HTTP address (host network, 127.0.0.1), when the project has one."""
    from orchestrator.activator.service import find, ports_of

    ports = ports_of(find(rows))
    return f"127.0.0.1:{ports[0]}" if ports else None


def plan_for_up(project, backend, *, fresh: bool = False) -> service.MonitoringPlan | None:
    """Prometheus' step for this `up` (None: none wanted, none running); PreflightError when its
    image is missing. `fresh`: list the project's containers again (after the instances changed)."""
    spec = spec_of(project)
    image_id = None
    if spec is not None:
        try:
            image_id = backend.image_ids([spec.image])[spec.image]
        except PreflightError:
            raise PreflightError(service._missing_image(spec.image)) from None
    rows = backend.last_rows
    if fresh and spec is not None:
        labels = [f"{LABEL_PROJECT}={project.name}", f"{LABEL_OWNER}={OWNER_UP}"]
        rows = backend.read(lambda engine: engine.containers(labels=labels))
    return service.plan(spec, service.from_rows(rows), image_id=image_id, instances=project.resolved.instances,
                        addresses=_addresses(rows), gateway=project.resolved.gateway,
                        activator=_activator(rows))


def preflight(step: service.MonitoringPlan | None) -> None:
    """Before any change: a new Prometheus' port must be free (a running one holds its own)."""
    if step is not None and step.kind == service.CREATE and step.spec is not None:
        service.check_port_free(step.spec)


def check(project, backend) -> tuple[service.MonitoringPlan | None, list[str]]:
    """plan_for_up and preflight, their problems returned to join the instances' (app.up)."""
    try:
        step = plan_for_up(project, backend)
        preflight(step)
        return step, []
    except PreflightError as exc:
        return None, list(exc.problems)


def as_action(step: service.MonitoringPlan) -> Action:
    return Action(step.kind, MONITORING_NAME, step.reasons)


def apply_for_up(step: service.MonitoringPlan, backend):
    """Carry the step out; an ActionResult like the instances' (a failure is in it, not raised)."""
    from orchestrator.backends.docker import ActionResult

    action = as_action(step)
    try:
        return ActionResult(action, True, service.apply(backend.engine, step))
    except OrchestratorError as exc:
        return ActionResult(action, False, str(exc), error_exit_code=exc.exit_code)


def remove_for_down(backend, names: tuple[str, ...], config_file: str | None = None):
    """`down` (all, or naming `monitoring`): the removal's result, None when there is none."""
    from orchestrator.backends.docker import ActionResult
    from orchestrator.plan import REMOVE

    if names and MONITORING_NAME not in names:
        return None
    observed = service.from_rows(backend.last_rows)  # what `down` just listed
    if observed is None or (observed.get("Labels") or {}).get(LABEL_OWNER) != OWNER_UP:
        return None
    made_by = (observed.get("Labels") or {}).get(LABEL_CONFIG)
    if config_file is not None and made_by not in (None, "", config_file):
        return None  # another config's, as `down` leaves another config's instances
    action = Action(REMOVE, MONITORING_NAME, ("down",))
    try:
        service.remove_observed(backend.engine, observed)
    except OrchestratorError as exc:
        return ActionResult(action, False, str(exc), error_exit_code=exc.exit_code)
    return ActionResult(action, True, "stopped and removed (its data dir is kept)")


def ps_row(project, backend) -> dict[str, Any] | None:
    observed = service.from_rows(backend.last_rows)  # what `ps` just listed
    spec = spec_of(project) if project is not None else None
    if observed is None:
        if spec is None:
            return None
        return {"name": MONITORING_NAME, "container": spec.container_name, "owner": "", "state": "not created",
                "exit_code": None, "health": "", "gpus": "", "url": spec.url, "model": "", "uptime": "",
                "status": "", "configured": True, "cause": None, **service.NOT_WATCHED}
    return service.status_row(observed, configured=spec is not None)


def after_wait(project, backend) -> None:
    """`up --wait` saw every instance healthy: record what each image's servers export (validate's
    metric check reads it). Only with `[monitoring]`; never fails `up`."""
    if spec_of(project) is None:
        return
    from orchestrator.monitoring.recordings import record_exports

    try:
        record_exports(project.resolved.instances, _addresses(backend.last_rows))
    except OSError:
        pass  # an unwritable cache: the check falls back to the shipped recordings
