"""Carries out plans on one Docker engine: observe, plan, preflight, apply, remove, status, one-off
containers. `DockerBackend` is the `docker` implementation of base.Backend.

Engine calls grow with N only where they must: one list call observes every instance (labels
carry hash, spec, GPUs, URL and model, so no per-container inspect), one inspect per distinct
image, and create+start (or stop+wait+remove) per instance that actually changes. The calls go
through an `Engine` (engine.py: the standard library on a local socket, the Docker SDK for
other addresses); its errors are translated here, so every failure reaches the user as one
actionable line.
"""

from __future__ import annotations

import _thread  # threading's own Lock: `threading` itself is loaded only by apply()'s pool
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, TypeVar

from orchestrator.backends.engine import (
    Engine,
    EngineError,
    EngineTimeout,
    EngineUnreachable,
    engine_address,
    engine_for_environment,
    is_local_address,
)
from orchestrator.backends.base import DOCKER, Removal, Say, quiet
from orchestrator.backends.engine_body import PROBE_EXPIRES, PROBE_OWNER, create_body, gpu_device_requests, probe_body
from orchestrator import log_files
from orchestrator.errors import DockerUnavailable, OrchestratorError, PreflightError
from orchestrator.plan import CREATE, RECREATE, REMOVE, START, Action, Observed, is_loading, owned_elsewhere, plan_up
from orchestrator.labels import (LABEL_CONFIG, LABEL_HASH, LABEL_INSTANCE, LABEL_OWNER, LABEL_PROJECT, LABEL_ROLE, LABEL_URL,
                                 OWNER_UP)
from orchestrator.container import ContainerSpec
from orchestrator.spec import InstanceSpec, Mount
from orchestrator.start_order import StartAfter, waits_for
from orchestrator.value import Value

if TYPE_CHECKING:  # gpus is imported where the probe runs
    from orchestrator.errors import Problem
    from orchestrator.gpus import Inventory
    from orchestrator.project import Project

MAX_WORKERS = 16
PROBE_GRACE_S = 60  # beyond its own timeout, before a left-over probe counts as abandoned
MIN_LOG_SPACE = 1 << 20  # bytes free in a log directory for `up` to start servers writing there
_GPU_DRIVER_ERROR = "could not select device driver"
T = TypeVar("T")


class ActionResult(Value, frozen=False):
    action: Action
    ok: bool
    detail: str = ""
    exit_code: int | None = None  # the container's, when it was stopped
    error_exit_code: int = 0  # a failure's: the CLI's exit code for its error (3: the engine was lost)
    health_error: OrchestratorError | None = None  # started, but did not become healthy (start chains)

    @property
    def engine_lost(self) -> bool:
        return self.error_exit_code == DockerUnavailable.exit_code

    def line(self, *, exit_code: bool = False) -> str:
        """One line for the user: `a: created`, `a: stopped and removed (exit code 0)`, `a: FAILED: ...`."""
        if not self.ok:
            return f"{self.action.instance}: FAILED: {self.detail}"
        code = f" (exit code {self.exit_code})" if exit_code and self.exit_code is not None else ""
        return f"{self.action.instance}: {self.detail}{code}"

    def to_json(self) -> dict[str, Any]:
        doc = self.action.to_json()
        doc.update(ok=self.ok, detail=self.detail)
        if self.exit_code is not None:
            doc["exit_code"] = self.exit_code
        if self.health_error is not None:
            doc["health_error"] = str(self.health_error)
        return doc


class DockerBackend:
    """One container per instance on one Docker engine (base.Backend). Besides the interface's
    verbs, what only Docker has: image_ids, preflight, run_once, probe_gpus, engine_log_tail."""

    name: ClassVar[str] = DOCKER
    status_columns: ClassVar[tuple[str, ...]] = ("name", "owner", "state", "health", "gpus", "url", "model", "uptime")

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

    def _call(self, fn: Callable[[Engine], T]) -> T:
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
        rows = self._read(lambda e: e.containers(labels=labels))
        # Side services (the gateway: orchestrator/gateway/) are not instances; they read their
        # own row and the instances' addresses from this same call, so they cost no call of their own.
        self.last_rows = rows
        return [_observed(row) for row in rows if not (row.get("Labels") or {}).get(LABEL_ROLE)]

    def all_containers(self) -> list[dict[str, Any]]:
        """Every container on the engine, any owner (one list call): `gpus` names GPU holders."""
        return self._read(lambda e: e.containers())

    def _read(self, fn: Callable[[Engine], T]) -> T:
        try:
            return self._call(fn)
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

        return self._read(inspect)

    def image_ids(self, images: Iterable[str]) -> dict[str, str]:
        """Current id of each image; a missing image is a preflight error naming the fix."""
        ids: dict[str, str] = {}
        missing: list[str] = []
        for image in sorted(set(images)):
            found = self._inspect_image(image)
            if found is None:
                missing.append(image)
            else:
                ids[image] = found["Id"]
        if missing:
            raise PreflightError(
                f"image {missing[0]!r} not found on this Docker host "
                f"(build it, e.g. scripts/build-images.sh for the bundled images, or `docker pull {missing[0]}`)"
            )
        return ids

    # ------------------------------------------------------------------ plan
    def plan(self, project: "Project", selected: set[str] | None, observed: list[Observed], *,
             image_ids: dict[str, str], remove_orphans: bool = False) -> list[Action]:
        """What `up` must do (plan.plan_up): `image_ids` (image -> its id here, from image_ids())
        tells a rebuilt image apart. Containers another config made are the caller's to refuse
        first (plan.owned_elsewhere)."""
        return plan_up(project.resolved.instances, observed, image_ids=image_ids, selected=selected,
                       remove_orphans=remove_orphans)

    # ------------------------------------------------------------------ preflight
    def preflight(self, actions: list[Action],
                  gpu_check: "Callable[[Inventory, set[str]], list[Problem]] | None" = None) -> list[str]:
        """Everything that can be known before changing anything (nothing half-done). With
        `gpu_check` (inventory, ids of the running containers of the plan -> problems), the GPUs
        are checked against what is on the host; its warnings and notes are returned."""
        starting = [a for a in actions if a.kind in (CREATE, RECREATE, START)]
        creating = [a for a in actions if a.kind in (CREATE, RECREATE)]
        for action in creating:
            container = action.spec.container
            for key, value in container.secret_env:
                if value is None:
                    raise PreflightError(f"instance {action.instance!r}: secret {key} is not set in the environment (export it before `up`)")
            for mount in container.mounts:
                if mount.source != container.host_log_file and not os.path.exists(mount.source):
                    raise PreflightError(f"instance {action.instance!r}: host path {mount.source} does not exist")
        self._check_other_containers([a for a in actions if a.kind == CREATE], creating)
        if is_local_address(self.engine.address):  # a remote engine's host ports and disks are not ours to check
            self._check_ports_free(creating)
            _check_log_space(starting)
        gpu_actions = [a for a in starting if a.spec and a.spec.gpu.mode != "none"]
        if gpu_actions:
            return self._check_gpus(gpu_actions[0], actions, gpu_check)
        return []

    def _check_gpus(self, first: Action, actions: list[Action],
                    gpu_check: "Callable[[Inventory, set[str]], list[Problem]] | None") -> list[str]:
        """The NVIDIA runtime, and the host's GPUs against the plan. On the GPU host itself NVML
        answers (then a throwaway container checks the runtime, as before); otherwise one probe
        container does both. Costs the same one container as the runtime check alone did."""
        from orchestrator.gpu_readers import read_nvml
        from orchestrator.gpus import InventoryUnavailable

        container = first.spec.container
        try:
            if is_local_address(self.engine.address):
                try:
                    inventory = read_nvml()
                except InventoryUnavailable:
                    inventory = self.probe_gpus(container.image, container.gpu_driver, asker=first.instance, container=container)
                else:
                    self._check_gpu_runtime(first)
            else:
                inventory = self.probe_gpus(container.image, container.gpu_driver, asker=first.instance, container=container)
        except InventoryUnavailable as exc:
            return [f"GPU inventory skipped: {exc}"]
        if gpu_check is None:
            return []
        running = {a.observed.id for a in actions if a.observed is not None and a.observed.running}
        problems = gpu_check(inventory, running)
        errors = [p for p in problems if p.is_error]
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise PreflightError(errors[0].format() + more, details="\n".join(p.format() for p in errors[1:]))
        return [p.format() for p in problems]

    def _check_other_containers(self, creates: list[Action], creating: list[Action]) -> None:
        """Names and host ports held by containers this plan does not replace (one list call).
        The ports are checked here too, not only by binding them (below): with Docker's
        userland proxy off, a published port is an iptables rule that no bind() would meet."""
        if not creating:
            return
        order = {a.instance: i for i, a in enumerate(creating)}
        names = {a.spec.container.name: a.instance for a in creates}
        ports = {a.spec.container.port.host_port: a for a in creating if a.spec.container.port}
        replaced = {a.observed.id for a in creating if a.observed is not None}
        found: list[tuple[int, str]] = []  # reported in config order, whatever order the engine lists in
        for row in self._read(lambda e: e.containers()):
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
                action = ports.get(published.get("PublicPort"))
                if action is None or published.get("Type", "tcp") != "tcp":
                    continue
                port = action.spec.container.port
                if _addresses_overlap(port.host_address, published.get("IP") or "0.0.0.0"):
                    holder = (row.get("Names") or ["?"])[0].lstrip("/")
                    found.append((order[action.instance], (
                        f"instance {action.instance!r}: host port {port.host_address}:{port.host_port} is published "
                        f"by container {holder}; set [instance.{action.instance}.docker] publish_port")))
        if found:
            raise PreflightError(min(found)[1])

    def _check_ports_free(self, creating: list[Action]) -> None:
        for action in creating:
            port = action.spec.container.port
            if port is None:
                continue
            old = action.observed
            if old is not None and old.running and port.url == old.labels.get(LABEL_URL):
                continue  # held by the container this one replaces
            family = socket.AF_INET6 if ":" in port.host_address else socket.AF_INET
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((port.host_address, port.host_port))
                except OSError as exc:
                    raise PreflightError(
                        f"instance {action.instance!r}: host port {port.host_address}:{port.host_port} is not free "
                        f"({exc.strerror}); set [instance.{action.instance}.docker] publish_port"
                    ) from None

    def _check_gpu_runtime(self, action: Action) -> None:
        """A GPU container only fails at start on a host without the NVIDIA runtime; find out
        with a throwaway container before starting anything real."""
        container = action.spec.container
        code, _, err = self.run_once(container.image, ["/bin/sh", "-c", "exit 0"], timeout=60,
                                     device_requests=gpu_device_requests(container))
        if code == 0:
            return
        if _GPU_DRIVER_ERROR in err:
            raise PreflightError(_gpu_message(action.instance, container, err))
        raise PreflightError(f"instance {action.instance!r}: GPU check failed: {err or f'exit code {code}'}")

    def probe_gpus(self, image: str, driver: str = "nvidia", *, asker: str = "",
                   container: ContainerSpec | None = None) -> "Inventory":
        """The engine host's GPUs from `nvidia-smi` in a throwaway container of `image` with every
        GPU (the NVIDIA runtime mounts nvidia-smi into any image). No NVIDIA runtime on the engine:
        PreflightError; the container ran but nvidia-smi could not answer: InventoryUnavailable."""
        from orchestrator.gpu_readers import NOT_FOUND_EXIT, PROBE_SCRIPT
        from orchestrator.gpus import InventoryUnavailable, parse_probe_output

        request = [{"Driver": driver, "Count": -1, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}]
        code, out, err = self.run_once(image, ["/bin/sh", "-c", PROBE_SCRIPT], timeout=60,
                                       device_requests=request, host_pids=True)
        if _GPU_DRIVER_ERROR in err:
            if asker and container is not None:
                raise PreflightError(_gpu_message(asker, container, err))
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
        return inventory.replace(source=f"nvidia-smi in a probe container ({image}) on {self.engine.address}")

    # ------------------------------------------------------------------ act
    def apply(self, project: "Project", plan: list[Action], **options: Any) -> list[ActionResult]:
        """base.Backend.apply: run_actions(plan, **options); the actions carry their specs, so
        `project` is not needed."""
        return self.run_actions(plan, **options)

    def run_actions(
        self,
        actions: list[Action],
        on_done: Callable[[ActionResult], None] | None = None,
        *,
        start_after: list[StartAfter] = (),
        await_healthy: Callable[[Action], None] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> list[ActionResult]:
        """Carry out every changing action, independent instances in parallel. An instance named
        in `start_after` is started only once each instance it waits for was started and
        `await_healthy` returned for it (it raises OrchestratorError when that one will not
        become healthy), or, for a removal edge, once that container is removed; when one does
        not, the instances waiting on it are not started and fail naming it. An instance may also wait for one this run leaves running because it is
        still loading (plan.is_loading): only its health is awaited. Results come back in the
        order of `actions`, for the actions that change something."""
        work = [a for a in actions if a.kind in (CREATE, RECREATE, START, REMOVE)]
        if not work:
            return []
        names = {a.instance for a in work}
        loading = {a.instance: a for a in actions if is_loading(a)}
        waits = waits_for(e for e in start_after if e.instance in names and (e.after in names or e.after in loading))
        gating = {e.after for edges in waits.values() for e in edges if not e.removal}  # awaited healthy

        def awaited(result: ActionResult) -> ActionResult:
            """The result, with why its instance did not become healthy when it did not."""
            if await_healthy is not None:
                try:
                    await_healthy(result.action)
                except OrchestratorError as exc:
                    result.health_error = exc
            return result

        def run(action: Action) -> ActionResult:
            try:
                result = self._apply_one(action)
            except OrchestratorError as exc:  # DockerUnavailable too: every instance reports where it stands
                result = ActionResult(action, False, str(exc), error_exit_code=exc.exit_code)
            except EngineTimeout as exc:  # a hung engine fails this instance, not the command
                result = ActionResult(action, False, f"the Docker engine did not answer: {exc}",
                                      error_exit_code=OrchestratorError.exit_code)
            if on_done:
                on_done(result)
            return awaited(result) if result.ok and action.instance in gating else result

        def watch(action: Action) -> ActionResult:
            """Left running by an earlier run: nothing to do but wait until it answers /health."""
            return awaited(ActionResult(action, True, "running, still loading"))

        _ = self.engine  # made once, here, then shared by the worker threads
        from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

        done: dict[str, ActionResult] = {}
        waiting = [a for a in work if a.instance in waits]
        with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(work))) as pool:
            running = {pool.submit(run, a) for a in work if a.instance not in waits}
            running |= {pool.submit(watch, a) for name, a in loading.items() if name in gating}
            for action in waiting:
                if progress:
                    progress("; ".join(e.describe() for e in waits[action.instance]))
            while running:
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    result = future.result()
                    done[result.action.instance] = result
                for action in list(waiting):
                    edges = waits[action.instance]
                    if not all(e.after in done for e in edges):
                        continue
                    waiting.remove(action)
                    blocker = next((e for e in edges if not done[e.after].ok or done[e.after].health_error), None)
                    if blocker is None:
                        running.add(pool.submit(run, action))
                        continue
                    failed = done[blocker.after]
                    why = failed.health_error or failed.detail
                    if blocker.removal:
                        detail = (f"not started: {blocker.after} (both on {blocker.shared}) could not be removed "
                                  f"and may still hold the GPU's memory: {why}")
                    else:
                        what = "did not become healthy" if blocker.after in loading else "did not start"
                        detail = (f"not started: it waits for {blocker.after} (both on {blocker.shared}), "
                                  f"which {what}: {why}")
                    result = ActionResult(action, False, detail)
                    done[action.instance] = result
                    if on_done:
                        on_done(result)
        return [done[a.instance] for a in work]

    def _apply_one(self, action: Action) -> ActionResult:
        if action.kind == START:
            _prepare_log_file(action.spec.container)  # it may have been deleted while stopped
            _prepare_cache_dirs(action.observed, action.spec.container)
            self._start(action.observed.id, action.instance, action.spec.container)
            return ActionResult(action, True, "started")
        if action.kind == REMOVE:
            code = self._stop_and_remove(action.observed)
            return ActionResult(action, True, "stopped and removed", code)
        if action.kind == RECREATE:
            self._stop_and_remove(action.observed)
        container = action.spec.container
        container_id = self._create(action.spec)
        self._start(container_id, action.instance, container)
        return ActionResult(action, True, "recreated" if action.kind == RECREATE else "created")

    def _create(self, spec: InstanceSpec) -> str:
        _prepare_log_file(spec.container)
        _prepare_cache_dirs(None, spec.container)
        body = create_body(spec.container)
        try:
            return self._call(lambda e: e.create(spec.container.name, body))
        except EngineError as exc:
            if exc.not_found:  # the image was there at preflight: removed or untagged since
                raise PreflightError(
                    f"instance {spec.name!r}: image {spec.container.image!r} is no longer on this Docker host "
                    "(removed or untagged while `up` ran); nothing was created for it: build or pull it, "
                    "then run `up` again") from None
            raise OrchestratorError(f"instance {spec.name!r}: create failed: {exc}") from None

    def _start(self, container_id: str, instance: str, container: ContainerSpec) -> None:
        try:
            self._call(lambda e: e.start(container_id))
        except EngineError as exc:
            if _GPU_DRIVER_ERROR in str(exc):
                raise OrchestratorError(_gpu_message(instance, container, exc)) from None
            raise OrchestratorError(f"instance {instance!r}: start failed: {exc}") from None

    def _stop_and_remove(self, observed: Observed) -> int | None:
        """SIGTERM, the container's own stop timeout, then SIGKILL (the engine's stop); keep logs.
        Returns the server's exit code: 0 or 143 for a clean SIGTERM exit, 137 when it was killed."""
        code = None
        try:
            if observed.state in ("running", "restarting", "paused"):
                self._call(lambda e: e.stop(observed.id, grace_s=_stop_timeout(observed)))
            code = self._call(lambda e: e.wait(observed.id, 30))
            self._call(lambda e: e.remove(observed.id))
        except EngineError as exc:
            if not exc.not_found:  # gone already: someone else removed it
                raise OrchestratorError(f"container {observed.name}: {exc}") from None
        except EngineTimeout as exc:
            raise OrchestratorError(f"container {observed.name}: {exc}") from None
        return code

    def remove(self, project: str, selected: set[str] | None, *, config_file: str | None = None,
               timeout: float | None = None, report: Say = quiet, say: Say = quiet) -> Removal:
        """base.Backend.remove: `down` under the project's run lock (a concurrent `up` waits, then
        plans against what is left). Each container stops with its own stop timeout: `timeout`
        is the launcher's and is not used here."""
        from orchestrator.run_lock import run_lock

        with run_lock(project, self.engine.address, waiting=say):
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
    def status(self, project: str, instances: list[InstanceSpec]) -> list[dict[str, Any]]:
        """base.Backend.status: the project's containers (ours and Compose-export ones) joined
        with the config; /health asked where Docker still says "starting" (status.ask_health)."""
        from orchestrator.status import ask_health, ps_rows
        from orchestrator.waiter import probe_many

        rows = ps_rows(self.observe(project, owner=None), list(instances))
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
            created = self._call(lambda e: e.create(None, body))
        except EngineError as exc:
            if exc.not_found:
                raise PreflightError(f"image {image!r} not found on this Docker host") from None
            raise OrchestratorError(f"Docker engine error: {exc}") from None
        try:
            self._call(lambda e: e.start(created))
            code = self._call(lambda e: e.wait(created, timeout))
            out = self._call(lambda e: e.logs(created, stdout=True, stderr=False)).decode(errors="replace")
            err = self._call(lambda e: e.logs(created, stdout=False, stderr=True)).decode(errors="replace")
            return code, out, err
        except EngineError as exc:
            return -1, "", str(exc)
        except EngineTimeout:
            return -1, "", f"no answer within {timeout:g}s"
        finally:
            self._remove_quietly(created)

    def _remove_expired_probes(self, now: float) -> None:
        """Probes a killed vllm-orch left behind, once past the time any run could still want them."""
        for row in self._read(lambda e: e.containers(labels=[f"{LABEL_OWNER}={PROBE_OWNER}"])):
            expires = (row.get("Labels") or {}).get(PROBE_EXPIRES, "")
            if expires.isdigit() and int(expires) < now:
                self._remove_quietly(row["Id"])

    def _remove_quietly(self, container: str) -> None:
        try:
            self._call(lambda e: e.remove(container, force=True))
        except (EngineError, EngineTimeout):
            pass

    # ------------------------------------------------------------------ logs
    def log_file(self, spec: InstanceSpec) -> Path:
        """base.Backend.log_file: the host side of the container's log bind mount."""
        return Path(spec.container.host_log_file)

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
            raw = self._call(lambda e: e.logs(container_name, tail=lines))
        except (EngineError, EngineTimeout):
            return ""
        return raw.decode(errors="replace")


def _check_log_space(starting: list[Action]) -> None:
    """A full log filesystem makes the container's log wrapper fail at its first write (exit 70):
    refuse before starting anything rather than leave exited containers behind."""
    for directory in sorted({os.path.dirname(a.spec.container.host_log_file) for a in starting}):
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


def _prepare_log_file(container: ContainerSpec) -> None:
    """The log file must exist before a file bind mount; it is appended to, never truncated,
    and never anything but our own plain file (log_files.py)."""
    uid, _, gid = (container.user or "").partition(":")
    owner = (int(uid), int(gid) if gid.isdigit() else -1) if uid.isdigit() else None
    try:
        log_files.prepare(container.host_log_file, owner=owner, shared=bool(container.user) and owner is None)
    except OSError as exc:
        raise OrchestratorError(f"cannot prepare log file {container.host_log_file}: {exc.strerror or exc}") from None


def _prepare_cache_dirs(observed: Observed | None, container: ContainerSpec) -> None:
    """Make the cache directories a container is (re)started with, owned by its user. For a
    stopped container they are the ones it was made with (its record), not the config's now."""
    sources = [c.source for c in container.cache_mounts]
    if observed is not None:
        sources = [c.get("source", "") for c in (observed.spec_json or {}).get("cache_mounts") or []]
    uid, _, gid = (container.user or "").partition(":")
    owner = (int(uid), int(gid) if gid.isdigit() else -1) if uid.isdigit() else None
    for source in filter(None, sources):
        try:  # a named user's uid is only known inside the image: then the directory is shared
            log_files.prepare_directory(source, owner=owner, shared=bool(container.user) and owner is None)
        except OSError as exc:
            raise OrchestratorError(f"cannot prepare cache directory {source}: {exc.strerror}") from None


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


def _gpu_message(instance: str, container: ContainerSpec, exc: Exception | str) -> str:
    return (
        f"instance {instance!r} asks for GPUs (gpu_ids = {container.gpu.describe()!r}) but this Docker host has no "
        f"NVIDIA runtime ({exc}): install the NVIDIA container toolkit, or set gpu_ids = \"none\""
    )


def _addresses_overlap(a: str, b: str) -> bool:
    wildcard = ("0.0.0.0", "::", "")
    return a == b or a in wildcard or b in wildcard


def _stop_timeout(observed: Observed) -> int | None:
    """The stop timeout the container was made with (its .spec label), so our wait covers it."""
    value = (observed.spec_json or {}).get("stop_timeout")
    return value if isinstance(value, int) else None


def _unavailable(address: str, exc: Exception) -> DockerUnavailable:
    return DockerUnavailable(
        f"cannot reach the Docker engine at {address}: {exc} "
        "(is dockerd running? scripts/setup-host.sh installs and starts one)"
    )
