"""The workflows: what `validate`, `up`, `down`, `ps` and `logs` do, as functions of data.

The CLI parses arguments into `Inputs` and a request, calls one function here and prints what
it returns; nothing here prints or exits (messages go through the `say` callback). Instances are
reached only through a backend (`backends/base.py`'s `Backend`: Docker's containers, or the
in-container launcher's processes), made by `backend_for` from the project's backend name; each
workflow is: lock, observe, plan (pure), preflight (every problem at once), apply, wait. `up` is
Docker's workflow (it builds a docker.ContainerRun), `launch` the launcher's (a local.LaunchRun);
`down`, `ps` and `logs` serve both. Which target a config is checked for (a backend, or an export
such as Kubernetes) is a `targets.Target`, named apart from the backends.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from orchestrator.backends.base import Say, backend_for
from orchestrator.backends.base import quiet as _quiet
from orchestrator.errors import ConfigError, OrchestratorError, Problem
from orchestrator.targets import DOCKER, LOCAL, Target
from orchestrator.value import Value, field

if TYPE_CHECKING:
    from orchestrator.backends.base import Removed
    from orchestrator.backends.docker import ActionResult, DockerBackend
    from orchestrator.backends.local import LaunchStep
    from orchestrator.plan import Action
    from orchestrator.project import Project
    from orchestrator.resolve import Resolved
    from orchestrator.spec import InstanceSpec
    from orchestrator.start_order import StartAfter


class Inputs(Value):
    """Where the config comes from: what every command's -c / --override / --set / -p say."""

    config: str | None = None  # None: $AUTO_INFER_VLLM_CONFIG
    overrides: tuple[str, ...] = ()
    sets: tuple[str, ...] = ()
    project: str | None = None
    text: str | None = field(default=None, repr=False)  # --stdin-config: the file's text as it will be

    def config_path(self, *, required: bool = True) -> Path | None:
        from orchestrator.config.loader import CONFIG_ENV, resolve_config_path

        path = resolve_config_path(self.config)
        if path is None and required:
            raise ConfigError([Problem("error", "", f"no config file: pass -c FILE or set {CONFIG_ENV}",
                                       source="vllm-orch")])
        return path


# ----------------------------------------------------------------------------- opening a project
def open_project(inputs: Inputs, *, target: Target | None = DOCKER, strict: bool = True,
                 checks: bool = True, on_host: bool = True) -> Project:
    """The project of `inputs`, checked and rendered for `target` (None: the config's own backend);
    `on_host` False: a review elsewhere (host facts are warnings)."""
    from orchestrator.project import open_project as open_

    path = inputs.config_path()
    assert path is not None  # required: config_path raises without one
    return open_(path, overrides=list(inputs.overrides), sets=list(inputs.sets),
                 project_name=inputs.project, target=target, strict=strict, checks=checks, text=inputs.text,
                 on_host=on_host)


def check_with_tables(project: Project, backend: DockerBackend, image_ids: dict[str, str], *, strict: bool = True,
                      selected: set[str] | None = None, options_block: bool = True, say: Say = _quiet) -> Project:
    """Ask each image (cached per image id) for its vLLM option table, then check the project
    against them: the argv follows vLLM's real options and unknown options become errors."""
    from orchestrator.option_cache import image_table
    from orchestrator.project import check_project

    master = project.resolved.master
    containers = project.resolved.containers
    tables, notes = {}, []
    for image, image_id in sorted(image_ids.items()):
        users = [containers[i.name] for i in project.resolved.instances if i.name in containers
                 and containers[i.name].image == image and (selected is None or i.name in selected)]
        if not users:
            continue
        pixi = [m for m in users[0].mounts
                if master.pixi_project_dir and m.target == master.pixi_project_dir.rstrip("/")]
        answer = image_table(backend, image, image_id, pixi_project_dir=master.pixi_project_dir,
                             pixi_environment=master.pixi_environment, mounts=pixi, progress=say)
        if answer.table is not None:
            tables[image] = answer.table
        notes.append(answer.note)
    return check_project(project, tables=tables, table_notes=notes, strict=strict, options_block=options_block)


def open_checked(inputs: Inputs, *, target: Target | None = DOCKER, strict: bool = True, offline: bool = False,
                 gpus: bool = False, on_host: bool = False, say: Say = _quiet) -> Project:
    """For validate/plan/compose/k8s: the project checked against its images' vLLM when Docker can
    be asked; otherwise (or with --offline) by the contract's rules, saying why. With `gpus`
    (validate), also against the GPUs on the host, where they can be listed. `on_host`
    (validate without --offline): this machine runs the instances, so what it lacks (host paths,
    model directories, the image) is an error; otherwise a warning, and the output is the same."""
    from orchestrator.project import check_project

    first = open_project(inputs, target=target, strict=strict, checks=False, on_host=on_host)

    def with_gpus(project: Project, engine: DockerBackend | None = None, engine_note: str = "") -> Project:
        if gpus:
            from orchestrator.gpu_check import validate_gpus

            problems, note = validate_gpus(project, engine, offline=offline, engine_note=engine_note)
            project.problems = project.problems + problems
            project.gpu_check = note
        return project

    def without_tables(reason: str, problems: tuple[Problem, ...] = (),
                       engine: DockerBackend | None = None) -> Project:
        project = check_project(first, strict=strict, extra=problems)
        if reason:
            project.option_check = f"image check skipped ({reason}); " + project.option_check
        if on_host and engine is not None:
            project.problems = project.problems + _busy_ports(project, engine)
        return with_gpus(project, engine_note=reason)

    if not first.runs_containers:
        return without_tables("")
    if offline:
        return without_tables("--offline")
    from orchestrator.backends.docker_preflight import image_missing
    from orchestrator.errors import DockerUnavailable

    images = askable_images(c.image for c in first.resolved.containers.values())
    try:
        engine = backend_for(DOCKER)
        image_ids = engine.image_ids(images, missing_ok=True)
    except DockerUnavailable as exc:
        return without_tables(str(exc))
    # An image this engine lacks is a host fact: each one named, at the first instance that runs it.
    users: dict[str, str] = {}
    for spec in first.resolved.instances:
        container = first.resolved.containers.get(spec.name)
        if spec.enabled and container and container.image in images:
            users.setdefault(container.image, spec.name)
    missing = tuple(Problem("error" if on_host else "warning", f"instance.{name}.docker.image", image_missing(image),
                            source=str(first.loaded.path), host_fact=True)
                    for image, name in users.items() if image not in image_ids)
    if missing:
        return without_tables("an image is not on this Docker host", missing, engine)
    project = check_with_tables(first, engine, image_ids, strict=strict, say=say)
    if on_host:
        project.problems = project.problems + _busy_ports(project, engine)
    return with_gpus(project, engine)


def _busy_ports(project, engine) -> list[Problem]:
    """validate on the host: published ports something other than this project holds (checked
    where the engine is this machine; a remote engine's ports are `up`'s to find)."""
    from urllib.parse import urlsplit

    from orchestrator.backends.engine import is_local_address
    from orchestrator.config.validate import busy_port_problems
    from orchestrator.labels import LABEL_URL

    if not project.runs_containers or not is_local_address(engine.engine.address):
        return []
    held = set()
    for observed in engine.observe(project.name):
        url = observed.labels.get(LABEL_URL) if observed.running else None
        try:
            port = urlsplit(url).port if url else None
        except ValueError:
            port = None
        if port:
            held.add(port)
    return busy_port_problems(project.resolved, held, str(project.loaded.path))


def askable_images(images) -> set[str]:
    """The images worth asking the engine about: a reference it would refuse ("--privileged",
    capitals) is the config's error, which the checks report with its key, not an engine error."""
    from orchestrator.config.settings_check import image_problem

    return {image for image in images if image and image_problem(image) is None}


def project_for_status(inputs: Inputs) -> tuple[str, Project | None]:
    """(project name, project or None) for ps/down: from the config when there is one, else -p
    alone will do (names and specs only: no validation needed)."""
    path = inputs.config_path(required=not inputs.project)
    if path is None:
        return inputs.project or "", None  # config_path required one or the other
    project = open_project(inputs, strict=False, checks=False)
    return project.name, project


# ----------------------------------------------------------------------------- up
class UpRequest(Value):
    names: tuple[str, ...] = ()
    wait: bool = False
    timeout: float = 1800
    remove_orphans: bool = False
    dry_run: bool = False
    no_preflight: bool = False
    adopt: bool = False
    rows: bool = False  # end with `ps`'s rows (one more list call): for --json


class UpOutcome(Value, frozen=False):
    project: str
    actions: list[Action]
    start_order: list[StartAfter] = field(factory=list)  # who starts after whom, and why
    results: list[ActionResult] = field(factory=list)
    waited: dict[str, float] = field(factory=dict)
    wait_error: OrchestratorError | None = None
    instances: list[dict[str, Any]] = field(factory=list)  # `ps --json`'s rows after the run, for provisioning tools

    @property
    def failed(self) -> list:
        return [r for r in self.results if not r.ok]

    @property
    def changed(self) -> bool:
        from orchestrator.gateway.service import RELOAD
        from orchestrator.plan import CHANGES

        return any(r.action.kind in CHANGES or r.action.kind == RELOAD for r in self.results)

    def to_json(self) -> dict[str, Any]:
        done = {r.action.instance: r for r in self.results}
        doc: dict[str, Any] = {
            "project": self.project,
            "actions": [done[a.instance].to_json() if a.instance in done else {**a.to_json(), "ok": True}
                        for a in self.actions],
            "start_order": [edge.to_json() for edge in self.start_order],
            "healthy_after_s": self.waited,
            "instances": self.instances,
        }
        if self.wait_error:
            doc["error"] = str(self.wait_error)
        return doc


def up(inputs: Inputs, request: UpRequest, *, say: Say = _quiet, report: Callable[[Any], None] | None = None,
       progress: Say = _quiet) -> UpOutcome:
    """Reconcile the engine with the config: check, plan under the run lock, preflight (every
    problem at once: PreflightError), apply, then (with `wait`) wait for /health. Raises for
    anything found before a change; failures of single instances are in the outcome
    (`raise_for_failures` turns them into the error)."""
    from orchestrator.backends.docker import ContainerRun
    from orchestrator.errors import OwnedElsewhere, PreflightError
    from orchestrator.plan import CREATE, RECREATE, Action, owned_elsewhere, ownership_message, start_after

    project = open_project(inputs, target=DOCKER, checks=False)  # which images? (the full checks follow, with their tables)
    selected = project.select(list(request.names))
    if not project.resolved.master.enable:
        say("master.enable = false: every instance is disabled (their containers are removed, logs kept)")
    backend = backend_for(DOCKER)  # a DockerBackend: its images and its engine's run lock are its own
    wanted = [i for i in project.resolved.instances if i.enabled and (selected is None or i.name in selected)]
    # A missing image is one of the preflight's problems, reported with the others.
    images = askable_images(project.resolved.container_of(i.name).image for i in wanted)
    image_ids = backend.image_ids(images, missing_ok=True)
    # The argv always follows the image's option table (so --no-preflight cannot change it and
    # recreate a loaded model); --no-preflight only stops option problems from blocking.
    project = check_with_tables(project, backend, image_ids, selected=selected, strict=False,
                                options_block=not request.no_preflight, say=say)
    # Facts about this host (a missing host path or model directory) are the preflight's to
    # report, with the engine's (a missing image, a busy port): every problem in one run. A dry
    # run has no preflight: they stop it here, as before.
    if any(request.dry_run or not p.host_fact for p in project.errors):
        raise ConfigError(project.problems)
    project.problems = [p for p in project.problems if not p.host_fact]
    wanted = [i for i in project.resolved.instances if i.enabled and (selected is None or i.name in selected)]
    for problem in project.problems:
        say(problem.format())

    def await_healthy(action: Action) -> None:
        """A start chain's wait: the instance it waits for answers /health (raises otherwise)."""
        healthy([action.spec])

    run = ContainerRun(image_ids, remove_orphans=request.remove_orphans, blocking=not request.no_preflight,
                       on_done=report, progress=progress, await_healthy=await_healthy)

    def plan() -> list:
        observed = backend.observe(project.name)
        foreign = owned_elsewhere(observed, project.resolved.config_file)
        if foreign and not request.adopt:
            raise OwnedElsewhere(ownership_message(project.name, foreign, project.resolved.config_file))
        return backend.plan(project, selected, observed, run)

    def rows() -> list[dict[str, Any]]:
        """`ps --json`'s rows, /health asked where Docker still says "starting" (so right after
        `--wait` they say healthy): one call here instead of one more process for the caller."""
        found = backend.status(project.name, project.resolved)
        side = gateway.ps_row(project.name, project, backend)  # the gateway's row, as `ps` shows it
        activator.decorate_rows(found, project, backend)  # on-demand states, the activator's row
        watcher = monitoring.ps_row(project, backend)  # Prometheus' row
        return found + [row for row in (side, watcher) if row is not None]

    from orchestrator.activator import workflow as activator
    from orchestrator.gateway import workflow as gateway
    from orchestrator.monitoring import workflow as monitoring

    if request.dry_run:
        actions = plan()
        from orchestrator.backends.docker_preflight import missing_images

        problems = missing_images([a for a in actions if a.kind in (CREATE, RECREATE)], image_ids)
        if problems:  # the plan of a missing image would not say what a rebuilt one changes
            raise PreflightError(problems=problems)
        step = gateway.plan_for_up(project, backend)
        watch_step = monitoring.plan_for_up(project, backend)
        side = activator.plan_for_up(project, backend)
        extra = ([activator.as_action(side)] if side else []) + ([gateway.as_action(step)] if step else []) \
            + ([monitoring.as_action(watch_step)] if watch_step else [])
        return UpOutcome(project.name, actions + extra, start_after(actions),
                         instances=rows() if request.rows else [])

    import time

    from orchestrator.backends.engine import is_local_address
    from orchestrator.waiter import wait_healthy

    # One deadline for the whole run: the waits inside start chains (instances sharing a GPU
    # start in turn) and --wait share --timeout.
    deadline = time.monotonic() + request.timeout

    def observe() -> dict:
        return {o.instance: o for o in backend.observe(project.name)}

    def healthy(specs: list) -> dict[str, float]:
        return wait_healthy(specs, observe, timeout=max(0.0, deadline - time.monotonic()), progress=progress,
                            log_tail=lambda spec: log_tail_for(project.resolved, spec, backend, 200),
                            probe_http=is_local_address(backend.engine.address))

    # Observe, plan and change under the lock, so a concurrent up/down plans against what this one did.
    with backend.lock(project.name, say):
        actions = plan()
        # The gateway's image and port are checked before any change, with the instances' problems.
        gateway_problems: list[str] = []
        try:
            step = gateway.plan_for_up(project, backend)
            if step is not None:
                gateway.preflight(step)
        except PreflightError as exc:
            step, gateway_problems = None, exc.problems
        watch_step, watch_problems = monitoring.check(project, backend)  # Prometheus' image and port likewise
        gateway_problems = gateway_problems + watch_problems + activator.preflight(project, backend)
        try:
            notes = backend.preflight(project, actions, run)
        except PreflightError as exc:
            raise PreflightError(problems=gateway_problems + exc.problems) from None
        if gateway_problems:
            raise PreflightError(problems=gateway_problems)
        for note in notes:
            say(note)
        order = start_after(actions)
        results = backend.apply(project, actions, run)
        sides = []  # the project's own service containers, each applied after what it depends on
        side = activator.plan_for_up(project, backend)  # before the gateway, which routes to it
        if side is not None:
            sides.append(activator.apply_for_up(project, backend, side))
        if step is not None:  # planned again: the routes follow what this run started or removed
            step = gateway.plan_for_up(project, backend, fresh=True)
        if step is not None:
            sides.append(gateway.apply_for_up(step, backend))
        if watch_step is not None:  # planned again: its targets are the instances this run left
            watch_step = monitoring.plan_for_up(project, backend, fresh=True)
        if watch_step is not None:
            sides.append(monitoring.apply_for_up(watch_step, backend))
        for result in sides:
            if result.action.kind != "noop" or not result.ok:
                (report or _quiet)(result)
        actions, results = actions + [r.action for r in sides], results + sides
        outcome = UpOutcome(project.name, actions, order, results)
    chain_errors = [r.health_error for r in results if r.health_error is not None]
    outcome.wait_error = chain_errors[0] if chain_errors else None
    if request.wait and not outcome.failed and not outcome.wait_error:
        try:
            # On-demand instances start on a request, not here.
            outcome.waited = healthy([s for s in wanted if not (s.workload and s.workload.on_demand)])
            monitoring.after_wait(project, backend)  # what each image's vLLM exports: validate's metric check
            gateway_spec = gateway.spec_of(project)
            if gateway_spec is not None:
                outcome.waited[gateway.GATEWAY_NAME] = round(
                    gateway.wait_healthy(gateway_spec, max(1.0, deadline - time.monotonic()), outcome.waited), 1)
        except OrchestratorError as exc:
            outcome.wait_error = exc
    if request.rows:
        outcome.instances = rows()
    return outcome


def raise_for_failures(command: str, results: Sequence[Removed] | Sequence[ActionResult], message: str) -> None:
    """The error ending an up/down some of whose instances failed. The engine lost part-way is
    exit 3 with what was done and what was not (each instance has had its line already);
    otherwise the failures' own exit code when they agree (4: e.g. an image removed meanwhile), else 1."""
    from orchestrator.errors import DockerUnavailable

    failed = [r for r in results if not r.ok]
    if not failed:
        return
    if any(r.engine_lost for r in failed):
        done = [r.instance for r in results if r.ok]
        raise DockerUnavailable(
            f"lost the Docker engine part-way: {len(done)} of {len(results)} instance(s) done"
            + (f" ({', '.join(done)})" if done else "")
            + f"; not done: {', '.join(r.instance for r in failed)}; run `{command}` again once the engine is back")
    error = OrchestratorError(message)
    codes = {r.error_exit_code for r in failed}
    if len(codes) == 1 and 0 not in codes:
        error.exit_code = codes.pop()
    raise error


def log_tail_for(resolved: Resolved, spec: InstanceSpec, backend: DockerBackend, lines: int) -> str:
    """The instance's last log lines, then what the engine captured (the entrypoint's own errors)."""
    from orchestrator.logs import tail_lines

    text = "\n".join(tail_lines(backend.log_file(resolved, spec), lines))
    engine = backend.engine_log_tail(resolved.container_of(spec.name).name, lines)
    return text + ("\n" + engine if engine.strip() else "")


# ----------------------------------------------------------------------------- down
class DownOutcome(Value):
    project: str
    results: Sequence[Removed]  # one per instance
    left: dict[str, list[str]]  # config file -> names of the containers another config made (not touched)
    json_key: str = "removed"  # `down --json`'s key for the results (base.Removal)
    failure: str = ""  # the error's text when some failed


def down(inputs: Inputs, names: tuple[str, ...] = (), *, backend: str | None = None, timeout: float | None = None,
         report: Callable[[str], None] | None = None, say: Say = _quiet) -> DownOutcome:
    """Stop and remove this project's instances (Docker: of this config only); logs stay.
    `names` are not checked against the config: `down NAME` must also reach an instance removed
    from it. `backend`: the one `--backend` names (None: Docker)."""
    name, project = project_for_status(inputs)
    chosen = backend_for(backend or DOCKER)
    config_file = project.resolved.config_file if project else None
    removal = chosen.remove(name, set(names) or None, config_file=config_file,
                            timeout=timeout, report=report or _quiet, say=say)
    results, failure = list(removal.results), removal.failure
    sides: list = []  # the project's own service containers, found in the removal's own list call
    if chosen.name == DOCKER:
        from orchestrator.activator.workflow import remove_for_down as remove_activator
        from orchestrator.gateway.workflow import remove_for_down as remove_gateway
        from orchestrator.monitoring.workflow import remove_for_down as remove_monitoring

        # The activator's starts take the project's run lock, which the removal held: a start it
        # begins after that finds its container gone, and it is removed next.
        sides = [remove_activator(chosen, names, config_file), remove_gateway(name, chosen, names, config_file),
                 remove_monitoring(chosen, names, config_file)]
    for removed in sides:
        if removed is None:
            continue
        (report or _quiet)(removed.line())
        results.append(removed)
        failure = failure or ("" if removed.ok else removed.detail)
    return DownOutcome(name, results, removal.left, removal.json_key, failure)


# ----------------------------------------------------------------------------- ps
class StatusOutcome(Value):
    project: str
    rows: list  # one dict per instance
    columns: tuple  # the table's columns, the backend's


def ps(inputs: Inputs, *, backend: str | None = None) -> StatusOutcome:
    """One row per instance: what runs (Docker: our containers and Compose-export ones; local:
    the launcher's processes) joined with the config, `/health` asked where it is not known yet."""
    name, project = project_for_status(inputs)
    chosen = backend_for(backend or DOCKER)
    rows = chosen.status(name, project.resolved if project else None)
    if chosen.name == DOCKER:
        from orchestrator.activator.workflow import decorate_rows
        from orchestrator.gateway.workflow import ps_row
        from orchestrator.monitoring.workflow import ps_row as monitoring_row

        decorate_rows(rows, project, chosen)  # on-demand states, the activator's row
        for row in (ps_row(name, project, chosen), monitoring_row(project, chosen)):
            if row is not None:
                rows.append(row)
    return StatusOutcome(name, rows, chosen.status_columns)


# ----------------------------------------------------------------------------- top
class TopView:
    """`top`'s snapshots of one project (top.Top over Docker's `ps` rows)."""

    def __init__(self, project: str, snapshot: Callable[[], list[dict[str, Any]]]):
        self.project = project
        self.snapshot = snapshot


def top(inputs: Inputs, *, timeout: float = 2.0) -> TopView:
    """Each snapshot: `ps`'s rows (one list call), then every running instance's /metrics at once."""
    from orchestrator.top import Top

    name, project = project_for_status(inputs)
    backend = backend_for(DOCKER)
    resolved = project.resolved if project else None
    from orchestrator.activator.workflow import decorate_rows

    def status() -> list[dict[str, Any]]:
        rows = backend.status(name, resolved)
        decorate_rows(rows, project, backend, own_row=False)  # on-demand states and LAST START
        _unpublished_metrics_urls(rows, resolved, backend)
        return rows

    view = Top(status, timeout)
    return TopView(name, view.snapshot)


def _unpublished_metrics_urls(rows: list[dict[str, Any]], resolved: Any, backend: Any) -> None:
    """Instances kept off the host (`publish = false`, behind the gateway) have no URL; on a local
    engine `top` reads their /metrics at the container's address, as Prometheus does."""
    from orchestrator.backends.engine import is_local_address
    from orchestrator.gateway.service import from_rows

    if resolved is None or not any(not r.get("url") for r in rows) or not is_local_address(backend.engine.address):
        return
    addresses = from_rows(backend.last_rows)[1]
    for row in rows:
        spec = resolved.instance(row["name"])
        if not row.get("url") and spec is not None and row["name"] in addresses:
            row["metrics_url"] = f"http://{addresses[row['name']]}:{spec.port}"


# ----------------------------------------------------------------------------- logs
def log_path(inputs: Inputs, name: str, *, backend: Target | None, follow: bool) -> Path:
    """Where the instance's log file is on this machine; an error saying why when there is none."""
    import os

    project = open_project(inputs, target=backend, strict=False)
    from orchestrator.gateway.workflow import GATEWAY_NAME, log_file

    gateway_log = log_file(project) if name == GATEWAY_NAME and project.resolved.instance(name) is None else None
    if gateway_log is not None:
        if not os.path.lexists(gateway_log) and not follow:
            raise OrchestratorError(f"no log yet for the gateway ({gateway_log}): it has not been started")
        return Path(gateway_log)
    project.select([name])
    spec = project.resolved.instance(name)
    if spec is None:  # select() refused it already
        raise OrchestratorError(f"no instance {name!r}")
    chosen = backend_for(project.backend)
    path = chosen.log_file(project.resolved, spec)
    if not os.path.lexists(path) and not follow:
        raise OrchestratorError(chosen.missing_log(spec, path))
    return path


def side_log_reader(inputs: Inputs, name: str, *, backend: Target | None) -> Callable[[int | None], list[str]] | None:
    """`logs monitoring` / `logs activator`: a reader of that container's output (last N lines, or
    all) from the engine; Prometheus and the activator write to their standard output, where the
    gateway and the instances have files of their own. None for any other name, or an instance
    of that name."""
    from orchestrator.activator.service import ACTIVATOR_NAME
    from orchestrator.backends.engine_errors import EngineError, EngineTimeout
    from orchestrator.labels import LABEL_PROJECT, LABEL_ROLE
    from orchestrator.monitoring.settings import MONITORING_NAME

    if name not in (MONITORING_NAME, ACTIVATOR_NAME):
        return None
    project = open_project(inputs, target=backend, strict=False)
    if project.resolved.instance(name) is not None or project.backend != DOCKER:
        return None
    chosen = backend_for(DOCKER)
    labels = [f"{LABEL_PROJECT}={project.name}", f"{LABEL_ROLE}={name}"]
    rows = chosen.read(lambda e: e.containers(labels=labels))
    if not rows:
        raise OrchestratorError(f"no {name} container in project {project.name!r} (`up` makes it when the config "
                                f"asks for it); its output goes with its container")
    current = [rows[0]["Id"]]

    def lines(tail: int | None) -> list[str]:
        try:
            data = chosen.call(lambda e: e.logs(current[0], tail=tail))
        except (EngineError, EngineTimeout) as exc:
            if isinstance(exc, EngineError) and exc.not_found:  # made again by `up` (--follow goes on with it)
                again = chosen.read(lambda e: e.containers(labels=labels))
                if again:
                    current[0] = again[0]["Id"]
                return []
            raise OrchestratorError(f"Docker engine error: {exc}") from None
        return data.decode(errors="replace").splitlines()

    return lines


# ----------------------------------------------------------------------------- launch
class LaunchOutcome(Value):
    project: str | None = None  # None: nothing to launch (no config, or launching is off)
    steps: list[LaunchStep] = field(factory=list)  # in the order they run
    exit_code: int = 0  # the launcher's (after the launch; 0 for a dry run)


def launch(inputs: Inputs, names: tuple[str, ...] = (), *, dry_run: bool = False, timeout: float = 1800,
           say: Say = _quiet) -> LaunchOutcome:
    """The in-container launcher (the boot hook): decide, then (unless `dry_run`) start the
    instances as processes. The hook's contract: no config -> nothing, quietly; the default
    file missing -> a warning; both launch nothing and exit 0, so a container without vLLM
    settings still boots. An explicit -c must exist (a config error)."""
    from orchestrator.config.loader import resolve_config_path

    path = resolve_config_path(inputs.config)
    if path is None:
        return LaunchOutcome()
    if not path.exists() and inputs.config is None:
        say(f"vllm-orch launch: warning: config {path} not found; nothing launched")
        return LaunchOutcome()
    project = open_project(inputs, target=LOCAL)
    for problem in project.problems:
        say(problem.format())
    if not project.resolved.master.enable:
        say("vllm-orch launch: master.enable = false; nothing launched")
        return LaunchOutcome()
    selected = project.select(list(names))
    from orchestrator.backends.local import LaunchRun

    backend = backend_for(LOCAL)
    run = LaunchRun(say, health_timeout=timeout, named=selected is not None)
    steps = backend.plan(project, selected, backend.observe(project.name), run)
    if dry_run:
        return LaunchOutcome(project.name, steps)
    for note in backend.preflight(project, steps, run):
        say(note)
    code = backend.apply(project, steps, run)
    return LaunchOutcome(project.name, steps, code)
