"""An in-memory Docker engine behind the `Engine` interface (orchestrator/backends/engine.py), for
the Docker backend's unit tests only. It is a stand-in: it runs nothing, and the integration tier
(tests/integration) runs the same backend against the real engine. What it keeps is what the
backend reads: containers with their names, labels, image, state and status text and published
ports as the real list call (`GET /containers/json?all=1`) reports them, images by name, and the
errors of the real clients (EngineError with the engine's status, EngineUnreachable,
EngineTimeout). Every call is recorded, in order, so a test can count what a command cost.

A container made with the probe owner label (a throwaway command: option tables, GPU checks)
runs to completion when started, with the result `probe` gives for its create body; any other
container runs until stopped, then exits with its `exit_code` (0, as a vLLM server that honours
SIGTERM; set 137 for one that had to be killed).
"""

from __future__ import annotations

import copy
import itertools
import threading
from typing import Any, Callable, Iterable

from orchestrator.backends.engine import EngineError, EngineTimeout, EngineUnreachable
from orchestrator.backends.engine_body import PROBE_OWNER
from orchestrator.labels import LABEL_OWNER

WRITE_CALLS = ("create", "start", "stop", "remove")  # the calls that change something on the engine
ProbeResult = tuple[int, bytes, bytes]  # exit code, stdout, stderr


class FakeContainer:
    def __init__(self, container_id: str, name: str, body: dict[str, Any], image_id: str):
        self.id = container_id
        self.name = name
        self.body = body
        self.image_id = image_id
        self.state = "created"
        self.status = "Created"
        self.exit_code = 0  # what it exits with when stopped (or, for a probe, when it finishes)
        self.stdout = b""
        self.stderr = b""

    @property
    def labels(self) -> dict[str, str]:
        return self.body.get("Labels") or {}

    def row(self) -> dict[str, Any]:
        """The container as the engine's list call reports it."""
        return {
            "Id": self.id,
            "Names": [f"/{self.name}"],
            "Image": self.body.get("Image", ""),
            "ImageID": self.image_id,
            "Command": " ".join([*self.body.get("Entrypoint", []), *self.body.get("Cmd", [])]),
            "Labels": dict(self.labels),
            "State": self.state,
            "Status": self.status,
            "Ports": self._ports(),
        }

    def _ports(self) -> list[dict[str, Any]]:
        # Published while its network is up: running, or paused (`docker pause` only freezes the
        # processes). A created or exited container lists none (as engine 20.10 does).
        if self.state not in ("running", "paused"):
            return []
        bindings = (self.body.get("HostConfig") or {}).get("PortBindings") or {}
        rows = []
        for key, hosts in bindings.items():
            port, _, kind = key.partition("/")
            for host in hosts:
                rows.append({"IP": host.get("HostIp") or "0.0.0.0", "PrivatePort": int(port),
                             "PublicPort": int(host["HostPort"]), "Type": kind or "tcp"})
        return rows

    def run(self) -> None:
        self.state = "running"
        health = " (health: starting)" if self.body.get("Healthcheck") else ""
        self.status = f"Up Less than a second{health}"

    def exit(self, code: int) -> None:
        self.state = "exited"
        self.exit_code = code
        self.status = f"Exited ({code}) Less than a second ago"


class FakeEngine:
    """The `Engine` interface in memory; see the module docstring. The backend's apply() calls
    it from several threads, so every call holds one lock."""

    def __init__(self, images: dict[str, str] | None = None, *, address: str = "tcp://fake-engine:2376",
                 probe: Callable[[dict[str, Any]], ProbeResult] = lambda body: (0, b"", b"")):
        """`images`: name -> image id. `address`: a remote one by default, so that the backend
        does not check this machine's ports and disks for an engine that is not on it."""
        self.address = address
        self.images = dict(images or {})
        self.probe = probe
        self.containers_by_id: dict[str, FakeContainer] = {}
        self.calls: list[tuple[Any, ...]] = []
        self._failures: list[tuple[str, str | None, Exception, int | None]] = []
        self._unreachable = False
        self._ids = itertools.count(1)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ test set-up
    def add(self, name: str, *, labels: dict[str, str] | None = None, image: str = "img:1", state: str = "running",
            ports: Iterable[tuple[str, int]] = (), body: dict[str, Any] | None = None, exit_code: int = 0) -> str:
        """A container already on the engine (made by anyone), without recording a call.
        `ports`: (host address, host port) published from the container's 8000/tcp."""
        if body is None:
            body = {"Image": image, "Labels": dict(labels or {}), "HostConfig": {}}
            bindings = [{"HostIp": address, "HostPort": str(port)} for address, port in ports]
            if bindings:
                body["HostConfig"]["PortBindings"] = {"8000/tcp": bindings}
        with self._lock:
            container = self._new(name, copy.deepcopy(body))
            if state == "running":
                container.run()
            elif state == "exited":
                container.exit(exit_code)
            elif state == "paused":  # `docker pause`
                container.state, container.status = "paused", "Up Less than a second (Paused)"
            elif state != "created":
                container.state, container.status = state, state.capitalize()
            container.exit_code = exit_code
            return container.id

    def fail(self, call: str, error: Exception, *, target: str | None = None, times: int | None = None) -> None:
        """Make `call` (on the container with that id or name, or on any) raise `error`,
        `times` times (None: every time)."""
        self._failures.append((call, target, error, times))

    def disconnect(self) -> None:
        """The engine goes away: every later call is EngineUnreachable, as when dockerd stops."""
        self._unreachable = True

    def by_name(self, name: str) -> FakeContainer | None:
        return next((c for c in self.containers_by_id.values() if c.name == name), None)

    def names(self) -> list[str]:
        return sorted(c.name for c in self.containers_by_id.values())

    def writes(self) -> list[tuple[Any, ...]]:
        """The recorded calls that changed something on the engine."""
        return [call for call in self.calls if call[0] in WRITE_CALLS]

    def count(self, call: str) -> int:
        return sum(1 for recorded in self.calls if recorded[0] == call)

    # ------------------------------------------------------------------ the Engine interface
    def containers(self, *, labels: list[str] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            self._enter("containers", None, tuple(labels or ()))
            return [c.row() for c in self.containers_by_id.values() if _matches(c.labels, labels or [])]

    def inspect_image(self, name: str) -> dict[str, Any]:
        with self._lock:
            self._enter("inspect_image", name)
            if name not in self.images:
                raise EngineError(404, f"No such image: {name}")
            return {"Id": self.images[name], "RepoTags": [name]}

    def create(self, name: str | None, body: dict[str, Any]) -> str:
        with self._lock:
            self._enter("create", name)
            image = body.get("Image", "")
            if image not in self.images:
                raise EngineError(404, f"No such image: {image}")
            if name is not None and self.by_name(name) is not None:
                holder = self.by_name(name)
                raise EngineError(409, f'Conflict. The container name "/{name}" is already in use by container '
                                       f'"{holder.id}". You have to remove (or rename) that container to be able '
                                       "to reuse that name.")
            return self._new(name, copy.deepcopy(body)).id

    def start(self, container: str) -> None:
        with self._lock:
            self._enter("start", container)
            found = self._find(container)
            if found.state == "running":
                return  # 304: already running
            found.run()
            if found.labels.get(LABEL_OWNER) == PROBE_OWNER:
                code, found.stdout, found.stderr = self.probe(found.body)
                found.exit(code)

    def stop(self, container: str, *, grace_s: int | None = None) -> None:
        with self._lock:
            self._enter("stop", container, grace_s)
            found = self._find(container)
            if found.state in ("running", "restarting", "paused"):
                found.exit(found.exit_code)

    def restart(self, container: str, *, grace_s: int | None = None) -> None:
        with self._lock:
            self._enter("restart", container, grace_s)
            found = self._find(container)
            if found.state in ("running", "restarting", "paused"):
                found.exit(found.exit_code)
            found.run()

    def wait(self, container: str, timeout: float) -> int:
        with self._lock:
            self._enter("wait", container)
            found = self._find(container)
            if found.state in ("running", "restarting", "paused"):
                # The real call blocks until the container exits; a server never does by itself.
                raise EngineTimeout(f"no answer to POST /containers/{container}/wait within {timeout:g}s")
            return found.exit_code

    def remove(self, container: str, *, force: bool = False) -> None:
        with self._lock:
            self._enter("remove", container, force)
            found = self._find(container)
            if found.state == "running" and not force:
                raise EngineError(409, f"You cannot remove a running container {found.id}. Stop the container "
                                       "before attempting removal or force remove")
            del self.containers_by_id[found.id]

    def logs(self, container: str, *, stdout: bool = True, stderr: bool = True, tail: int | None = None) -> bytes:
        with self._lock:
            self._enter("logs", container)
            found = self._find(container)
            data = (found.stdout if stdout else b"") + (found.stderr if stderr else b"")
            if tail is not None:
                data = b"".join(data.splitlines(keepends=True)[-tail:]) if tail > 0 else b""
            return data

    # ------------------------------------------------------------------ internals
    def _new(self, name: str | None, body: dict[str, Any]) -> FakeContainer:
        container_id = f"{next(self._ids):012x}" + "0" * 52
        image_id = self.images.get(body.get("Image", ""), "")
        container = FakeContainer(container_id, name or f"probe_{container_id[:12]}", body, image_id)
        self.containers_by_id[container_id] = container
        return container

    def _find(self, ref: str) -> FakeContainer:
        found = self.containers_by_id.get(ref) or self.by_name(ref)
        if found is None:
            raise EngineError(404, f"No such container: {ref}")
        return found

    def _enter(self, call: str, target: str | None, *details: Any) -> None:
        """Record the call, then fail it as the test arranged."""
        self.calls.append((call, target, *details))
        if self._unreachable:
            raise EngineUnreachable("FileNotFoundError: [Errno 2] No such file or directory (fake engine gone)")
        names = {target}
        if target is not None and target in self.containers_by_id:
            names.add(self.containers_by_id[target].name)
        for index, (failing, on, error, times) in enumerate(self._failures):
            if failing == call and (on is None or on in names) and times != 0:
                if times is not None:
                    self._failures[index] = (failing, on, error, times - 1)
                if isinstance(error, EngineUnreachable):
                    self._unreachable = True  # an engine that went away stays away
                raise error


def _matches(labels: dict[str, str], filters: list[str]) -> bool:
    """The engine's label filter: every "key=value" equal, every bare "key" present."""
    for wanted in filters:
        key, sep, value = wanted.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True
