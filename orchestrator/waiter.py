"""`up --wait`: until every instance answers, or one of them clearly will not.

vLLM's /health is polled on the published port directly (an answer counts the moment it
comes, not at the next Docker health-check interval); the engine's state, from one list call
per round, catches instances that exited, crash-loop or were marked unhealthy. With an engine on
another machine the published port is not on this one (and 127.0.0.1 here may be someone
else's server), so there the engine's own health check is the only signal.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Callable
from urllib.parse import urlsplit

from orchestrator.errors import InstanceFailed
from orchestrator.plan import Observed
from orchestrator.spec import InstanceSpec

POLL_INTERVAL_S = 0.2


def probe_health(url: str, timeout: float = 1.0) -> bool:
    """Whether `GET {url}/health` answers 200. One HTTP/1.0 request on a plain socket: `ps` may ask
    dozens of servers, and urllib (with http.client, email and ssl behind it) costs more to import
    than all of those requests take."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or not parts.port:
        return False
    request = f"GET /health HTTP/1.0\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as connection:
            connection.sendall(request)
            status_line = connection.makefile("rb").readline(256)
    except (OSError, ValueError):
        return False
    fields = status_line.split(None, 2)
    return len(fields) >= 2 and fields[0].startswith(b"HTTP/") and fields[1] == b"200"


def probe_many(urls: list[str], timeout: float = 1.0) -> list[bool]:
    """probe_health of several servers at once, in this thread: every connection is opened
    non-blocking and served as it becomes ready, so `ps` of 64 servers costs about what the
    slowest one takes (a thread pool would cost more to import than the requests take)."""
    import selectors

    results = [False] * len(urls)
    selector = selectors.DefaultSelector()
    pending: dict[int, tuple[socket.socket, int, bytes]] = {}
    for index, url in enumerate(urls):
        parts = urlsplit(url)
        try:
            if parts.scheme != "http" or not parts.hostname or not parts.port:
                continue
            family = socket.AF_INET6 if ":" in parts.hostname else socket.AF_INET
            connection = socket.socket(family, socket.SOCK_STREAM)
        except (OSError, ValueError):
            continue
        connection.setblocking(False)
        request = f"GET /health HTTP/1.0\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode()
        if connection.connect_ex((parts.hostname, parts.port)) not in (0, errno.EINPROGRESS):
            connection.close()
            continue
        pending[connection.fileno()] = (connection, index, request)
        selector.register(connection, selectors.EVENT_WRITE)
    deadline = time.monotonic() + timeout
    answers: dict[int, bytes] = {}
    while pending and time.monotonic() < deadline:
        for key, events in selector.select(max(0.0, deadline - time.monotonic())):
            connection, index, request = pending[key.fd]
            try:
                if events & selectors.EVENT_WRITE:
                    connection.sendall(request)  # a few dozen bytes: fits any socket buffer
                    selector.modify(connection, selectors.EVENT_READ)
                    continue
                chunk = connection.recv(256)
                answers[index] = answers.get(index, b"") + chunk
                if chunk and b"\n" not in answers[index]:
                    continue
            except OSError:
                pass
            fields = answers.get(index, b"").split(b"\n", 1)[0].split(None, 2)
            results[index] = len(fields) >= 2 and fields[0].startswith(b"HTTP/") and fields[1] == b"200"
            selector.unregister(connection)
            connection.close()
            del pending[key.fd]
    for connection, _, _ in pending.values():
        connection.close()
    selector.close()
    return results


def wait_healthy(
    specs: list[InstanceSpec],
    observe: Callable[[], dict[str, Observed]],
    *,
    timeout: float,
    progress: Callable[[str], None],
    log_tail: Callable[[InstanceSpec], str],
    clock: Callable[[], float] = time.monotonic,
    probe_http: bool = True,
) -> dict[str, float]:
    """Return seconds-to-healthy per instance; raise InstanceFailed naming the first failure.
    `probe_http`: whether this machine can reach the published ports (the engine is local)."""
    start = clock()
    pending = {spec.name: spec for spec in specs}
    ready: dict[str, float] = {}
    last_report = -1.0
    while pending:
        observed = observe()
        for name, spec in list(pending.items()):
            current = observed.get(name)
            problem = _failure(current)
            if problem:
                raise _failed(f"instance {name!r} {problem}", log_tail(spec))
            publish = spec.workload.publish if spec.workload else None  # the container's published port
            url = publish.connect_url if probe_http and publish else None
            if url and probe_health(url):
                how = "answers /health"
            elif current is not None and current.health == "healthy":
                how = "the engine's health check"
            else:
                continue
            ready[name] = clock() - start
            del pending[name]
            progress(f"{name}: healthy ({how}) after {ready[name]:.1f}s")
        elapsed = clock() - start
        if not pending:
            break
        if elapsed > timeout:
            names = ", ".join(sorted(pending))
            first = pending[sorted(pending)[0]]
            raise _failed(f"not healthy after {timeout:g}s: {names}", log_tail(first))
        if elapsed - last_report >= 10 or last_report < 0:
            progress(f"waiting for {', '.join(sorted(pending))} ({elapsed:.0f}s)")
            last_report = elapsed
        time.sleep(POLL_INTERVAL_S)
    return ready


def _failure(current: Observed | None) -> str:
    if current is None:  # `vllm-orch down` (which does not wait for an up's --wait) or `docker rm`
        return "was removed while waiting for it to become healthy"
    if current.state in ("exited", "dead"):
        return f"exited while waiting for it to become healthy ({current.status})"
    if current.state == "restarting":
        return f"keeps restarting ({current.status})"
    if current.health == "unhealthy":
        return "the engine's health check reports it unhealthy"
    return ""


def _failed(message: str, tail: str) -> InstanceFailed:
    """The failure with the cause and fix read from the log (diagnose.py) on its one line, and
    the last lines of the log above it."""
    from orchestrator.diagnose import cause_line

    cause = cause_line(tail)
    return InstanceFailed(f"{message}: {cause}" if cause else message, _indent_tail(tail))


def _indent_tail(tail: str, lines_shown: int = 20) -> str:
    lines = tail.rstrip("\n").splitlines()[-lines_shown:]
    return "\n".join(f"  | {line}" for line in lines)
