"""`validate`'s checks of on-demand instances (`[docker] on_demand`, `idle_stop_after`).

An on-demand instance is started by the first request for its model through the gateway, and
stopped (or put to sleep) after `idle_stop_after` seconds without one. What the config can get
wrong about that is said here, one line each:

* `idle_stop_after` on an instance that is not on demand (its own table: an error, nothing would
  ever read it; the global table with no on-demand instance at all: a warning);
* an on-demand instance without a `[gateway]`, or without a model name the gateway routes by:
  nothing would ever start it (errors, where `up` runs it: the Docker backend);
* an on-demand instance under the in-container launcher, which has no gateway: it starts as
  usual and is never stopped when idle (a warning);
* an on-demand instance kept off the host (`publish = false`): the activator reaches it on its
  host port (an error);
* an instance named `activator` (the activator's container, `ps` row and `logs` name: an error);
* `restart = "always"`: a restarted engine would start every on-demand instance at once (a warning);
* sleep mode published beyond loopback: vLLM's development routes, unguarded by its key (an error);
* `enable_sleep_mode` with an image whose vLLM has no sleep mode (the CPU build): that vLLM
  refuses to start with it (an error, known only from the image's own option table).
"""

from __future__ import annotations

from typing import Any, Mapping

from orchestrator.errors import Problem
from orchestrator.targets import DOCKER, LOCAL
from orchestrator.vllm_options import OptionTable


def on_demand_problems(resolved: Any, data: dict, source: str, target: str) -> list[Problem]:
    out: list[Problem] = []
    instances = [spec for spec in resolved.instances if spec.enabled]
    on_demand = [spec for spec in instances if spec.workload.on_demand]
    global_docker = _table(data.get("docker"))
    for spec in instances:
        own = _own_docker(data, spec.name)
        if "idle_stop_after" in own and not spec.workload.on_demand:
            out.append(Problem("error", f"instance.{spec.name}.docker.idle_stop_after",
                               "set for an instance that is not on demand: only on-demand instances are stopped when idle",
                               hint=f"set on_demand = true in [instance.{spec.name}.docker], or remove idle_stop_after",
                               source=source))
    if "idle_stop_after" in global_docker and not on_demand:
        out.append(Problem("warning", "docker.idle_stop_after",
                           "no instance is on demand, so nothing reads it (only on-demand instances are stopped when idle)",
                           hint="set on_demand = true where an instance should start on its first request", source=source))
    if target == LOCAL:
        for spec in on_demand:
            out.append(Problem("warning", _where_on_demand(data, spec.name),
                               "the in-container launcher has no gateway to start it on a request: `launch` starts it "
                               "as usual and never stops it when idle", source=source))
        return out
    if target != DOCKER:  # the exports say themselves what their target can do with it
        return out
    gateway = data.get("gateway")
    has_gateway = isinstance(gateway, dict) and gateway.get("enabled", True) is not False
    if on_demand and not has_gateway:
        for where in dict.fromkeys(_where_on_demand(data, spec.name) for spec in on_demand):
            out.append(Problem("error", where,
                               "on demand, but there is no [gateway]: an on-demand instance is started by the first "
                               "request for its model through the gateway, so nothing would ever start it",
                               hint="add a [gateway] table (e.g. port = 8000), or set on_demand = false", source=source))
    from orchestrator.activator.state import ACTIVATOR_NAME

    if on_demand and resolved.instance(ACTIVATOR_NAME) is not None:
        out.append(Problem("error", f"instance.{ACTIVATOR_NAME}",
                           "this name is the on-demand activator's (its container, `ps` row and `logs` name)",
                           hint="rename the instance", source=source))
    for spec in on_demand:
        work = spec.workload
        if work is not None and work.restart == "always":
            out.append(Problem("warning", f"instance.{spec.name}.docker.restart",
                               "\"always\" on an on-demand instance: the engine starts it with every other such "
                               "instance when it restarts (a reboot), all at once and outside the activator's GPU "
                               "budget", hint="use restart = \"unless-stopped\" or \"on-failure\"", source=source))
        exposed = _dev_routes_exposed_at(spec)
        if exposed:
            out.append(Problem("error", f"instance.{spec.name}.server.enable_sleep_mode",
                               f"on demand with sleep mode, vLLM serves its development routes (/sleep, /wake_up, "
                               f"/collective_rpc), which its API key does not guard, and they would be reachable on "
                               f"{exposed}", hint="publish it on 127.0.0.1 (the default: clients come through the "
                               "gateway), or remove enable_sleep_mode", source=source))
        if work is not None and work.publish is None and work.network_mode != "host":
            out.append(Problem("error", f"instance.{spec.name}.docker.publish",
                               "on demand, but not published: the activator starts it and forwards the first "
                               "requests to it on its host port (127.0.0.1)",
                               hint="remove publish = false (the default publishes on 127.0.0.1 only)", source=source))
        model = spec.served_model or spec.server.get("model")
        if not isinstance(model, str) or not model:
            out.append(Problem("error", f"instance.{spec.name}.server.served_model_name",
                               "the instance is on demand but has no model name: the gateway starts it for requests "
                               "naming its model, and routes by that name",
                               hint="set served_model_name (or model)", source=source))
    return out


def sleep_mode_problems(resolved: Any, tables: Mapping[str, OptionTable], source: str) -> list[Problem]:
    """`enable_sleep_mode` where the image's own vLLM says its platform has no sleep mode. Only
    an image's table knows (the recorded one describes some other build); a platform it could
    not name (a CUDA build asked without a GPU) says nothing either."""
    out: list[Problem] = []
    for spec in resolved.instances:
        if not spec.enabled or spec.server.get("enable_sleep_mode") is not True or spec.workload is None:
            continue
        table = tables.get(spec.workload.image)
        if table is None or table.sleep_mode is not False:
            continue
        fallback = ("; on this image an on-demand instance is stopped and started instead of put to sleep"
                    if spec.workload.on_demand else "")
        out.append(Problem("error", f"instance.{spec.name}.server.enable_sleep_mode",
                           f"the vLLM {table.vllm_version} of {spec.workload.image} ({table.device_type} build) has no "
                           f"sleep mode: it refuses to start with it (\"Sleep mode is not supported on current platform\")"
                           + fallback,
                           hint="remove enable_sleep_mode, or use an image built for CUDA or ROCm", source=source))
    return out


def _dev_routes_exposed_at(spec: Any) -> str | None:
    """Where beyond loopback an instance with vLLM's development routes on (sleep mode on demand)
    listens: its published address, or its own host on the host network; None if nowhere."""
    from orchestrator.addresses import is_loopback
    from orchestrator.sleep_api import supports_sleep

    listen = spec.host_listen() if supports_sleep(spec) else None
    return f"{listen[0]}:{listen[1]}" if listen and not is_loopback(listen[0]) else None


def _table(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _own_docker(data: dict, name: str) -> dict:
    return _table(_table(_table(data.get("instance")).get(name)).get("docker"))


def _where_on_demand(data: dict, name: str) -> str:
    """The key path that made the instance on demand: its own table's, else the global one."""
    return f"instance.{name}.docker.on_demand" if "on_demand" in _own_docker(data, name) else "docker.on_demand"
