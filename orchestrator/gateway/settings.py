"""`[gateway]`: every setting declared once (type, default, doc), like options.py's [docker] table.

The JSON Schema's `gateway` table and the README's rows come from GATEWAY_SETTINGS; `read` turns
the document into a GatewaySpec, the target-neutral value the renderers and the service use.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Mapping

from orchestrator.options import Setting, table_rows, table_schema
from orchestrator.value import Value, field

GATEWAY_NAME = "gateway"  # its row in `ps`, its `logs` name, its container's `<project>-gateway`
DEFAULT_IMAGE = "vllm-orch/gateway:latest"  # scripts/build-images.sh gateway
POLICIES = ("prefix", "session", "round_robin", "least_conn")

GATEWAY_SETTINGS: tuple[Setting, ...] = (
    Setting("enabled", {"type": "boolean"}, "run the gateway (a `[gateway]` table alone turns it on)", default=True),
    Setting("port", {"type": "integer", "minimum": 1, "maximum": 65535},
            "host port of the one OpenAI endpoint, on `[docker] publish_address`", shown_default="required"),
    Setting("api_key", {"type": "string", "minLength": 1, "pattern": "^[!-~]+$", "writeOnly": True},
            "clients must send `Authorization: Bearer <api_key>` (all but `/health`; printable ASCII, no spaces); "
            "a secret: given to the "
            "router as a root-only file, never on argv, in output or exports", shown_default="none (open)"),
    Setting("policy", {"type": "string", "enum": list(POLICIES)},
            "how replicas of one model share requests: `prefix` (a prompt's first bytes pick a replica, so "
            "repeated prefixes hit its KV cache; bounded so no replica takes over 1.5x its share), `session` "
            "(the `X-Session-ID` header, else the body's `user`, pins a client), `round_robin`, `least_conn`",
            default="prefix"),
    Setting("image", {"type": "string"}, "the router's image (HAProxy)", default=DEFAULT_IMAGE),
    Setting("max_body_kib", {"type": "integer", "minimum": 16, "maximum": 65536},
            "largest request body routed (KiB; about 4 characters of prompt per token); larger ones get 413. "
            "The router reads `model` from the buffered body, so its buffers have this size; with "
            "`retry_unanswered` it also copies one whole buffer per request, its largest cost per request "
            "(docs/gateway.md)", default=256),
    Setting("retry_unanswered", {"type": "boolean"},
            "also retry on another replica a request that was sent but got no answer (the replica closed the "
            "connection: it died mid-request, or closed a kept-alive connection just as it was reused); a refused "
            "connection is always retried. The router then copies its whole request buffer (`max_body_kib`) for "
            "every request: `false` saves that copy (on a 2-core machine about 80 us of CPU per request at 256 KiB, "
            "docs/gateway.md) and such a request gets a 502", default=True),
    Setting("routes", {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["model", "url"],
                "properties": {"model": {"type": "string", "pattern": "^\\S+$"},
                               "url": {"type": "string", "pattern": "^http://[^/\\s@]+:[0-9]{1,5}/?$"}}}},
            "more replicas outside this project, `{ model = \"m1\", url = \"http://10.0.0.2:8001\" }`: other hosts' "
            "servers for a gateway over a fleet; health-checked like the instances, so a host that goes down "
            "drops out", shown_default="`[]`"),
    # At most the router's `timeout server` (1 h, haproxy.py), which would cut a longer hold.
    Setting("on_demand_wait", {"type": "integer", "minimum": 1, "maximum": 3600},
            "seconds a request for a model whose on-demand instances are all stopped is held while one starts "
            "(the activator); past it the client gets a 503 with `Retry-After`", default=300),
    Setting("config_host_dir", {"type": "string"},
            "host dir for the rendered router config and its key (`<dir>/<project>/`, relative to this file)",
            default=".vllm-orch/gateway"),
)

DEFAULTS: dict[str, Any] = {s.key: s.default for s in GATEWAY_SETTINGS if s.default is not None}


def schema() -> dict[str, Any]:
    """The `[gateway]` table's JSON Schema."""
    return table_schema(GATEWAY_SETTINGS, "One OpenAI endpoint for the project's instances, routed by model (present = on).")


def readme_rows() -> str:
    """The README's reference rows (orchestrator/generate.py writes them)."""
    return table_rows(GATEWAY_SETTINGS)


class GatewaySpec(Value):
    """The gateway as the config asks for it, paths made absolute."""

    project: str
    config_file: str
    port: int
    publish_address: str
    policy: str
    image: str
    max_body_kib: int
    host_dir: str  # <config_host_dir>/<project>: rendered config (mounted read-only)
    log_file: str  # <log_host_dir>/gateway.log
    restart: str
    api_key: str | None = field(default=None, repr=False)
    remote: tuple[tuple[str, str], ...] = ()  # (model, "host:port") of `routes`
    retry_unanswered: bool = True
    on_demand_wait: int = 300
    # Set by `up` where on-demand instances have an activator (orchestrator/activator/): its
    # address (each on-demand model's backup server), its agent port, the on-demand instances.
    activator: str = ""
    agent_port: int = 0
    on_demand: tuple[str, ...] = ()

    @property
    def container_name(self) -> str:
        return f"{self.project}-{GATEWAY_NAME}"

    @property
    def url(self) -> str:
        host = self.publish_address
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    @property
    def secret_dir(self) -> str:
        return os.path.join(self.host_dir, "secret")

    @property
    def key_digest(self) -> str:
        """Changes when the key does (so a new key is a new config version); reveals nothing."""
        return hashlib.sha256((self.api_key or "").encode()).hexdigest()[:16] if self.api_key else ""


def read(data: Mapping[str, Any], *, project: str, config_file: str) -> GatewaySpec | None:
    """The document's `[gateway]`, or None when there is none or `enabled = false`. The schema
    has been checked; `port` may still be missing (validate says so, `up` refuses)."""
    table = data.get("gateway")
    if not isinstance(table, dict) or not table.get("enabled", True) or not isinstance(table.get("port"), int):
        return None
    raw_docker = data.get("docker")
    docker: Mapping[str, Any] = raw_docker if isinstance(raw_docker, dict) else {}
    base = os.path.dirname(os.path.abspath(config_file))
    settings = {**DEFAULTS, **table}

    def host_path(raw: str) -> str:
        return os.path.normpath(os.path.join(base, os.path.expanduser(raw)))

    return GatewaySpec(
        project=project, config_file=config_file, port=settings["port"],
        publish_address=str(docker.get("publish_address", "127.0.0.1")), policy=settings["policy"],
        image=settings["image"], max_body_kib=settings["max_body_kib"],
        host_dir=os.path.join(host_path(settings["config_host_dir"]), project),
        log_file=os.path.join(host_path(str(docker.get("log_host_dir", "logs"))), f"{GATEWAY_NAME}.log"),
        restart=str(docker.get("restart", "no")), api_key=settings.get("api_key"),
        # Entries the schema refused (validate names them) are left out here, not a crash.
        remote=tuple((r["model"], _host_port(r["url"])) for r in settings.get("routes") or []
                     if isinstance(r, dict) and isinstance(r.get("model"), str) and isinstance(r.get("url"), str)),
        retry_unanswered=bool(settings["retry_unanswered"]), on_demand_wait=int(settings["on_demand_wait"]))


def _host_port(url: str) -> str:
    """`http://host:port[/]` -> `host:port` (the schema has checked the shape)."""
    return url[len("http://"):].rstrip("/")


if __name__ == "__main__":
    print(readme_rows(), end="")
