"""Spec -> the JSON body of the Engine API's `POST /containers/create`, built once and sent as it
is by either engine client (engine.py), so a container is the same whichever client made it.

The fields are the ones docker-py's create_container/create_host_config produce for the same
settings (tests/unit/test_engine_body.py checks that against docker-py itself), so containers
made before and after the socket client are the same, and match Compose's (docs/compose.md).
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from orchestrator.labels import LABEL_HASH, LABEL_OWNER, LABEL_SECRETS, LABEL_SPEC
from orchestrator import options
from orchestrator.container import ContainerSpec, device_requests
from orchestrator.spec import CacheMount, Mount

PROBE_OWNER = "vllm-orch-probe"  # throwaway containers (option tables, GPU check), never ours to manage
# When a probe may be removed by any later run: a vllm-orch killed while it waited for one
# (SIGKILL, a lost SSH session) cannot remove it itself, and AutoRemove would take the output
# with it before it is read.
PROBE_EXPIRES = "io.vllm-orch.probe-expires"


def _ns(seconds: float) -> int:
    return int(seconds * 1_000_000_000)


def create_body(container: ContainerSpec) -> dict[str, Any]:
    """The create body of one instance's container. Secrets are files bind-mounted from the
    host (secret_files.py), never values in the body; only a container compared as made by an
    earlier release (ContainerSpec.secrets_in_env) would carry them in Env, and none is created so."""
    labels = dict(container.labels)
    labels[LABEL_HASH] = container.config_hash()
    labels[LABEL_SPEC] = json.dumps(container.to_json(), sort_keys=True, separators=(",", ":"))
    if container.secrets_as_files:
        labels[LABEL_SECRETS] = container.secret_dir  # for `down` and a later start (docker.py)
    body: dict[str, Any] = {
        "Image": container.image,
        "Entrypoint": list(container.entrypoint),
        "Cmd": list(container.command),
        "Env": [f"{key}={value}" for key, value in container.environment(reveal=True).items()],
        "Labels": labels,
        # Compose and docker-py set these too; unset, `docker inspect` would differ for no gain.
        "AttachStdout": True,
        "AttachStderr": True,
        "StopSignal": container.stop_signal,
        "HostConfig": _host_config(container),
    }
    options.engine_fields(container.options, body)  # user, stop timeout, /dev/shm, CPUs, ... (options.py)
    if container.port:
        body["ExposedPorts"] = {f"{container.port.container_port}/tcp": {}}
    check = container.healthcheck
    if check is not None:
        body["Healthcheck"] = {
            "Test": list(check.test),
            "Interval": _ns(check.interval_s),
            "Timeout": _ns(check.timeout_s),
            "Retries": check.retries,
            "StartPeriod": _ns(check.start_period_s),
        }
    return body


def _host_config(container: ContainerSpec) -> dict[str, Any]:
    host: dict[str, Any] = {
        "Mounts": ([bind_mount(m) for m in container.mounts] + [bind_mount(m) for m in container.cache_mounts]
                   + [bind_mount(m) for m in container.secret_mounts()]),
        "DeviceRequests": gpu_device_requests(container),
        "Init": container.init,
    }
    port = container.port
    if port:
        host["PortBindings"] = {f"{port.container_port}/tcp": [{"HostIp": port.host_address, "HostPort": str(port.host_port)}]}
    return host


def bind_mount(mount: Mount | CacheMount) -> dict[str, Any]:
    return {"Type": "bind", "Source": mount.source, "Target": mount.target, "ReadOnly": mount.read_only}


def gpu_device_requests(container: ContainerSpec) -> list[dict[str, Any]]:
    # "all" is Count -1 with no ids: sent as [] rather than null, as docker-py always did, so the
    # engine keeps showing existing containers' settings unchanged.
    return [dict(r, DeviceIDs=r["DeviceIDs"] or []) for r in device_requests(container.gpu, container.gpu_driver)]


def probe_body(
    image: str,
    argv: list[str],
    *,
    mounts: Iterable[Mount] = (),
    device_requests: list[dict[str, Any]] | None = None,
    env: dict[str, str] | None = None,
    network: bool = False,
    host_pids: bool = False,
    expires: int | None = None,
) -> dict[str, Any]:
    """A throwaway container running argv[0] with argv[1:]: option-table dumps, GPU checks.
    `host_pids`: the host's pid namespace (the GPU probe reads which container a GPU process is in)."""
    host: dict[str, Any] = {"Mounts": [bind_mount(m) for m in mounts], "NetworkMode": "default" if network else "none"}
    if device_requests:
        host["DeviceRequests"] = device_requests
    if host_pids:
        host["PidMode"] = "host"
    return {
        "Image": image,
        "Entrypoint": [argv[0]],
        "Cmd": list(argv[1:]),
        "Env": [f"{key}={value}" for key, value in (env or {}).items()],
        "Labels": {LABEL_OWNER: PROBE_OWNER, **({PROBE_EXPIRES: str(expires)} if expires else {})},
        "HostConfig": host,
    }
