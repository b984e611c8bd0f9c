"""The Docker Engine API calls vllm-orch makes, behind one small interface with two clients.

* `engine_socket.SocketEngine`: the standard library over a local unix socket, the default for
  the engine on this host (`unix://`, no TLS), which is where a GPU server's fleet runs.
* `engine_sdk.SdkEngine`: the Docker SDK for Python (docker-py), for every other engine address
  (`tcp://` with TLS, `ssh://`), or anywhere with VLLM_ORCH_DOCKER_CLIENT=sdk.

Why two: importing docker-py (requests, urllib3) costs ~0.17 s of CPU on a small machine, more
than the engine needs to answer all of `ps`, and a fixed share of every cold `up` and `down`
that made vllm-orch slower than Compose at small N (bench/README.md). The calls themselves are
a dozen plain HTTP requests with JSON bodies built once, in `engine_body.py`, and sent as they
are by both clients, so the containers are identical whichever client made them. The SDK keeps
what it is good at: remote transports and TLS. Which engine: as the Docker CLI decides
(docker_context.py), so a `docker context use` applies to vllm-orch too.

Both clients raise only the errors of engine_errors.py (imported here for every caller); `backends/docker.py` turns those into the user's one line.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Protocol
from urllib.parse import urlsplit

from orchestrator.backends.docker_context import engine_environment
from orchestrator.backends.engine_errors import (  # the clients' errors, named here for every caller
    DEFAULT_SOCKET,
    EngineError,
    EngineTimeout,
    EngineUnreachable,
    address_of,
)
from orchestrator.errors import OrchestratorError

__all__ = ["DEFAULT_SOCKET", "Engine", "EngineError", "EngineTimeout", "EngineUnreachable", "address_of",
           "engine_address", "engine_for_environment", "is_local_address", "local_socket"]

CLIENT_ENV = "VLLM_ORCH_DOCKER_CLIENT"  # "sdk" or "socket"; unset: socket when the engine is local


class Engine(Protocol):
    """The engine calls vllm-orch makes; ids may be container ids or names."""

    address: str

    def containers(self, *, labels: list[str] | None = None) -> list[dict[str, Any]]: ...
    def inspect_image(self, name: str) -> dict[str, Any]: ...
    def create(self, name: str | None, body: dict[str, Any]) -> str: ...
    def start(self, container: str) -> None: ...
    def stop(self, container: str, *, grace_s: int | None = None) -> None: ...
    def restart(self, container: str, *, grace_s: int | None = None) -> None: ...
    def wait(self, container: str, timeout: float) -> int: ...
    def remove(self, container: str, *, force: bool = False) -> None: ...
    def logs(self, container: str, *, stdout: bool = True, stderr: bool = True, tail: int | None = None) -> bytes: ...


def engine_for_environment(env: Mapping[str, str] = os.environ) -> Engine:
    """The client for the engine the Docker CLI would use: DOCKER_HOST (with DOCKER_TLS_VERIFY
    and DOCKER_CERT_PATH), else the CLI's current context, else the default socket."""
    env = engine_environment(env)
    choice = env.get(CLIENT_ENV, "").strip().lower()
    if choice not in ("", "sdk", "socket"):
        raise OrchestratorError(f"{CLIENT_ENV}={choice!r}: use 'sdk' or 'socket' (or leave it unset)")
    socket_path = local_socket(env)
    if choice == "sdk" or socket_path is None:
        if choice == "socket":
            raise OrchestratorError(f"{CLIENT_ENV}=socket needs a local unix:// engine, not DOCKER_HOST={env.get('DOCKER_HOST')!r}")
        from orchestrator.backends.engine_sdk import SdkEngine

        return SdkEngine(env)
    from orchestrator.backends.engine_socket import SocketEngine

    return SocketEngine(socket_path)


def engine_address(env: Mapping[str, str] = os.environ) -> str:
    return address_of(engine_environment(env))


def is_local_address(address: str) -> bool:
    """Whether the engine runs on this machine, so that its host ports and paths are ours to check."""
    if address.startswith("unix://"):
        return True
    return urlsplit(address).hostname in ("localhost", "127.0.0.1", "::1")


def local_socket(env: Mapping[str, str] = os.environ) -> str | None:
    """The unix socket path when the engine is local and plain, else None (env as
    engine_environment leaves it)."""
    host = env.get("DOCKER_HOST", "")
    if not host:
        return DEFAULT_SOCKET
    if host.startswith("unix://") and not env.get("DOCKER_TLS_VERIFY"):
        return host[len("unix://"):]
    return None
