"""Test stand-in for vLLM's OpenAI-compatible api_server (``vllm.entrypoints.openai.api_server``).

This is NOT vLLM: it loads no model and generates nothing. It exists so that vllm-orch's tests can
start, probe and stop "servers" in containers in seconds, with nothing but the Python standard
library. It answers the endpoints the orchestrator and its tests touch, in vLLM's shapes, and
reports exactly how it was launched.

    python3 -m standin_vllm.api_server [--host H] [--port P] [--model M]
        [--served-model-name NAME...] [--max-model-len N] [--api-key KEY]
        [--enable-sleep-mode] [--standin-exit-code N] [--standin-health-delay SECONDS]
        [--standin-listen-delay SECONDS] [--standin-sleep-delay SECONDS] [--standin-wake-delay SECONDS]
        [--standin-ignore-sigterm] [any other vLLM arguments, accepted and ignored]

At start it prints one line to stdout::

    STANDIN-START {"argv": [...], "env": {...}, "pid": ..., "uid": ...}

``argv`` is ``sys.argv[1:]`` (the arguments after the module name); ``env`` is all of os.environ.

Test knobs:
  --standin-exit-code N          print "standin: error: refused to start (exit N)" to stderr, exit N
                                 (right after the STANDIN-START line, before listening)
  --standin-health-delay SECONDS /health answers 503 until SECONDS after start
  --standin-listen-delay SECONDS the port is bound only SECONDS after start (stands for vLLM's
                                 model loading, before which nothing listens: connections are refused)
  --standin-sleep-delay SECONDS  a POST /sleep takes this long (vLLM copies the weights to CPU memory)
  --standin-wake-delay SECONDS   a POST /wake_up takes this long (and the weights back)
  --standin-ignore-sigterm       ignore SIGTERM (to exercise stop timeouts / SIGKILL)
  --standin-old-metric-names     export the KV cache gauge under vLLM's older name
                                 (vllm:gpu_cache_usage_perc instead of vllm:kv_cache_usage_perc)

Unhealthy on demand (for `vllm-orch watch`'s tests; what a vLLM whose engine died does: the API
process stays up, /health fails):
  POST /standin/fail-health      /health answers 500 until this process ends (a restart heals it)
  file /tmp/standin-unhealthy    /health answers 500 while it exists (it survives a restart of the
                                 container: a crash loop)

Sleep mode, as vLLM 0.32 serves it (vllm/entrypoints/serve/dev/sleep/api_router.py): only with
VLLM_SERVER_DEV_MODE=1 in the environment are the routes there (else 404), and only with
--enable-sleep-mode do they work (else POST /sleep answers 500, as the stand-in's choice for vLLM's
engine error):
  POST /sleep?level=1[&mode=abort]  level 0-2 (else 422) -> {"status": "sleeping", "level": N};
                                 requests in flight are aborted (a stream ends with finish_reason
                                 "abort"); completions that arrive while asleep wait until a wake
                                 (vLLM queues them), /health and /v1/models still answer
  POST /wake_up[?tags=weights&tags=kv_cache]  -> {"status": "awake"|"sleeping", "tags": [...]|null};
                                 with tags only those parts wake (all of them: awake)
  GET /is_sleeping               -> {"is_sleeping": bool} (true from the start of a sleep to the
                                 end of the wake)
  /metrics has vLLM's vllm:engine_sleep_state gauge (sleep_state awake / weights_offloaded /
  discard_all) and, after a first sleep or wake, vllm:sleep_mode_operation_duration_seconds.

Endpoints: GET /health, GET /metrics (a few of vLLM's metrics, in its names: requests running and
waiting, KV cache use, prompt and generation tokens, time to first token), GET /v1/models,
POST /v1/completions, POST /v1/chat/completions, GET /standin/info. With ``"stream": true`` the two
POST routes answer as vLLM does, in server-sent events: ``max_tokens`` chunks (default 4), then
``data: [DONE]``; the body's ``standin_chunk_delay`` (seconds, default 0) is slept before each chunk
after the first, so a test can tell a proxy that passes chunks on from one that buffers them. Every
answer carries ``X-Standin-Server: <hostname>`` (in a container, its id), so a test can tell which
replica answered. As in vLLM, when VLLM_API_KEY (or --api-key) is set the /v1/* endpoints want
``Authorization: Bearer <key>`` and answer 401 otherwise. On SIGTERM (or SIGINT) it prints
``STANDIN-SHUTDOWN signal=<n>`` and exits 0.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = time.monotonic()
UNHEALTHY_FILE = "/tmp/standin-unhealthy"


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    # allow_abbrev=False: an unknown vLLM flag that happens to prefix one of ours (say
    # "--model-loader-extra-config") must stay unknown, not be taken for "--model".
    parser = argparse.ArgumentParser(prog="standin_vllm.api_server", allow_abbrev=False,
                                     description="Test stand-in for vLLM's OpenAI api_server.")
    parser.add_argument("--host", default="0.0.0.0")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--model", default=None)
    parser.add_argument("--served-model-name", nargs="+", default=None)
    parser.add_argument("--max-model-len", type=int, default=None)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--standin-exit-code", type=int, default=None)
    parser.add_argument("--enable-sleep-mode", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--standin-health-delay", type=float, default=0.0)
    parser.add_argument("--standin-listen-delay", type=float, default=0.0)
    parser.add_argument("--standin-sleep-delay", type=float, default=0.0)
    parser.add_argument("--standin-wake-delay", type=float, default=0.0)
    parser.add_argument("--standin-ignore-sigterm", action="store_true")
    parser.add_argument("--standin-old-metric-names", action="store_true")
    return parser.parse_known_args(argv)


def _int_env(name: str) -> int:
    try:
        return int(os.environ.get(name, "0") or "0")
    except ValueError:
        return 0


def emit(stream, line: str) -> None:
    # Written and flushed line by line: the orchestrator's log file must show each line at once.
    stream.write(line + "\n")
    stream.flush()


class State:
    def __init__(self, args: argparse.Namespace, unknown: list[str]):
        self.args = args
        self.unknown = unknown
        self.names = list(args.served_model_name or ([args.model] if args.model else ["standin-model"]))
        self.api_key = os.environ.get("VLLM_API_KEY") or args.api_key
        self.counter = 0
        self.lock = threading.Lock()
        self.health_failed = False
        self.tokens = {"prompt": 0, "generation": 0}
        self.ttft: list[float] = []
        # Sleep mode. `asleep` holds the parts still offloaded/discarded ("weights", "kv_cache");
        # `awake` is set while it is empty, and completions wait on it; `epoch` counts sleeps, so
        # a stream started before one ends (vLLM's default pause mode aborts what is in flight).
        self.dev_mode = _int_env("VLLM_SERVER_DEV_MODE") != 0
        self.asleep: set[str] = set()
        self.level = 0
        self.awake = threading.Event()
        self.awake.set()
        self.epoch = 0
        self.operations: dict[str, list[float]] = {}  # "sleep" / "wake" -> durations
        # Requests in flight, as vLLM's gauges count them: waiting (queued while asleep) and
        # running (a completion until its answer, a stream until its last chunk is written).
        self.running = 0
        self.waiting = 0

    def next_id(self) -> int:
        with self.lock:
            self.counter += 1
            return self.counter

    def info(self) -> dict:
        return {"argv": sys.argv[1:], "env": dict(os.environ), "pid": os.getpid(), "uid": os.getuid()}


class Handler(BaseHTTPRequestHandler):
    server_version = "standin-vllm/1"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY the body waits for the
    # client's delayed ACK (~40 ms) on a keep-alive connection, which no real server does.
    disable_nagle_algorithm = True
    state: State  # set on the class by main()

    # -- plumbing ---------------------------------------------------------------------------
    def log_message(self, format: str, *args) -> None:  # the base class names it `format`
        # uvicorn-like access line, on stderr so stdout stays for the STANDIN-* lines.
        emit(sys.stderr, f"INFO: {self.client_address[0]} - {format % args}")

    def send(self, status: int, body: dict | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("X-Standin-Server", socket.gethostname())
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status: int, message: str, kind: str) -> None:
        self.send(status, {"error": {"message": message, "type": kind, "param": None, "code": status}})

    def authorized(self) -> bool:
        if not self.state.api_key:
            return True
        expected = f"Bearer {self.state.api_key}"
        if hmac.compare_digest(self.headers.get("Authorization", "").encode(), expected.encode()):
            return True
        self.send(401, {"error": "Unauthorized"})  # vLLM's own 401 body
        return False

    def read_json(self) -> dict | None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.error(400, "request body must be a JSON object", "BadRequestError")
            return None
        return body

    def model_for(self, body: dict) -> str | None:
        # vLLM answers 404 for a model name it does not serve; no name means the first one.
        model = body.get("model") or self.state.names[0]
        if model not in self.state.names:
            self.error(404, f"The model `{model}` does not exist.", "NotFoundError")
            return None
        return model

    # -- endpoints ----------------------------------------------------------------------------
    def do_GET(self) -> None:  # http.server dispatches on these names
        path = self.path.split("?", 1)[0]
        if path == "/health":
            ready = time.monotonic() - STARTED >= self.state.args.standin_health_delay
            if self.state.health_failed or os.path.exists(UNHEALTHY_FILE):
                self.send(500, {"error": "standin: health failing on demand"})
            else:
                self.send(200 if ready else 503)
        elif path == "/metrics":
            data = self.metrics().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif path == "/standin/info":
            self.send(200, self.state.info())
        elif path == "/is_sleeping" and self.state.dev_mode:
            self.send(200, {"is_sleeping": bool(self.state.asleep)})
        elif path == "/v1/models":
            if self.authorized():
                self.send(200, {"object": "list", "data": [{
                    "id": self.state.names[0], "object": "model", "created": int(time.time()),
                    "owned_by": "vllm", "root": self.state.args.model or self.state.names[0],
                    "parent": None, "max_model_len": self.state.args.max_model_len,
                }]})
        else:
            self.error(404, f"no route for GET {path}", "NotFoundError")

    def metrics(self) -> str:
        """vLLM's metric names and types (0.32); the numbers are the stand-in's own counts."""
        state, label = self.state, f'model_name="{self.state.names[0]}"'
        kv = "vllm:gpu_cache_usage_perc" if state.args.standin_old_metric_names else "vllm:kv_cache_usage_perc"
        with state.lock:
            ttft, tokens = list(state.ttft), dict(state.tokens)
        lines = [
            "# TYPE vllm:num_requests_running gauge", f"vllm:num_requests_running{{{label}}} {float(state.running)}",
            "# TYPE vllm:num_requests_waiting gauge", f"vllm:num_requests_waiting{{{label}}} {float(state.waiting)}",
            f"# TYPE {kv} gauge", f"{kv}{{{label}}} {min(1.0, 0.01 * len(ttft)):.4f}",
            "# TYPE vllm:prompt_tokens counter", f"vllm:prompt_tokens_total{{{label}}} {float(tokens['prompt'])}",
            "# TYPE vllm:generation_tokens counter",
            f"vllm:generation_tokens_total{{{label}}} {float(tokens['generation'])}",
            "# TYPE vllm:time_to_first_token_seconds histogram",
        ]
        for bound in ("0.001", "0.01", "0.1", "1.0", "+Inf"):
            count = sum(1 for value in ttft if bound == "+Inf" or value <= float(bound))
            lines.append(f'vllm:time_to_first_token_seconds_bucket{{le="{bound}",{label}}} {float(count)}')
        lines += [f"vllm:time_to_first_token_seconds_count{{{label}}} {float(len(ttft))}",
                  f"vllm:time_to_first_token_seconds_sum{{{label}}} {sum(ttft)}"]
        lines += self.sleep_metrics(label)
        return "\n".join(lines) + "\n"

    def sleep_metrics(self, label: str) -> list[str]:
        state = self.state
        with state.lock:
            asleep, level, operations = bool(state.asleep), state.level, {k: list(v) for k, v in state.operations.items()}
        values = {"awake": 0 if asleep else 1, "weights_offloaded": int(asleep and level == 1),
                  "discard_all": int(asleep and level == 2)}
        lines = ["# TYPE vllm:engine_sleep_state gauge"]
        lines += [f'vllm:engine_sleep_state{{engine="0",{label},sleep_state="{name}"}} {float(value)}'
                  for name, value in values.items()]
        if operations:
            lines.append("# TYPE vllm:sleep_mode_operation_duration_seconds histogram")
            for operation, durations in sorted(operations.items()):
                op = f'operation="{operation}"'
                for bound in ("0.01", "0.1", "1.0", "10.0", "+Inf"):
                    count = sum(1 for d in durations if bound == "+Inf" or d <= float(bound))
                    lines.append(f'vllm:sleep_mode_operation_duration_seconds_bucket{{le="{bound}",{op}}} {float(count)}')
                lines += [f"vllm:sleep_mode_operation_duration_seconds_count{{{op}}} {float(len(durations))}",
                          f"vllm:sleep_mode_operation_duration_seconds_sum{{{op}}} {sum(durations)}"]
        return lines

    def query(self) -> dict[str, list[str]]:
        from urllib.parse import parse_qs

        return parse_qs(self.path.split("?", 1)[1]) if "?" in self.path else {}

    def do_sleep(self) -> None:
        state, query = self.state, self.query()
        try:
            level = int((query.get("level") or ["1"])[-1])
        except ValueError:
            level = -1
        mode = (query.get("mode") or ["abort"])[-1]
        if not 0 <= level <= 2 or mode not in ("abort", "wait", "keep"):
            # FastAPI's validation answer for a bad query parameter.
            self.send(422, {"detail": [{"type": "value_error", "loc": ["query", "level" if not 0 <= level <= 2 else "mode"],
                                        "msg": "level must be 0, 1 or 2; mode abort, wait or keep"}]})
            return
        if not state.args.enable_sleep_mode:
            self.error(500, "Sleep mode is not enabled: start the server with --enable-sleep-mode", "InternalServerError")
            return
        started = time.monotonic()
        with state.lock:
            state.awake.clear()
            state.epoch += 1
            state.level = max(state.level, level) if state.asleep else level
            state.asleep |= {"weights", "kv_cache"} if level else {"kv_cache"}
        time.sleep(max(0.0, state.args.standin_sleep_delay))
        with state.lock:
            state.operations.setdefault("sleep", []).append(time.monotonic() - started)
        emit(sys.stderr, f"standin: sleeping (level {level})")
        self.send(200, {"status": "sleeping", "level": level})

    def do_wake_up(self) -> None:
        state = self.state
        tags = self.query().get("tags") or None
        started = time.monotonic()
        time.sleep(max(0.0, state.args.standin_wake_delay))
        with state.lock:
            state.asleep -= set(tags) if tags else set(state.asleep)
            fully_awake = not state.asleep
            if fully_awake:
                state.level = 0
                state.awake.set()
            state.operations.setdefault("wake", []).append(time.monotonic() - started)
        emit(sys.stderr, f"standin: wake_up tags={tags} -> {'awake' if fully_awake else 'still sleeping'}")
        self.send(200, {"status": "awake" if fully_awake else "sleeping", "tags": tags})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if self.state.dev_mode and path in ("/sleep", "/wake_up"):
            (self.do_sleep if path == "/sleep" else self.do_wake_up)()
            return
        if path == "/standin/fail-health":
            self.state.health_failed = True
            emit(sys.stderr, "standin: /health fails from now on (POST /standin/fail-health)")
            self.send(200, {"health": "failing"})
            return
        if path not in ("/v1/completions", "/v1/chat/completions"):
            self.error(404, f"no route for POST {path}", "NotFoundError")
            return
        if not self.authorized():
            return
        body = self.read_json()
        if body is None:
            return
        model = self.model_for(body)
        if model is None:
            return
        # Asleep: vLLM queues the request until a wake (its scheduler is paused), then serves it.
        with self.state.lock:
            self.state.waiting += 1
        try:
            while not self.state.awake.wait(0.5):
                pass
        finally:
            with self.state.lock:
                self.state.waiting -= 1
                self.state.running += 1
        try:
            self.complete(path, body, model)
        finally:
            with self.state.lock:
                self.state.running -= 1

    def complete(self, path: str, body: dict, model: str) -> None:
        epoch = self.state.epoch
        n, now = self.state.next_id(), int(time.time())
        with self.state.lock:
            self.state.tokens["prompt"] += 1
            self.state.tokens["generation"] += 1
            self.state.ttft.append(0.005)
        if body.get("stream") is True:
            self.stream(path, body, model, n, now, epoch)
            return
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        if path == "/v1/completions":
            self.send(200, {"id": f"cmpl-standin-{n}", "object": "text_completion", "created": now,
                            "model": model, "usage": usage, "choices": [
                                {"index": 0, "text": " standin", "logprobs": None, "finish_reason": "length"}]})
        else:
            self.send(200, {"id": f"chatcmpl-standin-{n}", "object": "chat.completion", "created": now,
                            "model": model, "usage": usage, "choices": [
                                {"index": 0, "message": {"role": "assistant", "content": "standin reply"},
                                 "finish_reason": "stop"}]})

    def stream(self, path: str, body: dict, model: str, n: int, now: int, epoch: int = 0) -> None:
        """Server-sent events as vLLM sends them: one chunk per token, each written and flushed
        at once (chunked transfer encoding), then `data: [DONE]`."""
        chunks = body.get("max_tokens") if isinstance(body.get("max_tokens"), int) else 4
        delay = body.get("standin_chunk_delay") if isinstance(body.get("standin_chunk_delay"), (int, float)) else 0
        chat = path == "/v1/chat/completions"
        self.send_response(200)
        self.send_header("X-Standin-Server", socket.gethostname())
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def write(data: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        for i in range(max(0, min(chunks, 100000))):
            if i and delay:
                time.sleep(min(float(delay), 60.0))
            aborted = self.state.epoch != epoch  # put to sleep meanwhile: vLLM aborts the request
            finish = "abort" if aborted else None
            if chat:
                event = {"id": f"chatcmpl-standin-{n}", "object": "chat.completion.chunk", "created": now,
                         "model": model, "choices": [{"index": 0, "delta": {"content": f" t{i}"},
                                                      "finish_reason": finish}]}
            else:
                event = {"id": f"cmpl-standin-{n}", "object": "text_completion", "created": now, "model": model,
                         "choices": [{"index": 0, "text": f" t{i}", "logprobs": None, "finish_reason": finish}]}
            try:
                write(b"data: " + json.dumps(event).encode() + b"\n\n")
            except OSError:  # the client went away mid-stream, as vLLM sees it: stop generating
                return
            if aborted:
                break
        try:
            write(b"data: [DONE]\n\n")
            write(b"")
        except OSError:
            return


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args, unknown = parse_args(argv)
    state = State(args, unknown)
    emit(sys.stdout, "STANDIN-START " + json.dumps(state.info()))

    if args.standin_exit_code is not None:
        emit(sys.stderr, f"standin: error: refused to start (exit {args.standin_exit_code})")
        return args.standin_exit_code

    received: list[int] = []

    def on_signal(signum, _frame) -> None:
        # Only a list append: an Event.set() here could deadlock on the Event's own lock when
        # the signal lands while the main thread is inside Event.wait() holding it.
        received.append(signum)

    signal.signal(signal.SIGTERM, signal.SIG_IGN if args.standin_ignore_sigterm else on_signal)
    signal.signal(signal.SIGINT, on_signal)

    Handler.state = state
    if args.standin_listen_delay > 0:  # vLLM loads its model before anything listens
        emit(sys.stderr, f"INFO: standin loading for {args.standin_listen_delay:g} s (--standin-listen-delay)")
        end = time.monotonic() + args.standin_listen_delay
        while time.monotonic() < end and not received:
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))
        if received:
            emit(sys.stdout, f"STANDIN-SHUTDOWN signal={received[0]}")
            return 0

    class Server(ThreadingHTTPServer):
        daemon_threads = True  # open connections must not hold up the exit
        address_family = socket.AF_INET6 if ":" in args.host else socket.AF_INET

    server = Server((args.host, args.port), Handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    emit(sys.stderr, f"INFO: standin listening on http://{args.host}:{args.port} (model {state.names[0]})")

    # The main thread only sleeps, so signal handlers run promptly between sleeps.
    while not received:
        time.sleep(0.1)
    emit(sys.stdout, f"STANDIN-SHUTDOWN signal={received[0]}")
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
