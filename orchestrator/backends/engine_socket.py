"""The Engine API over a local unix socket with the standard library (see engine.py for why).

Each call is one HTTP/1.0 request on a fresh connection: the engine then answers with a plain
body and closes, so there is no chunked decoding, no connection pool to share between threads,
and no http.client (whose import alone costs more than a list call). Paths carry no API version:
the engine serves its own current one, as for the docker CLI's unversioned requests, and every
field used here has been stable since API 1.41 (Docker 20.10).
"""

from __future__ import annotations

import json
import socket
import struct
import time
from typing import Any, Mapping
from urllib.parse import quote, urlencode

from orchestrator.backends.engine_errors import EngineError, EngineTimeout, EngineUnreachable

DEFAULT_TIMEOUT = 120.0


class SocketEngine:
    def __init__(self, socket_path: str, timeout: float = DEFAULT_TIMEOUT):
        self.socket_path = socket_path
        self.address = f"unix://{socket_path}"
        self.timeout = timeout

    # ------------------------------------------------------------------ transport
    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        body: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> tuple[int, bytes]:
        """(status, body) of one call; an error status raises EngineError with the engine's message."""
        url = path + ("?" + urlencode(params) if params else "")
        head = f"{method} {url} HTTP/1.0\r\nHost: docker\r\n"
        payload = b""
        if body is not None:
            payload = json.dumps(body, separators=(",", ":")).encode()
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        timeout = timeout or self.timeout
        deadline = time.monotonic() + timeout
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(self.socket_path)
                sock.sendall(head.encode() + b"\r\n" + payload)
                chunks = []
                while True:
                    sock.settimeout(max(deadline - time.monotonic(), 0.001))
                    chunk = sock.recv(1 << 16)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except socket.timeout:
            raise EngineTimeout(f"no answer to {method} {path} within {timeout:g}s") from None
        except OSError as exc:
            raise EngineUnreachable(f"{exc.__class__.__name__}: {exc}") from None
        head_bytes, _, data = b"".join(chunks).partition(b"\r\n\r\n")
        if not head_bytes:  # it went away mid-call (stopped, crashed)
            raise EngineUnreachable(f"the engine closed the connection without answering {method} {path}")
        try:
            status = int(head_bytes.split(b" ", 2)[1])
        except (IndexError, ValueError):
            raise EngineUnreachable(f"unexpected answer from the engine: {head_bytes[:80]!r}") from None
        if status >= 400:
            try:
                message = json.loads(data).get("message", "")
            except (ValueError, AttributeError):
                message = data.decode(errors="replace").strip()
            raise EngineError(status, message or f"HTTP {status}")
        return status, data

    def _json(self, method: str, path: str, params: Mapping[str, Any] | None = None,
              body: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        _, data = self.request(method, path, params, body, timeout)
        return json.loads(data) if data else None

    # ------------------------------------------------------------------ calls
    def containers(self, *, labels: list[str] | None = None) -> list[dict[str, Any]]:
        params = {"all": "1"}
        if labels:
            params["filters"] = json.dumps({"label": labels})
        return self._json("GET", "/containers/json", params)

    def inspect_image(self, name: str) -> dict[str, Any]:
        return self._json("GET", f"/images/{quote(name, safe='')}/json")

    def create(self, name: str | None, body: dict[str, Any]) -> str:
        return self._json("POST", "/containers/create", {"name": name} if name else None, body)["Id"]

    def start(self, container: str) -> None:
        self.request("POST", f"/containers/{quote(container)}/start")  # 304: already running

    def stop(self, container: str, *, grace_s: int | None = None) -> None:
        """SIGTERM, then SIGKILL after grace_s (None: the container's own StopTimeout); 304 when
        it was not running. Our wait for the answer is bounded by the grace plus the usual timeout."""
        params = {"t": grace_s} if grace_s is not None else None
        self.request("POST", f"/containers/{quote(container)}/stop", params, timeout=self.timeout + (grace_s or 0))

    def restart(self, container: str, *, grace_s: int | None = None) -> None:
        """Stop (SIGTERM, SIGKILL after grace_s) and start the same container: its id, filesystem
        and bind mounts stay, so the engine keeps its caches and the log file goes on."""
        params = {"t": grace_s} if grace_s is not None else None
        self.request("POST", f"/containers/{quote(container)}/restart", params, timeout=self.timeout + (grace_s or 0))

    def wait(self, container: str, timeout: float) -> int:
        return int(self._json("POST", f"/containers/{quote(container)}/wait", timeout=timeout).get("StatusCode", -1))

    def remove(self, container: str, *, force: bool = False) -> None:
        self.request("DELETE", f"/containers/{quote(container)}", {"force": "1"} if force else None)

    def logs(self, container: str, *, stdout: bool = True, stderr: bool = True, tail: int | None = None) -> bytes:
        params = {"stdout": int(stdout), "stderr": int(stderr)}
        if tail is not None:
            params["tail"] = tail
        _, data = self.request("GET", f"/containers/{quote(container)}/logs", params)
        return demultiplex(data)


def demultiplex(data: bytes) -> bytes:
    """The payloads of the engine's framed log stream (containers without a TTY): each frame is
    a stream byte, three zero bytes, a big-endian length, then that many bytes."""
    out = []
    pos = 0
    while pos + 8 <= len(data):
        kind, size = data[pos], struct.unpack(">I", data[pos + 4:pos + 8])[0]
        if kind > 2 or data[pos + 1:pos + 4] != b"\0\0\0":
            return data  # not framed (a TTY container): the bytes are the output
        out.append(data[pos + 8:pos + 8 + size])
        pos += 8 + size
    return b"".join(out)
