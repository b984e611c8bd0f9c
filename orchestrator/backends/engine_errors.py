"""What the two engine clients (engine_socket.py, engine_sdk.py) raise, and the address they
answer for: apart from engine.py, which picks the client, so that neither client imports the
module that imports it."""

from __future__ import annotations

from typing import Mapping

DEFAULT_SOCKET = "/var/run/docker.sock"


class EngineError(Exception):
    """The engine answered with an error status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status

    @property
    def not_found(self) -> bool:
        return self.status == 404


class EngineUnreachable(Exception):
    """No engine at the address, or it went away mid-call."""


class EngineTimeout(Exception):
    """The engine did not answer within the call's timeout (e.g. `wait` on a hung command)."""


def address_of(resolved_env: Mapping[str, str]) -> str:
    """The engine address of an environment engine_environment has already resolved."""
    return resolved_env.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
