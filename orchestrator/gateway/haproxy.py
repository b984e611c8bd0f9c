"""Routes + settings -> HAProxy's configuration, as files: the only module that knows HAProxy.

What the gateway answers itself, and why:
- `/health`: 200 while the gateway runs (no key needed: load balancers and `up --wait` ask it).
- every other path needs the key when `api_key` is set (401 otherwise, OpenAI-shaped).
- `/metrics`: HAProxy's own Prometheus exporter (per-model backends and per-replica servers).
- `GET /v1/models`: the union of the enabled instances' models, from a file written from the plan.
- `POST /v1/...`: the buffered body's `model` picks the model's backend; a body that is not a
  JSON object naming a model is 400, a bigger one than `max_body_kib` 413, an unknown model 404
  naming the models that exist.
- anything else is 403: vLLM's admin routes (`/sleep`, `/wake_up`, `/collective_rpc`,
  `/v1/load_lora_adapter`, ...) are not protected by its `--api-key`, so they stop here.
Answers the gateway writes itself are files rendered by `json.dumps`, so nothing in a model
name can break out of them; model names reach the map file only when free of whitespace
(validate refuses the others).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Iterable

from orchestrator.gateway.routes import Route, aliases, models
from orchestrator.gateway.settings import GatewaySpec

CONFIG_DIR = "/etc/vllm-orch-gateway"  # in the container: the host's <host_dir>, read-only
CURRENT = f"{CONFIG_DIR}/current"  # a symlink vllm-orch switches to each new version
SECRET_DIR = "/run/secrets/vllm-orch-gateway"  # in the container: the host's <host_dir>/secret
KEYS_FILE = "keys"

# Admin routes named in the 403's message (every path outside /v1 is refused, and these in it).
ADMIN_IN_V1 = ("/v1/load_lora_adapter", "/v1/unload_lora_adapter")
CHECK_INTER_MS = 1000  # a dead or starting replica leaves the rotation within about a second
BALANCE = {
    "round_robin": "balance roundrobin",
    "least_conn": "balance leastconn",
    # Consistent hashing with bounded loads: the same key lands on the same replica unless it
    # already carries 1.5x the average, so one hot prefix cannot take a replica over.
    "prefix": "balance hash var(txn.affinity)\n    hash-type consistent\n    hash-balance-factor 150",
    "session": "balance hash var(txn.affinity)\n    hash-type consistent\n    hash-balance-factor 150",
}
PREFIX_BYTES = 256  # the prompt's first bytes that pick a replica under `prefix`


def error_body(status: int, message: str, kind: str) -> bytes:
    """OpenAI's error shape, as vLLM answers it."""
    return (json.dumps({"error": {"message": message, "type": kind, "param": None, "code": status}}) + "\n").encode()


def backend_name(model: str) -> str:
    """A stable HAProxy name per model: readable, unique whatever the model's characters."""
    slug = re.sub(r"[^A-Za-z0-9_.-]", "_", model)[:40]
    return f"model_{slug}_{hashlib.sha256(model.encode()).hexdigest()[:8]}"


def server_name(instance: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", instance)


def render(gateway: GatewaySpec, routes: Iterable[Route], version: str = "", *, dns_names: bool = False) -> dict[str, bytes]:
    """The files of one configuration version (paths relative to the version's directory).
    `version` is what `/health` answers after "ok ", so `up` can tell when a reload is done.
    `dns_names`: the addresses are DNS names (Kubernetes Services), resolved when HAProxy starts; a
    name that does not resolve yet leaves that replica down instead of failing the start."""
    routes = tuple(routes)
    served = models(routes)
    other_names = aliases(routes)  # alias -> its model: same backend, listed as vLLM lists it
    names = sorted({*served, *other_names})
    files: dict[str, bytes] = {}
    files["models.json"] = (json.dumps({"object": "list", "data": [
        {"id": m, "object": "model", "owned_by": "vllm", "root": other_names.get(m, m), "parent": None}
        for m in names]}) + "\n").encode()
    files["models.map"] = "".join(f"{m} {backend_name(other_names.get(m, m))}\n" for m in names).encode()
    known = ", ".join(names) if names else "none (no instance is enabled)"
    files["answers/unknown-model.json"] = error_body(404, f"model not served here; models: {known}", "NotFoundError")
    files["answers/no-model.json"] = error_body(
        400, "the body must be a JSON object naming a `model` (GET /v1/models lists them)", "BadRequestError")
    files["answers/too-large.json"] = error_body(
        413, f"request body over {gateway.max_body_kib} KiB (the gateway's max_body_kib)", "BadRequestError")
    files["answers/unauthorized.json"] = error_body(
        401, "missing or wrong API key: send `Authorization: Bearer <key>`", "AuthenticationError")
    files["answers/refused.json"] = error_body(
        403, "not served by the gateway: only the OpenAI routes under /v1 (not vLLM's admin routes such as "
        "/sleep, /wake_up, /collective_rpc or " + ", ".join(ADMIN_IN_V1) + "), /health and /metrics", "ForbiddenError")
    files["answers/bad-gateway.json"] = error_body(502, "the replica answered with something that is not HTTP",
                                                   "BadGatewayError")
    files["answers/timeout.json"] = error_body(504, "the replica did not answer in time", "GatewayTimeoutError")
    files["answers/not-found.json"] = error_body(404, "no such route on the gateway", "NotFoundError")
    files["answers/no-replica.json"] = error_body(
        503, "no replica of this model is up (stopped, starting or unhealthy); try again shortly", "ServiceUnavailableError")
    files["routes.json"] = (json.dumps([r.to_json() for r in routes], indent=1) + "\n").encode()
    files["haproxy.cfg"] = _config(gateway, routes, served, version, dns=dns_names).encode()
    return files


def _config(gateway: GatewaySpec, routes: tuple[Route, ...], names: list[str], version: str, *, dns: bool = False) -> str:
    answers = f"{CURRENT}/answers"
    max_body = gateway.max_body_kib * 1024
    address = gateway.publish_address or "0.0.0.0"
    bind = f"[{address}]" if ":" in address else address
    lines = [
        "# Rendered by vllm-orch from the plan: edits are overwritten at the next `up`.",
        "global",
        "    log stdout format raw daemon",
        "    maxconn 4096",
        # The whole body must fit in one buffer to read its `model` (plus headers' room).
        f"    tune.bufsize {max_body + 16384}",
        "    tune.http.maxhdr 128",
        "",
        "defaults",
        "    mode http",
        "    log global",
        "    option httplog",
        "    option dontlog-normal",  # errors only: a line per request would cost throughput
        "    option http-buffer-request",
        # Every request is independent and carries its own key: any idle connection to a
        # replica may serve the next one (a new connection per request costs the server most).
        "    http-reuse always",
        "    timeout connect 2s",
        "    timeout client 1h",  # a long generation streams for as long as it takes
        "    timeout server 1h",
        "    timeout http-request 60s",
        "    timeout http-keep-alive 60s",
        # A loaded server may answer /health slowly: three failed checks take it out; a refused
        # connection on a live request counts as a failed check (observe layer4 below).
        "    timeout check 5s",
        # HAProxy's own error pages, OpenAI-shaped like every other answer of the gateway.
        f"    http-error status 503 content-type application/json file {answers}/no-replica.json",
        f"    http-error status 502 content-type application/json file {answers}/bad-gateway.json",
        f"    http-error status 504 content-type application/json file {answers}/timeout.json",
        # A replica that refuses the connection (dead, restarting) is retried on another
        # before the client sees an error: the request was never sent, so this is safe.
        # `empty-response` (retry_unanswered) also retries one sent but never answered; HAProxy
        # 2.6 pays for it by copying the whole request buffer (tune.bufsize, not the request's
        # length) for every request: measured the largest per-request cost at large bodies.
        "    retries 3",
        f"    retry-on conn-failure{' empty-response' if gateway.retry_unanswered else ''}",
        "    option redispatch 1",
        "",
        *(["# Service names are resolved again while running: one created after the gateway joins.",
           "resolvers cluster", "    parse-resolv-conf", "    hold valid 10s", ""] if dns else []),
        "frontend openai",
        f"    bind {bind}:{gateway.port}",
        f'    http-request return status 200 content-type text/plain string "ok {version}" if {{ path /health }}',
    ]
    if gateway.api_key:
        # The key file holds the key alone (as a Compose or Kubernetes secret would), so the
        # header's scheme is checked apart from its token.
        lines.append(f"    http-request return status 401 content-type application/json file {answers}/unauthorized.json "
                     "hdr WWW-Authenticate Bearer unless { req.hdr(authorization) -m reg ^Bearer[[:space:]] } "
                     "{ req.hdr(authorization),regsub(^Bearer[[:space:]]+,) -m str "
                     f"-f {SECRET_DIR}/{KEYS_FILE} }}")
    lines += [
        "    http-request use-service prometheus-exporter if { path /metrics }",
        f"    http-request return status 200 content-type application/json file {CURRENT}/models.json "
        "if { method GET } { path /v1/models }",
        f"    http-request return status 403 content-type application/json file {answers}/refused.json "
        # Decoded, and by prefix, as vLLM's server reads the path: `/v1/load%5Flora%5Fadapter` and
        # a trailing slash are the same route there.
        f"if !{{ path_beg /v1/ }} or {{ path,url_dec -m beg {' '.join(ADMIN_IN_V1)} }}",
        f"    http-request return status 404 content-type application/json file {answers}/not-found.json "
        "unless { method POST }",
        f"    http-request return status 413 content-type application/json file {answers}/too-large.json "
        f"if {{ req.body_size gt {max_body} }}",
        "    http-request set-var(txn.model) req.body,json_query('$.model')",
        f"    http-request return status 400 content-type application/json file {answers}/no-model.json "
        "unless { var(txn.model) -m found }",
    ]
    if gateway.policy == "prefix":
        # The chat's first message (usually the shared system prompt), else the prompt.
        # `bytes(0,N)` fails on a shorter value, which is then taken whole.
        for source in ("$.messages[0].content", "$.prompt"):
            lines += [f"    http-request set-var(txn.affinity) req.body,json_query('{source}'),bytes(0,{PREFIX_BYTES}) "
                      "unless { var(txn.affinity) -m found }",
                      f"    http-request set-var(txn.affinity) req.body,json_query('{source}') "
                      "unless { var(txn.affinity) -m found }"]
    elif gateway.policy == "session":
        lines += [
            "    http-request set-var(txn.affinity) req.hdr(x-session-id)",
            "    http-request set-var(txn.affinity) req.body,json_query('$.user') unless { var(txn.affinity) -m found }",
        ]
    lines += [
        f"    use_backend %[var(txn.model),map({CURRENT}/models.map,unknown_model)]",
        "",
        "backend unknown_model",
        f"    http-request return status 404 content-type application/json file {answers}/unknown-model.json",
    ]
    by_model: dict[str, list[Route]] = {}
    for route in routes:
        by_model.setdefault(route.model, []).append(route)
    for model in names:
        lines += [
            "",
            f"backend {backend_name(model)}",
            f"    {BALANCE[gateway.policy]}",
            "    option httpchk GET /health",
            "    http-check expect status 200",
            # A connection error on a live request counts as one failed check (three take the replica
            # out, as three failed checks do): marking it down at once on one error took both replicas
            # of a model out for a second when a loaded host dropped one connection each during a
            # reload; the request itself is retried on another replica either way.
            f"    default-server check inter {CHECK_INTER_MS} fall 3 rise 1 observe layer4 error-limit 1 on-error fail-check"
            + (" init-addr last,libc,none resolvers cluster" if dns else ""),
            # No replica up: a clear 503 rather than HAProxy's own page. Not in a worker that is
            # stopping after a reload: its backends count no server then (nbsrv 0), yet a request
            # it accepted just before still goes to one; the rule answered those with a 503.
            f"    http-request return status 503 content-type application/json file {answers}/no-replica.json "
            "if { nbsrv() eq 0 } !{ stopping }",
        ]
        lines += [f"    server {server_name(r.instance)} {r.address}" + _on_demand(gateway, r) for r in by_model[model]]
        if gateway.activator and any(r.instance in gateway.on_demand for r in by_model[model]):
            # Every instance of the model stopped or asleep: its requests go to the activator,
            # which starts one and holds them meanwhile (orchestrator/activator/).
            lines.append(f"    server {ACTIVATOR_SERVER} {gateway.activator} backup")
    return "\n".join(lines) + "\n"


# A colon, which server_name() never leaves in an instance's name: no instance can clash with it.
ACTIVATOR_SERVER = "vllm-orch:activator"


def _on_demand(gateway: GatewaySpec, route: Route) -> str:
    """An on-demand server's agent check: the activator answers `maint` while it is stopped,
    asleep, starting or stopping (so no request reaches a sleeping vLLM, which would hold it),
    `ready up` while it serves; a failed request marks it down at once."""
    if not gateway.activator or route.instance not in gateway.on_demand:
        return ""
    return (f" agent-check agent-addr 127.0.0.1 agent-port {gateway.agent_port} "
            f"agent-send \"{server_name(route.instance)}\\n\" agent-inter 500 on-error mark-down")


def keys_file(gateway: GatewaySpec) -> bytes | None:
    """The API-key pattern file (the key, one line), or None without a key."""
    return f"{gateway.api_key}\n".encode() if gateway.api_key else None
