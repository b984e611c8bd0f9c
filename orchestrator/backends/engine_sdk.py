"""The Engine API through the Docker SDK for Python (docker-py): the client for engines that are
not a plain local unix socket (tcp:// with TLS, ssh://), and for any engine with
VLLM_ORCH_DOCKER_CLIENT=sdk. The only module that imports `docker`.

It sends the very request bodies the socket client sends (engine_body.py), through docker-py's
low-level APIClient, and translates docker-py's and requests' exceptions into engine.py's.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, TypeVar

from orchestrator.backends.docker_context import engine_environment
from orchestrator.backends.engine_errors import EngineError, EngineTimeout, EngineUnreachable, address_of

MAX_POOL = 16  # one connection per worker thread of DockerBackend.apply
DEFAULT_TIMEOUT = 120
T = TypeVar("T")


class SdkEngine:
    def __init__(self, env: Mapping[str, str] = os.environ, timeout: int = DEFAULT_TIMEOUT):
        """The engine that DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH in env name, or
        else the Docker CLI's current context."""
        import docker  # ~0.17 s: requests and urllib3 come with it

        self._docker = docker
        env = engine_environment(env)  # a no-op when engine_for_environment made it
        self.address = address_of(env)
        try:
            client = docker.from_env(environment=dict(env), version="auto", max_pool_size=MAX_POOL, timeout=timeout)
        except docker.errors.DockerException as exc:
            raise EngineUnreachable(_reason(exc)) from None
        self.api = client.api

    def _call(self, fn: Callable[[], T]) -> T:
        errors = self._docker.errors
        try:
            return fn()
        except errors.APIError as exc:
            raise EngineError(exc.status_code or 500, _reason(exc)) from None
        except errors.DockerException as exc:
            raise EngineUnreachable(_reason(exc)) from None
        except Exception as exc:
            module = exc.__class__.__module__
            if not module.startswith(("requests", "urllib3")):
                raise
            if "timed out" in str(exc).lower() or "Timeout" in exc.__class__.__name__:
                raise EngineTimeout(str(exc)) from None
            raise EngineUnreachable(str(exc)) from None

    def containers(self, *, labels: list[str] | None = None) -> list[dict[str, Any]]:
        return self._call(lambda: self.api.containers(all=True, filters={"label": labels} if labels else None))

    def inspect_image(self, name: str) -> dict[str, Any]:
        return self._call(lambda: self.api.inspect_image(name))

    def create(self, name: str | None, body: dict[str, Any]) -> str:
        return self._call(lambda: self.api.create_container_from_config(body, name=name))["Id"]

    def start(self, container: str) -> None:
        self._call(lambda: self.api.start(container))

    def stop(self, container: str, *, grace_s: int | None = None) -> None:
        self._call(lambda: self.api.stop(container, timeout=grace_s))

    def restart(self, container: str, *, grace_s: int | None = None) -> None:
        self._call(lambda: self.api.restart(container, timeout=grace_s if grace_s is not None else 10))

    def wait(self, container: str, timeout: float) -> int:
        return int(self._call(lambda: self.api.wait(container, timeout=timeout)).get("StatusCode", -1))

    def remove(self, container: str, *, force: bool = False) -> None:
        self._call(lambda: self.api.remove_container(container, force=force))

    def logs(self, container: str, *, stdout: bool = True, stderr: bool = True, tail: int | None = None) -> bytes:
        return self._call(lambda: self.api.logs(container, stdout=stdout, stderr=stderr,
                                                tail="all" if tail is None else tail))


def _reason(exc: Exception) -> str:
    explanation = getattr(exc, "explanation", None)
    if explanation:
        return str(explanation.decode() if isinstance(explanation, bytes) else explanation)
    return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
