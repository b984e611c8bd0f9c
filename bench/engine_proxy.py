"""A counting pass-through proxy for the Docker engine's unix socket.

Point a client at it with DOCKER_HOST=unix://<proxy.path> and every HTTP request it sends to the
engine is recorded as (method, path), whatever library sends it (docker-py, the stdlib, the docker
CLI). Bytes are forwarded unchanged in both directions; requests are recognised by their request
line on the client-to-engine stream. Used by bench/run.py (API calls per command and N) and by
tests/integration/test_api_call_shape.py.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

_REQUEST_LINE = re.compile(rb"(GET|POST|PUT|DELETE|HEAD|PATCH) (/\S*) HTTP/1\.[01]$")


def upstream_socket() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        return host[len("unix://"):]
    if host:
        raise RuntimeError(f"engine_proxy only forwards to a unix socket, DOCKER_HOST is {host}")
    return "/var/run/docker.sock"


def call_shape(method: str, path: str) -> str:
    """`GET /containers/json`, `POST /containers/{id}/start`: version prefix, ids and query cut."""
    path = re.sub(r"^[a-z+]+://[^/]*", "", path).split("?", 1)[0]
    path = re.sub(r"^/v\d+\.\d+", "", path)
    if path.startswith("/images/") and path.endswith("/json"):
        return f"{method} /images/{{name}}/json"
    match = re.match(r"^/containers/([^/]+)(/\w+)?$", path)
    if match and match.group(1) not in ("json", "create"):
        return f"{method} /containers/{{id}}{match.group(2) or ''}"
    return f"{method} {path}"


class EngineProxy:
    def __init__(self, upstream: str | None = None):
        self.upstream = upstream or upstream_socket()
        self._dir = tempfile.mkdtemp(prefix="engine-proxy-")
        self.path = str(Path(self._dir) / "docker.sock")
        self.requests: list[tuple[str, str, float]] = []  # method, path, time.monotonic() seen
        self._lock = threading.Lock()
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(self.path)
        self._server.listen(128)
        self._closed = False
        self.last_answer = 0.0  # time.monotonic() of the last bytes from the engine
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def docker_host(self) -> str:
        return f"unix://{self.path}"

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self.last_answer = 0.0

    def counts(self) -> collections.Counter:
        with self._lock:
            return collections.Counter(call_shape(m, p) for m, p, _ in self.requests)

    def timeline(self) -> list[tuple[str, float]]:
        """(shape, monotonic time) of every request so far, in order."""
        with self._lock:
            return [(call_shape(m, p), t) for m, p, t in self.requests]

    def close(self) -> None:
        self._closed = True
        try:
            self._server.close()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "EngineProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            engine = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                engine.connect(self.upstream)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pump, args=(client, engine, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(engine, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, sniff: bool) -> None:
        carry = b""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if sniff:
                    carry = self._sniff(carry + data)
                sink.sendall(data)
                if not sniff:
                    self.last_answer = time.monotonic()
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def _sniff(self, buffer: bytes) -> bytes:
        now = time.monotonic()
        *lines, rest = buffer.split(b"\r\n")
        for line in lines:
            match = _REQUEST_LINE.search(line)
            if match:
                with self._lock:
                    self.requests.append((match.group(1).decode(), match.group(2).decode(errors="replace"), now))
        return rest[-8192:]
