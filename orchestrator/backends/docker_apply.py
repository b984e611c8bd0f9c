"""Carrying out Docker's plan: create / recreate / start / remove each changing instance,
independent ones in parallel, instances sharing a GPU in their start order. Reached through
DockerBackend.apply (and .down)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from orchestrator import log_files, secret_files
from orchestrator.backends.engine import EngineError, EngineTimeout
from orchestrator.backends.engine_body import create_body
from orchestrator.backends.docker_preflight import GPU_DRIVER_ERROR, gpu_message
from orchestrator.container import ContainerSpec
from orchestrator.errors import DockerUnavailable, OrchestratorError, PreflightError
from orchestrator.labels import LABEL_SECRETS
from orchestrator.plan import CREATE, RECREATE, REMOVE, START, Action, Observed, is_loading, starts_on_demand
from orchestrator.start_order import StartAfter, waits_for
from orchestrator.value import Value

if TYPE_CHECKING:
    from orchestrator.backends.docker import DockerBackend

MAX_WORKERS = 16


class ActionResult(Value, frozen=False):
    action: Action
    ok: bool
    detail: str = ""
    exit_code: int | None = None  # the container's, when it was stopped
    error_exit_code: int = 0  # a failure's: the CLI's exit code for its error (3: the engine was lost)
    health_error: OrchestratorError | None = None  # started, but did not become healthy (start chains)
    # A failure after a step that changed the engine (the old container stopped or removed, the
    # new one created): provisioning tools report `changed` from it (`changed` in to_json).
    partly_done: bool = False

    @property
    def changed(self) -> bool:
        """Whether the engine holds something other than before this action."""
        return self.partly_done or (self.ok and self.action.kind in (CREATE, RECREATE, START, REMOVE))

    @property
    def instance(self) -> str:
        return self.action.instance

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
        doc.update(ok=self.ok, changed=self.changed, detail=self.detail)
        if self.exit_code is not None:
            doc["exit_code"] = self.exit_code
        if self.health_error is not None:
            doc["health_error"] = str(self.health_error)
        return doc



def run_actions(
    backend: DockerBackend,
    actions: list[Action],
    on_done: Callable[[ActionResult], None] | None = None,
    *,
    start_after: Sequence[StartAfter] = (),
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
        steps: list[str] = []  # what apply_one got done before a failure
        try:
            result = backend.apply_one(action, steps)
        except OrchestratorError as exc:  # DockerUnavailable too: every instance reports where it stands
            result = ActionResult(action, False, str(exc), error_exit_code=exc.exit_code, partly_done=bool(steps))
        except EngineTimeout as exc:  # a hung engine fails this instance, not the command
            result = ActionResult(action, False, f"the Docker engine did not answer: {exc}",
                                  error_exit_code=OrchestratorError.exit_code, partly_done=bool(steps))
        if on_done:
            on_done(result)
        return awaited(result) if result.ok and action.instance in gating else result

    def watch(action: Action) -> ActionResult:
        """Left running by an earlier run: nothing to do but wait until it answers /health."""
        return awaited(ActionResult(action, True, "running, still loading"))

    _ = backend.engine  # made once, here, then shared by the worker threads
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


def apply_one(backend: DockerBackend, action: Action, steps: list[str]) -> ActionResult:
    """One action on the engine (DockerBackend.apply_one, which tests replace); `steps` gets
    each change to the engine as it is made, so a failure part-way says whether anything changed."""
    if action.kind == START:
        _prepare_log_file(action.container)  # it may have been deleted while stopped
        _prepare_cache_dirs(action.observed, action.container)
        _prepare_secret_files(action.observed, action.container)  # e.g. removed by hand
        _start(backend, action.current.id, action.instance, action.container)
        return ActionResult(action, True, "started")
    if action.kind == REMOVE:
        code = _stop_and_remove(backend, action.current, steps)
        secret_files.remove(_recorded_secret_dir(action.current))
        return ActionResult(action, True, "stopped and removed", code)
    if action.kind == RECREATE:
        _stop_and_remove(backend, action.current, steps)
    container = action.container
    container_id = _create(backend, action.desired.name, container)
    steps.append("created")
    if starts_on_demand(action):  # the activator starts it on the first request for its model
        return ActionResult(action, True, ("recreated" if action.kind == RECREATE else "created")
                            + " (on demand: started on first request)")
    _start(backend, container_id, action.instance, container)
    return ActionResult(action, True, "recreated" if action.kind == RECREATE else "created")


def _create(backend: DockerBackend, instance: str, container: ContainerSpec) -> str:
    _prepare_log_file(container)
    _prepare_cache_dirs(None, container)
    _prepare_secret_files(None, container)
    body = create_body(container)
    try:
        return backend.call(lambda e: e.create(container.name, body))
    except EngineError as exc:
        if exc.not_found:  # the image was there at preflight: removed or untagged since
            raise PreflightError(
                f"instance {instance!r}: image {container.image!r} is no longer on this Docker host "
                "(removed or untagged while `up` ran); nothing was created for it: build or pull it, "
                "then run `up` again") from None
        raise OrchestratorError(f"instance {instance!r}: create failed: {exc}") from None


def _start(backend: DockerBackend, container_id: str, instance: str, container: ContainerSpec) -> None:
    try:
        backend.call(lambda e: e.start(container_id))
    except EngineError as exc:
        if GPU_DRIVER_ERROR in str(exc):
            raise OrchestratorError(gpu_message(instance, container, exc)) from None
        raise OrchestratorError(f"instance {instance!r}: start failed: {exc}") from None


def _stop_and_remove(backend: DockerBackend, observed: Observed, steps: list[str]) -> int | None:
    """SIGTERM, the container's own stop timeout, then SIGKILL (the engine's stop); keep logs.
    Returns the server's exit code: 0 or 143 for a clean SIGTERM exit, 137 when it was killed."""
    code = None
    try:
        if observed.state in ("running", "restarting", "paused"):
            backend.call(lambda e: e.stop(observed.id, grace_s=_stop_timeout(observed)))
            steps.append("stopped")
        code = backend.call(lambda e: e.wait(observed.id, 30))
        backend.call(lambda e: e.remove(observed.id))
        steps.append("removed")
    except EngineError as exc:
        if not exc.not_found:  # gone already: someone else removed it
            raise OrchestratorError(f"container {observed.name}: {exc}") from None
    except EngineTimeout as exc:
        raise OrchestratorError(f"container {observed.name}: {exc}") from None
    return code


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




def _stop_timeout(observed: Observed) -> int | None:
    """The stop timeout the container was made with (its .spec label), so our wait covers it."""
    value = (observed.spec_json or {}).get("stop_timeout")
    return value if isinstance(value, int) else None


def _prepare_secret_files(observed: Observed | None, container: ContainerSpec) -> None:
    """Write the secret files a container is (re)started with. A stopped container keeps the
    directory it was made with (its label); the values are today's, which the plan has found
    equal to the ones it was made with (else it would recreate it)."""
    directory = _recorded_secret_dir(observed) if observed is not None else container.secret_dir
    if directory and container.secret_env and container.secrets_as_files:
        secret_files.write(directory, container.secret_env, user=container.user)


def _recorded_secret_dir(observed: Observed | None) -> str:
    """The directory a container's secret files were written to (its label; "" when it has none)."""
    return observed.labels.get(LABEL_SECRETS, "") if observed is not None else ""
