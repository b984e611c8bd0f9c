"""The activator's two listeners, on 127.0.0.1: HTTP (the held requests, /health, /metrics,
/status) and HAProxy's agent checks (one line in: the instance; one line out: `ready up` or
`maint`). Standard library only; one thread per connection (the slow path holds a few requests
for seconds, it does not serve throughput).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import socketserver
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Mapping

from orchestrator.activator.core import Activator, HoldTimeout, RETRY_AFTER_S, StartFailed

HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "content-length",
       "host"}
MAX_BODY = 64 << 20


def error_body(status: int, message: str, kind: str) -> bytes:
    return (json.dumps({"error": {"message": message, "type": kind, "param": None, "code": status}}) + "\n").encode()


def keys(path: str) -> set[str]:
    if not path:
        return set()
    try:
        with open(path) as handle:
            return {line.strip() for line in handle if line.strip()}
    except OSError:
        return {"\0unreadable"}  # a key is configured but cannot be read: nobody gets in


def metrics_text(activator: Activator) -> str:
    stats = activator.stats
    lines = []

    def family(name: str, kind: str, help_: str, values: Mapping[str, float]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for model, value in sorted(values.items()):
            lines.append(f'{name}{{model={json.dumps(model)}}} {value}')

    family("vllm_orch_activator_starts_total", "counter", "instances started or woken for a request", stats.starts)
    family("vllm_orch_activator_stops_total", "counter", "instances stopped or put to sleep (idle, or for room)",
           stats.stops)
    family("vllm_orch_activator_start_failures_total", "counter", "starts that did not answer /health", stats.failures)
    family("vllm_orch_activator_cold_start_seconds", "gauge", "the last cold start: container start to /health",
           stats.cold_s)
    family("vllm_orch_activator_wake_seconds", "gauge", "the last wake from sleep to /health", stats.wake_s)
    return "\n".join(lines) + "\n"


class Handler(BaseHTTPRequestHandler):
    activator: Activator  # set on the subclass made by serve()
    server_version = "vllm-orch-activator"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - errors go to the log only
        pass

    def _answer(self, status: int, body: bytes, kind: str = "application/json", extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _authorized(self) -> bool:
        wanted = keys(self.activator.state.keys_file)
        if not wanted:
            return True
        header = self.headers.get("Authorization", "")
        return header.startswith("Bearer ") and header[7:].strip() in wanted

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/health":
            return self._answer(200, b"ok\n", "text/plain")
        if self.path == "/metrics":
            return self._answer(200, metrics_text(self.activator).encode(), "text/plain; version=0.0.4")
        if self.path == "/status":
            return self._answer(200, json.dumps(self.activator.snapshot()).encode())
        return self._answer(404, error_body(404, "no such route on the activator", "NotFoundError"))

    def do_POST(self) -> None:  # noqa: N802
        if not self._authorized():
            return self._answer(401, error_body(401, "missing or wrong API key: send `Authorization: Bearer <key>`",
                                                "AuthenticationError"), extra={"WWW-Authenticate": "Bearer"})
        body = self._body()
        try:
            model = json.loads(body).get("model")
        except (ValueError, AttributeError):
            model = None
        if not isinstance(model, str):
            return self._answer(400, error_body(400, "the body must be a JSON object naming a `model`", "BadRequestError"))
        try:
            tracked = self.activator.acquire(model)
        except KeyError:
            return self._answer(503, error_body(503, f"no replica of {model} is up, and none is on demand",
                                                "ServiceUnavailableError"))
        except HoldTimeout:
            return self._answer(503, error_body(
                503, f"{model} is still starting after {self.activator.state.hold_s:g}s; try again shortly",
                "ServiceUnavailableError"), extra={"Retry-After": str(RETRY_AFTER_S)})
        except StartFailed as exc:
            retry = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))} if exc.retry_after else None
            return self._answer(503, error_body(503, str(exc), "ServiceUnavailableError"), extra=retry)
        try:
            self._forward(tracked.spec.address, body)
        finally:
            self.activator.release(tracked)

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(min(length, MAX_BODY))

    def _forward(self, address: str, body: bytes) -> None:
        """The request to the instance; its answer relayed as it comes (a stream stays a stream)."""
        host, _, port = address.rpartition(":")
        upstream = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=3600)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        headers["Content-Length"] = str(len(body))
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            answer = upstream.getresponse()
            self.send_response(answer.status, answer.reason)
            for key, value in answer.getheaders():
                if key.lower() not in HOP:
                    self.send_header(key, value)
            length = answer.getheader("Content-Length")
            if length is not None:
                self.send_header("Content-Length", length)
            self.send_header("Connection", "close")
            self.end_headers()
            while True:
                chunk = answer.read1(65536)
                if not chunk:
                    break
                self.wfile.write(chunk)
                self.wfile.flush()
        except (OSError, http.client.HTTPException) as exc:
            try:
                self._answer(502, error_body(502, f"the instance at {address} failed: {exc}", "BadGatewayError"))
            except OSError:
                pass
        finally:
            upstream.close()
            self.close_connection = True


class _Agent(socketserver.StreamRequestHandler):
    activator: Activator

    def handle(self) -> None:
        # HAProxy sends `agent-send` and keeps its side open: read what came, not up to a newline.
        self.request.settimeout(2.0)
        try:
            name = self.request.recv(256).decode(errors="replace").strip()
        except OSError:
            return
        self.wfile.write(self.activator.agent_answer(name).encode())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionResetError, BrokenPipeError)):
            return  # HAProxy's health check closes at once (and a client may go away): not news
        super().handle_error(request, client_address)


class _AgentServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve(activator: Activator, host: str, port: int, agent_port: int) -> tuple[ThreadingHTTPServer, socketserver.TCPServer]:
    """Both listeners, bound (the caller runs serve_forever in threads)."""
    handler = type("BoundHandler", (Handler,), {"activator": activator})
    agent = type("BoundAgent", (_Agent,), {"activator": activator})
    return _Server((host, port), handler), _AgentServer((host, agent_port), agent)


def state_mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0
