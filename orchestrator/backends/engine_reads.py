"""Read-only Docker Engine API calls over the local unix socket, with the standard library.

`ps`, a no-change `up` and `validate` only read (one container list, one inspect per image).
Importing docker-py pulls in requests and urllib3, which costs more than those calls take
(~0.15 s of a ~0.3 s `ps`); these few GETs do not need it. Everything that changes the engine
(create, start, stop, remove) still goes through the Docker SDK in `docker.py`. Other engine
addresses (tcp://, ssh://, TLS) are left to the SDK as well: `reader_for_environment()` returns
None for them.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, Mapping
from urllib.parse import quote, urlencode

DEFAULT_SOCKET = "/var/run/docker.sock"


class EngineError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class EngineUnreachable(Exception):
    pass


class EngineReader:
    def __init__(self, socket_path: str = DEFAULT_SOCKET, timeout: float = 60):
        self.socket_path = socket_path
        self.timeout = timeout

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """One GET as HTTP/1.0: the engine answers with a plain body and closes the connection,
        so no chunked decoding and no http.client (whose import costs more than the call)."""
        url = path + ("?" + urlencode(params) if params else "")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path)
                sock.sendall(f"GET {url} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
                chunks = []
                while True:
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except OSError as exc:
            raise EngineUnreachable(f"{exc.__class__.__name__}: {exc}") from None
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        try:
            status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise EngineUnreachable(f"unexpected answer from the engine: {head[:80]!r}") from None
        if status >= 400:
            try:
                message = json.loads(body).get("message", "")
            except ValueError:
                message = body.decode(errors="replace")
            raise EngineError(status, message or f"HTTP {status}")
        return json.loads(body) if body else None

    def containers(self, *, all: bool = True, labels: list[str] | None = None) -> list[dict[str, Any]]:
        params = {"all": "1" if all else "0"}
        if labels:
            params["filters"] = json.dumps({"label": labels})
        return self.get("/containers/json", params)

    def inspect_image(self, name: str) -> dict[str, Any]:
        return self.get(f"/images/{quote(name, safe='')}/json")


def reader_for_environment(env: Mapping[str, str] = os.environ) -> EngineReader | None:
    """A reader when the engine is a local unix socket (the default), else None."""
    host = env.get("DOCKER_HOST", "")
    if not host:
        return EngineReader(DEFAULT_SOCKET)
    if host.startswith("unix://") and not env.get("DOCKER_TLS_VERIFY"):
        return EngineReader(host[len("unix://"):])
    return None
