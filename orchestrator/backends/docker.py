"""The only module that imports `docker`. Carries out plans on one engine; engine errors are
translated into ours here, so every failure reaches the user as one actionable line.

Engine calls grow with N only where they must: one list call observes every instance (labels
carry hash, spec, GPUs, URL and model, so no per-container inspect), one inspect per distinct
image, and create+start (or stop+remove) per instance that actually changes.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from orchestrator.backends.engine_reads import EngineError, EngineReader, EngineUnreachable, reader_for_environment
from orchestrator.errors import DockerUnavailable, OrchestratorError, PreflightError
from orchestrator.plan import CREATE, RECREATE, REMOVE, START, Action, Observed
from orchestrator.resolve import (
    LABEL_HASH,
    LABEL_INSTANCE,
    LABEL_OWNER,
    LABEL_PROJECT,
    LABEL_SPEC,
    OWNER_UP,
)
from orchestrator.spec import ContainerSpec, InstanceSpec

MAX_WORKERS = 16


def _docker() -> Any:
    """docker-py, imported when first needed: reads do without it (see engine_reads.py)."""
    import docker

    return docker
_GPU_DRIVER_ERROR = "could not select device driver"


@dataclass
class ActionResult:
    action: Action
    ok: bool
    detail: str = ""
    exit_code: int | None = None

    def to_json(self) -> dict[str, Any]:
        doc = self.action.to_json()
        doc.update(ok=self.ok, detail=self.detail)
        if self.exit_code is not None:
            doc["exit_code"] = self.exit_code
        return doc


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


class DockerBackend:
    def __init__(self, base_url: str | None = None):
        self._base_url = base_url
        self._client: Any = None
        self._reader = None if base_url else reader_for_environment()
        self._client_lock = threading.Lock()

    # ------------------------------------------------------------------ connection
    @property
    def api(self) -> Any:
        """docker-py's APIClient, imported on first use (reads go through `_reader` when they can)."""
        with self._client_lock:  # apply()'s worker threads must share one client
            return self._connect()

    def _connect(self) -> Any:
        if self._client is None:
            import docker

            try:
                kwargs: dict[str, Any] = {"version": "auto", "max_pool_size": MAX_WORKERS, "timeout": 120}
                if self._base_url:
                    self._client = docker.DockerClient(base_url=self._base_url, **kwargs)
                else:
                    self._client = docker.from_env(**kwargs)
            except _docker().errors.DockerException as exc:
                host = self._base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
                raise DockerUnavailable(
                    f"cannot reach the Docker engine at {host}: {_reason(exc)} "
                    "(is dockerd running? scripts/setup-host.sh installs and starts one)"
                ) from None
        return self._client.api

    # ------------------------------------------------------------------ observe
    def observe(self, project: str, *, owner: str | None = OWNER_UP) -> list[Observed]:
        """Every container of the project in one list call (owner None: any tool's)."""
        filters = [f"{LABEL_PROJECT}={project}"]
        if owner:
            filters.append(f"{LABEL_OWNER}={owner}")
        if self._reader:
            rows = self._read(lambda r: r.containers(all=True, labels=filters))
        else:
            rows = self._call(lambda: self.api.containers(all=True, filters={"label": filters}))
        return [_observed(row) for row in rows]

    def _read(self, fn: Callable[[EngineReader], Any]) -> Any:
        try:
            return fn(self._reader)
        except EngineUnreachable as exc:
            raise DockerUnavailable(
                f"cannot reach the Docker engine at unix://{self._reader.socket_path}: {exc} "
                "(is dockerd running? scripts/setup-host.sh installs and starts one)"
            ) from None
        except EngineError as exc:
            raise OrchestratorError(f"Docker engine error: {exc}") from None

    def _inspect_image(self, image: str) -> dict[str, Any] | None:
        """The image's inspect document, None when the host does not have it."""
        if self._reader:
            def inspect(reader: EngineReader) -> dict[str, Any] | None:
                try:
                    return reader.inspect_image(image)
                except EngineError as exc:
                    if exc.status == 404:
                        return None
                    raise

            return self._read(inspect)
        try:
            return self._call(lambda: self.api.inspect_image(image))
        except _docker().errors.ImageNotFound:
            return None

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

    # ------------------------------------------------------------------ preflight
    def preflight(self, actions: list[Action]) -> None:
        """Everything that can be known before changing anything (nothing half-done)."""
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
        self._check_names_free([a for a in actions if a.kind == CREATE])
        self._check_ports_free(creating)
        gpu_actions = [a for a in starting if a.spec and a.spec.gpu.mode != "none"]
        if gpu_actions:
            self._check_gpu_runtime(gpu_actions[0])

    def _check_names_free(self, creates: list[Action]) -> None:
        if not creates:
            return
        wanted = {a.spec.container.name: a.instance for a in creates}
        rows = self._read(lambda r: r.containers(all=True)) if self._reader else self._call(lambda: self.api.containers(all=True))
        for row in rows:
            for name in row.get("Names") or []:
                if name.lstrip("/") in wanted:
                    raise PreflightError(
                        f"instance {wanted[name.lstrip('/')]!r}: a container named {name.lstrip('/')} exists and is not "
                        "managed by this project (rename or remove it, or set [docker] project)"
                    )

    def _check_ports_free(self, creating: list[Action]) -> None:
        for action in creating:
            port = action.spec.container.port
            if port is None:
                continue
            old = action.observed
            if old is not None and old.running and port.url == old.labels.get("io.vllm-orch.url"):
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
        probe = self._call(lambda: self.api.create_container(
            container.image, entrypoint=["/bin/sh", "-c", "exit 0"], command=[],
            labels={LABEL_OWNER: "vllm-orch-probe"},
            host_config=self.api.create_host_config(device_requests=_device_requests(container)),
        ))
        try:
            self.api.start(probe["Id"])
            self.api.wait(probe["Id"], timeout=60)
        except _docker().errors.APIError as exc:
            if _GPU_DRIVER_ERROR in str(exc):
                raise PreflightError(_gpu_message(action.instance, container, exc)) from None
            raise PreflightError(f"instance {action.instance!r}: GPU check failed: {_reason(exc)}") from None
        finally:
            try:
                self.api.remove_container(probe["Id"], force=True)
            except _docker().errors.APIError:
                pass

    # ------------------------------------------------------------------ act
    def apply(self, actions: list[Action], on_done: Callable[[ActionResult], None] | None = None) -> list[ActionResult]:
        """Carry out every changing action, independent instances in parallel."""
        work = [a for a in actions if a.kind in (CREATE, RECREATE, START, REMOVE)]
        results: list[ActionResult] = []

        def run(action: Action) -> ActionResult:
            try:
                result = self._apply_one(action)
            except OrchestratorError as exc:
                result = ActionResult(action, False, str(exc))
            if on_done:
                on_done(result)
            return result

        if not work:
            return results
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(work))) as pool:
            results = list(pool.map(run, work))
        return results

    def _apply_one(self, action: Action) -> ActionResult:
        if action.kind == START:
            _prepare_log_file(action.spec.container)  # it may have been deleted while stopped
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
        kwargs = create_kwargs(self.api, spec.container)
        try:
            return self._call(lambda: self.api.create_container(**kwargs))["Id"]
        except _docker().errors.APIError as exc:
            raise OrchestratorError(f"instance {spec.name!r}: create failed: {_reason(exc)}") from None

    def _start(self, container_id: str, instance: str, container: ContainerSpec) -> None:
        try:
            self._call(lambda: self.api.start(container_id))
        except _docker().errors.APIError as exc:
            if _GPU_DRIVER_ERROR in str(exc):
                raise OrchestratorError(_gpu_message(instance, container, exc)) from None
            raise OrchestratorError(f"instance {instance!r}: start failed: {_reason(exc)}") from None

    def _stop_and_remove(self, observed: Observed) -> int | None:
        """SIGTERM, the container's own stop timeout, then SIGKILL (the engine's stop); keep logs."""
        code = None
        try:
            if observed.state in ("running", "restarting", "paused"):
                self.api.stop(observed.id)
            code = self.api.wait(observed.id, timeout=30).get("StatusCode")
            self.api.remove_container(observed.id)
        except _docker().errors.NotFound:
            pass
        except _docker().errors.APIError as exc:
            raise OrchestratorError(f"container {observed.name}: {_reason(exc)}") from None
        return code

    def down(self, project: str, selected: set[str] | None, on_done: Callable[[ActionResult], None] | None = None) -> list[ActionResult]:
        observed = [o for o in self.observe(project) if selected is None or o.instance in selected]
        actions = [Action(REMOVE, o.instance, ("down",), None, o) for o in observed]
        return self.apply(actions, on_done)

    # ------------------------------------------------------------------ one-off commands
    def run_once(self, image: str, argv: list[str], mounts: Iterable[Any] = (), timeout: float = 300) -> tuple[int, str, str]:
        """Run argv in a throwaway, network-less container of image; (exit code, stdout, stderr)."""
        host_config = self.api.create_host_config(
            mounts=[_docker().types.Mount(m.target, m.source, type="bind", read_only=True) for m in mounts],
            network_mode="none",
        )
        try:
            created = self._call(lambda: self.api.create_container(
                image, entrypoint=[argv[0]], command=argv[1:], host_config=host_config,
                labels={LABEL_OWNER: "vllm-orch-probe"}, environment={"PYTHONUNBUFFERED": "1"},
            ))
        except _docker().errors.ImageNotFound:
            raise PreflightError(f"image {image!r} not found on this Docker host") from None
        try:
            self.api.start(created["Id"])
            code = self.api.wait(created["Id"], timeout=timeout).get("StatusCode", -1)
            out = self.api.logs(created["Id"], stdout=True, stderr=False).decode(errors="replace")
            err = self.api.logs(created["Id"], stdout=False, stderr=True).decode(errors="replace")
            return code, out, err
        except _docker().errors.APIError as exc:
            return -1, "", _reason(exc)
        except Exception as exc:  # a read timeout from wait(): the command hung
            if exc.__class__.__module__.startswith(("requests", "urllib3")):
                return -1, "", f"no answer within {timeout:g}s"
            raise
        finally:
            try:
                self.api.remove_container(created["Id"], force=True)
            except _docker().errors.APIError:
                pass

    # ------------------------------------------------------------------ logs
    def engine_log_tail(self, container_name: str, lines: int) -> str:
        """What the engine captured (the entrypoint's own errors, before output went to the file)."""
        try:
            raw = self.api.logs(container_name, tail=lines, stdout=True, stderr=True)
        except _docker().errors.APIError:
            return ""
        return raw.decode(errors="replace")

    # ------------------------------------------------------------------ helpers
    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except _docker().errors.NotFound:
            raise
        except _docker().errors.APIError:
            raise
        except _docker().errors.DockerException as exc:
            raise DockerUnavailable(f"Docker engine error: {_reason(exc)}") from None
        except Exception as exc:  # requests' connection errors when dockerd goes away mid-run
            if exc.__class__.__module__.startswith(("requests", "urllib3")):
                raise DockerUnavailable(f"lost the Docker engine: {exc}") from None
            raise


def _device_request_kwargs(request: dict[str, Any]) -> dict[str, Any]:
    return {
        "driver": request["Driver"],
        "count": request["Count"],
        "device_ids": request["DeviceIDs"],
        "capabilities": request["Capabilities"],
        "options": request["Options"],
    }


def create_kwargs(api: Any, container: ContainerSpec) -> dict[str, Any]:
    """Keyword arguments of APIClient.create_container for one instance (the benchmark's floor
    sends exactly these too)."""
    labels = dict(container.labels)
    labels[LABEL_HASH] = container.config_hash()
    labels[LABEL_SPEC] = json.dumps(container.to_json(), sort_keys=True, separators=(",", ":"))
    port = container.port
    return dict(
        image=container.image,
        entrypoint=list(container.entrypoint),
        command=list(container.command),
        environment=container.environment(reveal=True),
        labels=labels,
        name=container.name,
        host_config=api.create_host_config(**host_config_kwargs(container)),
        stop_signal=container.stop_signal,
        stop_timeout=container.stop_timeout,
        user=container.user or "",
        ports=[(port.container_port, "tcp")] if port else None,
        healthcheck=_healthcheck(container),
    )


def _device_requests(container: ContainerSpec) -> list[Any]:
    return [_docker().types.DeviceRequest(**_device_request_kwargs(r))
            for r in container.gpu.docker_device_requests(container.gpu_driver)]


def host_config_kwargs(container: ContainerSpec) -> dict[str, Any]:
    """HostConfig for the engine, from the value objects (Compose export reads the same spec)."""
    kwargs: dict[str, Any] = {
        "mounts": [
            _docker().types.Mount(m.target, m.source, type="bind", read_only=m.read_only) for m in container.mounts
        ],
        "device_requests": _device_requests(container),
        "init": container.init,
    }
    if container.port:
        kwargs["port_bindings"] = {
            f"{container.port.container_port}/tcp": (container.port.host_address, container.port.host_port)
        }
    if container.shm_size:
        kwargs["shm_size"] = container.shm_size
    if container.ipc_mode:
        kwargs["ipc_mode"] = container.ipc_mode
    if container.network_mode:
        kwargs["network_mode"] = container.network_mode
    if container.restart and container.restart != "no":
        kwargs["restart_policy"] = {"Name": container.restart}
    return kwargs


def _healthcheck(container: ContainerSpec) -> dict[str, Any] | None:
    check = container.healthcheck
    if check is None:
        return None
    return {
        "test": list(check.test),
        "interval": _ns(check.interval_s),
        "timeout": _ns(check.timeout_s),
        "retries": check.retries,
        "start_period": _ns(check.start_period_s),
    }


def _prepare_log_file(container: ContainerSpec) -> None:
    """The log file must exist before a file bind mount; it is appended to, never truncated."""
    path = Path(container.host_log_file)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        uid, _, gid = (container.user or "").partition(":")
        if uid.isdigit():
            os.chown(path, int(uid), int(gid) if gid.isdigit() else -1)
        elif container.user:
            path.chmod(0o666)  # a named user's uid is only known inside the image
    except OSError as exc:
        raise OrchestratorError(f"cannot prepare log file {path}: {exc.strerror}") from None


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


def _gpu_message(instance: str, container: ContainerSpec, exc: Exception) -> str:
    return (
        f"instance {instance!r} asks for GPUs (gpu_ids = {container.gpu.describe()!r}) but this Docker host has no "
        f"NVIDIA runtime ({_reason(exc)}): install the NVIDIA container toolkit, or set gpu_ids = \"none\""
    )


def _reason(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation.decode() if isinstance(explanation, bytes) else explanation)
    return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
