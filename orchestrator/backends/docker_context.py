"""Which engine the Docker CLI would talk to: DOCKER_HOST, else the CLI's current context.

After `docker context use rootless` (rootless Docker's installer does this) or `docker context
use gpu-box` (a remote server over ssh), `docker` and `docker compose` talk to that engine;
vllm-orch must act on the same one, or `up` would start a fleet on another engine than the one
`docker ps` shows. docker-py's `from_env` reads only DOCKER_HOST, DOCKER_TLS_VERIFY and
DOCKER_CERT_PATH, so the context is turned into those variables here, once, and both engine
clients read them.

The CLI's rules, as its context store keeps them: DOCKER_HOST wins; else DOCKER_CONTEXT; else
`currentContext` in $DOCKER_CONFIG/config.json (default ~/.docker). A context named `name` lives
in contexts/meta/<sha256(name)>/meta.json; its TLS files, if any, in contexts/tls/<same>/docker/.
"""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from orchestrator.errors import DockerUnavailable

DEFAULT_CONTEXT = "default"  # the CLI's name for "DOCKER_HOST or the default socket"


def docker_config_dir(env: Mapping[str, str]) -> str:
    return env.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")


def current_context(env: Mapping[str, str]) -> tuple[str, str]:
    """(context name, where it was chosen); the default context when nothing names one."""
    if env.get("DOCKER_CONTEXT"):
        return env["DOCKER_CONTEXT"], "DOCKER_CONTEXT"
    path = os.path.join(docker_config_dir(env), "config.json")
    try:
        with open(path, encoding="utf-8") as handle:
            name = json.load(handle).get("currentContext")
    except (OSError, ValueError, AttributeError):
        name = None  # no CLI config (a plain engine host): the default context
    return (name, path) if isinstance(name, str) and name else (DEFAULT_CONTEXT, "")


def engine_environment(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """`env` with DOCKER_HOST (and the TLS variables) of the current Docker context filled in
    when DOCKER_HOST is unset; unchanged for the default context."""
    out = dict(env)
    if env.get("DOCKER_HOST"):
        return out
    name, chosen_by = current_context(env)
    if name == DEFAULT_CONTEXT:
        return out
    import hashlib  # only a named context pays for it

    context_id = hashlib.sha256(name.encode("utf-8")).hexdigest()
    store = os.path.join(docker_config_dir(env), "contexts")
    meta_path = os.path.join(store, "meta", context_id, "meta.json")
    try:
        with open(meta_path, encoding="utf-8") as handle:
            meta: Any = json.load(handle)
        endpoint = meta["Endpoints"]["docker"]
        host = endpoint["Host"]
    except FileNotFoundError:
        raise DockerUnavailable(f"Docker context {name!r} (set in {chosen_by}) does not exist; "
                                "`docker context ls` lists the contexts") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DockerUnavailable(f"Docker context {name!r} (set in {chosen_by}) is unreadable: {meta_path}: "
                                f"{exc.__class__.__name__}: {exc}") from None
    if not isinstance(host, str) or not host:
        raise DockerUnavailable(f"Docker context {name!r} (set in {chosen_by}) names no Docker endpoint")
    out["DOCKER_HOST"] = host
    tls_dir = os.path.join(store, "tls", context_id, "docker")
    if os.path.isdir(tls_dir):
        out["DOCKER_CERT_PATH"] = tls_dir
        if not endpoint.get("SkipTLSVerify"):
            out["DOCKER_TLS_VERIFY"] = "1"
    return out
