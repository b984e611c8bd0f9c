"""Carries out plans on one Docker engine: observe, plan, preflight, apply, remove, status, one-off
containers. `DockerBackend` is the `docker` implementation of base.Backend. Its jobs live in
three modules: this one (the connection, observe, plan, remove, status, one-off containers),
`docker_preflight.py` (the checks before a change) and `docker_apply.py` (carrying out a plan).

Engine calls grow with N only where they must: one list call observes every instance (labels
carry hash, spec, GPUs, URL and model, so no per-container inspect), one inspect per distinct
image, and create+start (or stop+wait+remove) per instance that actually changes. The calls go
through an `Engine` (engine.py: the standard library on a local socket, the Docker SDK for
other addresses); its errors are translated here, so every failure reaches the user as one
actionable line.
"""

from __future__ import annotations

import _thread  # threading's own Lock: `threading` itself is loaded only by apply()'s pool
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, ContextManager, Iterable, Sequence, TypeVar

from orchestrator.backends import docker_apply, docker_preflight
from orchestrator.backends.base import DOCKER, Removal, Say, quiet
from orchestrator.backends.docker_apply import ActionResult
from orchestrator.backends.engine import (
    Engine,
    EngineError,
    EngineTimeout,
    EngineUnreachable,
    engine_address,
    engine_for_environment,
    is_local_address,
)
from orchestrator.backends.engine_body import PROBE_EXPIRES, PROBE_OWNER, probe_body
from orchestrator.container import ContainerSpec
from orchestrator.errors import DockerUnavailable, OrchestratorError, PreflightError
from orchestrator.labels import LABEL_CONFIG, LABEL_HASH, LABEL_INSTANCE, LABEL_OWNER, LABEL_PROJECT, LABEL_ROLE, OWNER_UP
from orchestrator.plan import REMOVE, Action, Observed, owned_elsewhere, plan_up
from orchestrator.spec import InstanceSpec, Mount
from orchestrator.start_order import StartAfter
from orchestrator.value import Value, field

if TYPE_CHECKING:  # gpus is imported where the probe runs
    from orchestrator.gpus import Inventory
    from orchestrator.project import Project
    from orchestrator.resolve import Resolved

__all__ = ["ActionResult", "ContainerRun", "DockerBackend"]

PROBE_GRACE_S = 60  # beyond its own timeout, before a left-over probe counts as abandoned
T = TypeVar("T")


class ContainerRun(Value):
    """The options of one Docker run (`up`), read by plan, preflight and apply."""

    image_ids: dict = field(factory=dict)  # image -> its id on this host (image_ids(missing_ok=True)): plan, preflight
    remove_orphans: bool = False  # plan: remove the containers no longer in the config
    blocking: bool = True  # preflight: GPU problems block (False: `up --no-preflight`, warnings)
    on_done: Callable[[ActionResult], None] | None = None  # apply: each instance's result as it is known
    await_healthy: Callable[[Action], None] | None = None  # apply: a start chain's wait (raises when not healthy)
    progress: Callable[[str], None] | None = None  # apply: who waits for whom


class DockerBackend:
    """One container per instance on one Docker engine (base.Backend). Besides the interface's
    verbs, what only Docker has: image_ids, preflight, run_once, probe_gpus, engine_log_tail."""

    name: ClassVar[str] = DOCKER
    status_columns: ClassVar[tuple[str, ...]] = ("name", "owner", "state", "health", "gpus", "url", "model", "uptime",
                                                        "restarts")

    def __init__(self, engine: Engine | None = None):
        self._engine = engine
        self.last_rows: list[dict[str, Any]] = []  # the last observe's list rows, side services included
        self._engine_lock = _thread.allocate_lock()

    # ------------------------------------------------------------------ connection
    @property
    def engine(self) -> Engine:
        """The engine client, made on first use (apply()'s worker threads share it)."""
        with self._engine_lock:
            if self._engine is None:
                try:
                    self._engine = engine_for_environment()
                except EngineUnreachable as exc:
                    raise _unavailable(engine_address(), exc) from None
            return self._engine

    def call(self, fn: Callable[[Engine], T]) -> T:
        """One engine call; a lost engine is DockerUnavailable. EngineError and EngineTimeout are
        left to the caller, which knows what the call was for (a `wait` may time out by design)."""
        engine = self.engine
        try:
            return fn(engine)
        except EngineUnreachable as exc:
            raise _unavailable(engine.address, exc) from None

    # ------------------------------------------------------------------ observe
    def observe(self, project: str, *, owner: str | None = OWNER_UP) -> list[Observed]:
        """Every container of the project in one list call (owner None: any tool's)."""
        labels = [f"{LABEL_PROJECT}={project}"]
        if owner:
            labels.append(f"{LABEL_OWNER}={owner}")
        rows = self.read(lambda e: e.containers(labels=labels))
        # Side services (the gateway: orchestrator/gateway/) are not instances; they read their
        # own row and the instances' addresses from this same call, so they cost no call of their own.
        self.last_rows = rows
        return [_observed(row) for row in rows if not (row.get("Labels") or {}).get(LABEL_ROLE)]

    def all_containers(self) -> list[dict[str, Any]]:
        """Every container on the engine, any owner (one list call): `gpus` names GPU holders."""
        return self.read(lambda e: e.containers())

    def read(self, fn: Callable[[Engine], T]) -> T:
        try:
            return self.call(fn)
        except (EngineError, EngineTimeout) as exc:
            raise OrchestratorError(f"Docker engine error: {exc}") from None

    def _inspect_image(self, image: str) -> dict[str, Any] | None:
        """The image's inspect document, None when the host does not have it."""
        def inspect(engine: Engine) -> dict[str, Any] | None:
            try:
                return engine.inspect_image(image)
            except EngineError as exc:
                if exc.not_found:
                    return None
                raise

        return self.read(inspect)

    def image_ids(self, images: Iterable[str], *, missing_ok: bool = False) -> dict[str, str]:
        """Current id of each image. A missing image is a preflight error naming the fix (every
        missing one); with `missing_ok` it is left out, for the preflight to report with the rest."""
        ids: dict[str, str] = {}
        missing: list[str] = []
        for image in sorted(set(images)):
            found = self._inspect_image(image)
            if found is None:
                missing.append(image)
            else:
                ids[image] = found["Id"]
        if missing and not missing_ok:
            raise PreflightError(problems=[docker_preflight.image_missing(image) for image in missing])
        return ids

    # ------------------------------------------------------------------ plan
    def plan(self, project: Project, selected: set[str] | None, observed: list[Observed],
             request: ContainerRun) -> list[Action]:
        """base.Backend.plan: what `up` must do (plan.plan_up): the request's `image_ids` (image ->
        its id here, from image_ids()) tells a rebuilt image apart. Containers another config made
        are the caller's to refuse first (plan.owned_elsewhere)."""
        return plan_up(project.resolved.instances, observed, containers=project.resolved.containers,
                       image_ids=request.image_ids, selected=selected,
                       remove_orphans=request.remove_orphans)

    # ------------------------------------------------------------------ preflight
    def preflight(self, project: Project, plan: list[Action], request: ContainerRun) -> list[str]:
        """base.Backend.preflight (docker_preflight.preflight): every problem at once, before any change."""
        return docker_preflight.preflight(self, project, plan, request.image_ids, blocking=request.blocking)

    def probe_gpus(self, image: str, driver: str = "nvidia", *, asker: str = "",
                   container: ContainerSpec | None = None) -> "Inventory":
        """docker_preflight.probe_gpus: the engine host's GPUs from a throwaway container."""
        return docker_preflight.probe_gpus(self, image, driver, asker=asker, container=container)

    # ------------------------------------------------------------------ act
    def apply(self, project: Project | None, plan: list[Action], request: ContainerRun | None = None) -> list[ActionResult]:
        """base.Backend.apply: run_actions with the request's callbacks, in the plan's start
        order (plan.start_after); the actions carry their specs, so `project` is not needed."""
        from orchestrator.plan import start_after

        request = request or ContainerRun()
        return self.run_actions(plan, request.on_done, start_after=start_after(plan),
                                await_healthy=request.await_healthy, progress=request.progress)

    def lock(self, project: str, say: Say = quiet) -> ContextManager[None]:
        """The project's run lock on this engine: observe, plan and change under it, so a
        concurrent up/down plans against what this one did."""
        from orchestrator.run_lock import run_lock

        return run_lock(project, self.engine.address, waiting=say)

    def run_actions(
        self,
        actions: list[Action],
        on_done: Callable[[ActionResult], None] | None = None,
        *,
        start_after: Sequence[StartAfter] = (),
        await_healthy: Callable[[Action], None] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> list[ActionResult]:
        """docker_apply.run_actions: every changing action, independent instances in parallel."""
        return docker_apply.run_actions(self, actions, on_done, start_after=start_after,
                                        await_healthy=await_healthy, progress=progress)

    def apply_one(self, action: Action, steps: list[str]) -> ActionResult:
        """docker_apply.apply_one: one create / recreate / start / remove on the engine; `steps`
        gets each change made (stopped, removed, created), for a failure's `changed`."""
        return docker_apply.apply_one(self, action, steps)

    def remove(self, project: str, selected: set[str] | None, *, config_file: str | None = None,
               timeout: float | None = None, report: Say = quiet, say: Say = quiet) -> Removal:
        """base.Backend.remove: `down` under the project's run lock (a concurrent `up` waits, then
        plans against what is left). Each container stops with its own stop timeout: `timeout`
        is the launcher's and is not used here."""
        with self.lock(project, say):
            results, left = self.down(project, selected, lambda r: report(r.line(exit_code=True)),
                                      config_file=config_file)
        failed = [r for r in results if not r.ok]
        return Removal(results, "removed", f"{len(failed)} container(s) could not be removed" if failed else "",
                       left)

    def down(self, project: str, selected: set[str] | None, on_done: Callable[[ActionResult], None] | None = None,
             *, config_file: str | None = None) -> tuple[list[ActionResult], dict[str, list[str]]]:
        """Stop and remove the project's containers; with `config_file`, only that config's.
        Returns the results and, by config file, the containers left because another made them."""
        observed = [o for o in self.observe(project) if selected is None or o.instance in selected]
        left: dict[str, list[str]] = {}
        if config_file is not None:
            for other in owned_elsewhere(observed, config_file):
                left.setdefault(other.labels[LABEL_CONFIG], []).append(other.name)
                observed.remove(other)
        actions = [Action(REMOVE, o.instance, ("down",), None, o) for o in observed]
        return self.run_actions(actions, on_done), left

    # ------------------------------------------------------------------ status
    def status(self, project: str, resolved: Resolved | None) -> list[dict[str, Any]]:
        """base.Backend.status: the project's containers (ours and Compose-export ones) joined
        with the config; /health asked where Docker still says "starting" (status.ask_health)."""
        from orchestrator.status import ask_health, ps_rows
        from orchestrator.waiter import probe_many

        rows = ps_rows(self.observe(project, owner=None), list(resolved.instances) if resolved else [],
                       resolved.containers if resolved else {})
        ask_health(rows, probe_many, local=is_local_address(self.engine.address))
        return rows

    # ------------------------------------------------------------------ one-off commands
    def run_once(self, image: str, argv: list[str], mounts: Iterable[Mount] = (), timeout: float = 300,
                 device_requests: list[dict[str, Any]] | None = None, host_pids: bool = False) -> tuple[int, str, str]:
        """Run argv in a throwaway, network-less container of image; (exit code, stdout, stderr).
        An engine error (e.g. a GPU request it cannot serve) is exit code -1 with its message."""
        import time

        self._remove_expired_probes(time.time())
        body = probe_body(image, argv, mounts=[Mount(m.source, m.target, True) for m in mounts],
                          device_requests=device_requests, env={"PYTHONUNBUFFERED": "1"}, host_pids=host_pids,
                          expires=int(time.time() + timeout + PROBE_GRACE_S))
        try:
            created = self.call(lambda e: e.create(None, body))
        except EngineError as exc:
            if exc.not_found:
                raise PreflightError(f"image {image!r} not found on this Docker host") from None
            raise OrchestratorError(f"Docker engine error: {exc}") from None
        try:
            self.call(lambda e: e.start(created))
            code = self.call(lambda e: e.wait(created, timeout))
            out = self.call(lambda e: e.logs(created, stdout=True, stderr=False)).decode(errors="replace")
            err = self.call(lambda e: e.logs(created, stdout=False, stderr=True)).decode(errors="replace")
            return code, out, err
        except EngineError as exc:
            return -1, "", str(exc)
        except EngineTimeout:
            return -1, "", f"no answer within {timeout:g}s"
        finally:
            self._remove_quietly(created)

    def _remove_expired_probes(self, now: float) -> None:
        """Probes a killed vllm-orch left behind, once past the time any run could still want them."""
        for row in self.read(lambda e: e.containers(labels=[f"{LABEL_OWNER}={PROBE_OWNER}"])):
            expires = (row.get("Labels") or {}).get(PROBE_EXPIRES, "")
            if expires.isdigit() and int(expires) < now:
                self._remove_quietly(row["Id"])

    def _remove_quietly(self, container: str) -> None:
        try:
            self.call(lambda e: e.remove(container, force=True))
        except (EngineError, EngineTimeout):
            pass

    # ------------------------------------------------------------------ logs
    def log_file(self, resolved: Resolved, spec: InstanceSpec) -> Path:
        """base.Backend.log_file: the host side of the container's log bind mount."""
        return Path(resolved.container_of(spec.name).host_log_file)

    def missing_log(self, spec: InstanceSpec, path: Path) -> str:
        """base.Backend.missing_log: a remote engine writes the file on its own machine. Asks the
        environment for the engine's address; connects to nothing."""
        address = self._engine.address if self._engine is not None else engine_address()
        if not is_local_address(address):
            return (f"no log file {path} on this machine: the engine at {address} writes it on its own "
                    "machine (run vllm-orch there, or share log_host_dir between the two)")
        return f"no log yet for {spec.name!r} ({path}): it has not been started"

    def engine_log_tail(self, container_name: str, lines: int) -> str:
        """What the engine captured (the entrypoint's own errors, before output went to the file)."""
        try:
            raw = self.call(lambda e: e.logs(container_name, tail=lines))
        except (EngineError, EngineTimeout):
            return ""
        return raw.decode(errors="replace")


def _observed(row: dict[str, Any]) -> Observed:
    labels = row.get("Labels") or {}
    names = row.get("Names") or [""]
    return Observed(
        id=row["Id"],
        name=names[0].lstrip("/"),
        instance=labels.get(LABEL_INSTANCE, ""),
        owner=labels.get(LABEL_OWNER, ""),
        state=row.get("State", ""),
        status=row.get("Status", ""),
        image_id=row.get("ImageID", ""),
        config_hash=labels.get(LABEL_HASH, ""),
        labels=labels,
    )


def _unavailable(address: str, exc: Exception) -> DockerUnavailable:
    return DockerUnavailable(
        f"cannot reach the Docker engine at {address}: {exc} "
        "(is dockerd running? scripts/setup-host.sh installs and starts one)"
    )
