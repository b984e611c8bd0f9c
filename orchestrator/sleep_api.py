"""vLLM's sleep mode over HTTP: put a server to sleep, wake it, ask whether it sleeps.

vLLM serves these routes only when started with `VLLM_SERVER_DEV_MODE=1` (resolve sets it for
the instances `supports_sleep` names) and does the work only with `--enable-sleep-mode` on a
platform that has it (CUDA, ROCm; not the CPU build, which refuses to start with the flag):

    POST /sleep?level=1      -> {"status": "sleeping", "level": 1}
    POST /wake_up[?tags=..]  -> {"status": "awake" | "sleeping", "tags": [...] | null}
    GET  /is_sleeping        -> {"is_sleeping": true | false}

The routes have no authentication of their own (not even with an API key), which is why the
gateway refuses them from outside; only vllm-orch calls them, on the server's own address.
Level 1 moves the weights to CPU memory and drops the KV cache: a wake takes seconds where a
start takes minutes. While asleep vLLM queues new requests until it is woken.

Standard library only (http.client), short timeouts, one error type (SleepApiError).
"""

from __future__ import annotations

import http.client
import json
from typing import Any, Mapping
from urllib.parse import urlencode

from orchestrator.errors import OrchestratorError

DEV_MODE_ENV = "VLLM_SERVER_DEV_MODE"  # vLLM registers /sleep, /wake_up, /is_sleeping only when it is "1"
CONNECT_TIMEOUT_S = 2.0
# A sleep copies the weights to CPU memory and a wake copies them back: seconds for big models,
# not minutes. Past this the server is taken for stuck, and the caller falls back to a stop.
CALL_TIMEOUT_S = 120.0
_LEVELS = (1, 2)


class SleepApiError(OrchestratorError):
    """A sleep-mode call did not do what it asked: the server is unreachable, too slow, has no
    sleep routes (started without VLLM_SERVER_DEV_MODE=1) or refused (no --enable-sleep-mode)."""


def sleep(address: str, level: int = 1, *, timeout: float = CALL_TIMEOUT_S) -> None:
    """Put the server at `address` ("host:port") to sleep: level 1 keeps the weights in CPU
    memory (a quick wake), level 2 drops them too. Requests in flight are aborted by vLLM."""
    if level not in _LEVELS:
        raise SleepApiError(f"sleep level {level!r} is not one of vLLM's levels (1: weights to CPU memory, 2: discarded)")
    _call(address, "POST", "/sleep?" + urlencode({"level": level}), timeout)


def wake_up(address: str, *, tags: tuple[str, ...] | list[str] = (), timeout: float = CALL_TIMEOUT_S) -> bool:
    """Wake the server at `address`; True once it is fully awake (`tags`, vLLM's "weights" /
    "kv_cache", wake only those parts, and then it may still report itself sleeping)."""
    query = ("?" + urlencode([("tags", tag) for tag in tags])) if tags else ""
    answer = _call(address, "POST", "/wake_up" + query, timeout)
    return answer.get("status", "awake") == "awake"


def is_sleeping(address: str, *, timeout: float = CONNECT_TIMEOUT_S * 2) -> bool:
    """Whether the server at `address` sleeps (at any level, or while a sleep is under way)."""
    answer = _call(address, "GET", "/is_sleeping", timeout)
    value = answer.get("is_sleeping")
    if not isinstance(value, bool):
        raise SleepApiError(f"{address}: /is_sleeping answered {str(answer)[:100]!r}, not {{\"is_sleeping\": true|false}}")
    return value


def sleep_mode_wanted(on_demand: bool, server: Mapping[str, Any]) -> bool:
    """An on-demand instance whose server table sets enable_sleep_mode = true: vLLM then
    serves the sleep routes once VLLM_SERVER_DEV_MODE=1 is in its environment."""
    return on_demand and server.get("enable_sleep_mode") is True


def supports_sleep(spec: Any) -> bool:
    """Whether the on-demand machinery may sleep and wake this instance (an InstanceSpec)
    instead of stopping and starting it: on demand, and its server has sleep mode enabled.
    Whether the image's vLLM has a sleep mode at all is validate's question (a CPU build
    refuses to start with enable_sleep_mode: config/on_demand_check.py)."""
    workload = getattr(spec, "workload", None)
    return workload is not None and sleep_mode_wanted(workload.on_demand, spec.server)


def _call(address: str, method: str, path: str, timeout: float) -> dict[str, Any]:
    host, port = _split(address)
    connection = http.client.HTTPConnection(host, port, timeout=CONNECT_TIMEOUT_S)
    what = f"{method} http://{address}{path.split('?')[0]}"
    try:
        connection.connect()
        if connection.sock is not None:  # connected: the call itself may take longer than the connect
            connection.sock.settimeout(timeout)
        connection.request(method, path, headers={"Content-Length": "0"} if method == "POST" else {})
        response = connection.getresponse()
        body = response.read(64 * 1024)
    except (OSError, http.client.HTTPException) as exc:
        raise SleepApiError(f"{what}: {_reason(exc)}") from None
    finally:
        connection.close()
    if response.status == 404:
        raise SleepApiError(f"{what}: 404: the server has no sleep routes (vLLM serves them only with "
                            f"{DEV_MODE_ENV}=1 in its environment)")
    if response.status != 200:
        text = body.decode("utf-8", "replace").strip().replace("\n", " ")[:200]
        raise SleepApiError(f"{what}: HTTP {response.status}: {text or response.reason} "
                            "(is the server started with --enable-sleep-mode, on a GPU that has it?)")
    try:
        answer = json.loads(body or b"{}")
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise SleepApiError(f"{what}: the answer is not a JSON object: {body[:100]!r}")
    return answer


def _split(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host or not 0 < int(port) < 65536:
        raise SleepApiError(f"{address!r} is not host:port")
    return host.strip("[]"), int(port)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return "no answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (the server is not running)"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
