"""The gateway in the Compose export: one more service of the same file.

Compose has no reload: its configuration is part of the file, as Compose `configs` with inline
`content` (Compose 2.23 or later) mounted where the image's entrypoint reads them, so a changed
route is a changed service that `docker compose up -d` recreates (seconds of refused connections;
`vllm-orch up` reloads in place instead). The key is a Compose secret read from the environment
variable VLLM_ORCH_GATEWAY_API_KEY when `docker compose up` runs: it is never in the file.
"""

from __future__ import annotations

from typing import Any

from orchestrator.gateway import files, haproxy
from orchestrator.gateway.routes import models, routes_for
from orchestrator.gateway.settings import GATEWAY_NAME, GatewaySpec
from orchestrator.labels import LABEL_CONFIG, LABEL_MODEL, LABEL_OWNER, LABEL_PROJECT, LABEL_ROLE, LABEL_URL

KEY_ENV = "VLLM_ORCH_GATEWAY_API_KEY"
KEY_SECRET = "vllm-orch-gateway-api-key"


def config_name(path: str) -> str:
    return "vllm-orch-gateway-" + path.replace("/", "-").replace(".", "-")


def compose_parts(gateway: GatewaySpec, instances: list, owner: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(the service's settings, top-level `configs`, top-level `secrets`); values unescaped.
    Instances without a published port have no address the host's network reaches here: they
    get no route (the Compose export's warning says so)."""
    routes = routes_for(instances, remote=gateway.remote)
    draft = haproxy.render(gateway, routes)
    version = files.version_of(draft, gateway.key_digest)
    rendered = haproxy.render(gateway, routes, version)
    configs = {config_name(path): {"content": data.decode()} for path, data in rendered.items()}
    service: dict[str, Any] = {
        "image": gateway.image,
        "network_mode": "host",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "restart": gateway.restart,
        "labels": {LABEL_PROJECT: gateway.project, LABEL_OWNER: owner, LABEL_ROLE: GATEWAY_NAME,
                   LABEL_CONFIG: gateway.config_file, LABEL_URL: gateway.url, LABEL_MODEL: ",".join(models(routes))},
        "configs": [{"source": config_name(path), "target": f"{haproxy.CURRENT}/{path}"}
                    for path in rendered],
    }
    secrets: dict[str, Any] = {}
    if gateway.api_key:
        service["secrets"] = [{"source": KEY_SECRET, "target": f"{haproxy.SECRET_DIR}/{haproxy.KEYS_FILE}"}]
        secrets[KEY_SECRET] = {"environment": KEY_ENV}
    return service, configs, secrets
