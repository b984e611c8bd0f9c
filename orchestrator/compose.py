"""Resolved plan -> a docker-compose.yml that runs the containers `vllm-orch up` would run.

The file is built from the same `ContainerSpec`s the Docker backend creates containers from, and
laid out by the templates in `compose-templates/` (a frame, `base.yml`, and one block per
instance, `service.yml`). The templates ship inside the
package (`orchestrator/compose_templates` links to the repository's `compose-templates/`), or come
from the directory `$VLLM_ORCH_COMPOSE_TEMPLATES` names.

What the output promises:

* deterministic: fixed key order, no timestamps; the same inputs give the same bytes;
* no secret values: secrets are Compose `secrets:` read from the environment of `docker compose`
  (files in /run/secrets inside the container, as `up` mounts them), named in the header;
* nothing is interpolated by Compose: every `$` in a config value is written as `$$`;
* settings every service shares are written once, in `x-vllm-common`, and merged into each
  service with YAML merge keys (`<<:`); environment, labels and healthcheck have anchors of their
  own so a service adds its keys to the shared ones instead of replacing them;
* values reach the YAML only through the serializer; comments (which carry the config path,
  model names, secret names) are written with every non-printable character escaped, so a
  `\r` or U+2028 in a value cannot end a comment and start a key;
* the text is read back before it is returned and must give each service exactly the settings
  it was built from, and must mean exactly what the same file without its comments means (a
  template or a value that breaks that is reported, not written).
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any, Iterable

import yaml

from orchestrator import __version__, options, secret_files
from orchestrator.errors import OrchestratorError
from orchestrator.exporters import comment_text, safe_loader
from orchestrator.labels import LABEL_GPUS, LABEL_INSTANCE, LABEL_LOG, LABEL_MODEL, LABEL_OWNER, LABEL_URL
from orchestrator.container import ContainerSpec
from orchestrator.spec import GpuRequest, InstanceSpec, Mount

GATEWAY_NAME = "gateway"  # the gateway's service (orchestrator/gateway/settings.py)
OWNER_COMPOSE = "compose"  # io.vllm-orch.owner of exported containers: `down` only removes "vllm-orch"
TEMPLATES_ENV = "VLLM_ORCH_COMPOSE_TEMPLATES"
# The repository's compose-templates/, reached through a link inside the package so that an
# installed wheel carries them too (package data) and a checkout has one copy of them.
TEMPLATES_DIR = Path(__file__).resolve().parent / "compose_templates"
DISABLED_PROFILE = "disabled"
# Compose cannot start a service on its first request: an on-demand instance is in this profile,
# so a plain `docker compose up` leaves it alone and `--profile on-demand` starts it.
ON_DEMAND_PROFILE = "on-demand"

# Mapping settings shared key by key: setting -> anchor of its shared part inside x-vllm-common.
MERGED_MAPPINGS = {"environment": "vllm-environment", "labels": "vllm-labels", "healthcheck": "vllm-healthcheck"}
# Settings that always stay with their service, even where every service has the same value.
PER_SERVICE = ("command", "volumes", "ports", "deploy", "profiles", "secrets")
# Items of the merged mappings that name the instance: also always with their service.
PER_SERVICE_ITEMS = {
    "environment": {"VLLM_ORCH_INSTANCE", "VLLM_ORCH_LOG_FILE"},
    "labels": {LABEL_INSTANCE, LABEL_GPUS, LABEL_URL, LABEL_MODEL, LABEL_LOG},
    "healthcheck": {"test"},
}

_COMPOSE_PROJECT = re.compile(r"^[a-z0-9][a-z0-9_-]*$")  # Compose refuses any other project name
_PLACEHOLDER = re.compile(r"\{\{\s*(\w+)\s*\}\}")
_BLOCK_LINE = re.compile(r"^(\s*)\{\{\s*(\w+)\s*\}\}\s*$")
_FLOW_MAX = 32  # a list of scalars at most about this long is written [a, b]
_WIDTH = 1 << 30  # never fold long strings: the log wrapper and argv stay on one line each


# ----------------------------------------------------------------------------- YAML text
class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # anchors are placed by hand, never generated
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # List items indented under their key, as Compose's own documentation writes them.
        super().increase_indent(flow, False)

    def represent_list(self, data: Iterable[Any]) -> yaml.SequenceNode:
        # A short list of words reads best on one line ([gpu], ['0', '1']); argv stays one per line.
        data = list(data)
        node = super().represent_list(data)
        if data and all(isinstance(v, (str, int)) for v in data) and sum(len(str(v)) + 4 for v in data) <= _FLOW_MAX:
            node.flow_style = True
        return node


_Dumper.add_representer(list, _Dumper.represent_list)


def _dump(value: Any) -> str:
    return yaml.dump(value, Dumper=_Dumper, default_flow_style=False, sort_keys=False, width=_WIDTH,
                     allow_unicode=True)


def _inline(value: Any) -> str:
    """One scalar as YAML (quoted where a plain word would mean something else)."""
    return _dump({"k": value})[len("k: "):].rstrip("\n")


def _indent(text: str, prefix: str = "  ") -> str:
    return "".join(prefix + line if line.strip() else line for line in text.splitlines(keepends=True))


def _block(settings: dict[str, Any], *, anchors: dict[str, str] | None = None,
           merges: dict[str, str] | None = None) -> str:
    """A mapping as block YAML; `anchors` puts `&name` on a value, `merges` starts one with
    `<<: *name` (both for mapping values)."""
    anchors, merges = anchors or {}, merges or {}
    parts: list[str] = []
    for key, value in settings.items():
        if key in anchors:
            parts.append(f"{key}: &{anchors[key]}\n" + _indent(_dump(value)))
        elif key in merges:
            body = f"<<: *{merges[key]}\n" + (_dump(value) if value else "")
            parts.append(f"{key}:\n" + _indent(body))
        else:
            parts.append(_dump({key: value}))
    return "".join(parts)


class _StrictLoader(safe_loader()):  # type: ignore[misc]
    """SafeLoader that refuses a key written twice in one mapping (Compose refuses it too)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} written twice", key_node.start_mark)
        seen.add(key)
    loader.flatten_mapping(node)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# ----------------------------------------------------------------------------- templates
def templates_dir() -> Path:
    configured = os.environ.get(TEMPLATES_ENV)
    return Path(configured) if configured else TEMPLATES_DIR


def _read_template(directory: Path, name: str) -> str:
    path = directory / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OrchestratorError(
            f"compose template {path} cannot be read ({exc.strerror or exc}); the templates live in the "
            f"repository's compose-templates/ directory, or set {TEMPLATES_ENV} to a copy of it"
        ) from None


def fill(template: str, *, blocks: dict[str, str], inline: dict[str, str], source: str) -> str:
    """Replace `{{ name }}` placeholders. A placeholder alone on its line takes a block (indented
    as the placeholder; an empty block drops the line), any other takes an inline scalar. Lines
    starting with `##` are notes about the template and are dropped."""
    out: list[str] = []
    for number, line in enumerate(template.splitlines(), 1):
        if line.startswith("##"):
            continue
        match = _BLOCK_LINE.match(line)
        if match and match.group(2) in blocks:
            out += [_indent(text_line, match.group(1)) for text_line in blocks[match.group(2)].splitlines()]
            continue

        def replace(found: re.Match, number: int = number) -> str:
            name = found.group(1)
            if name in inline:
                return inline[name]
            if name in blocks:
                raise OrchestratorError(f"compose template {source}:{number}: {{{{ {name} }}}} must be alone on its line")
            known = ", ".join(sorted([*blocks, *inline]))
            raise OrchestratorError(f"compose template {source}:{number}: unknown placeholder {{{{ {name} }}}} (known: {known})")

        out.append(_PLACEHOLDER.sub(replace, line))
    return "\n".join(out).rstrip("\n") + "\n"


# ----------------------------------------------------------------------------- one service
def _escape(value: Any) -> Any:
    """`$` -> `$$` in every config value, so Compose passes it through instead of interpolating."""
    if isinstance(value, str):
        return value.replace("$", "$$")
    if isinstance(value, list):
        return [_escape(v) for v in value]
    if isinstance(value, dict):
        return {k: _escape(v) for k, v in value.items()}
    return value


def _volume(mount: Mount) -> dict[str, Any]:
    volume: dict[str, Any] = {"type": "bind", "source": mount.source, "target": mount.target}
    if mount.read_only:
        volume["read_only"] = True
    # A missing source is an error, as in `vllm-orch up`, not a new directory: a log file that
    # Compose made into a directory could never be written to.
    volume["bind"] = {"create_host_path": False}
    return volume


def gpu_devices(gpu: GpuRequest, driver: str = "nvidia") -> list[dict[str, Any]]:
    """Compose's spelling of the GPU request (deploy.resources.reservations.devices)."""
    if gpu.mode == "none":
        return []
    device: dict[str, Any] = {"driver": driver, "capabilities": ["gpu"]}
    if gpu.mode == "all":
        device["count"] = "all"
    else:
        device["device_ids"] = list(gpu.device_ids)
    return [device]


def service_settings(spec: InstanceSpec, c: ContainerSpec, *, enabled: bool = True) -> dict[str, Any]:
    """The Compose settings of one instance run as container `c` (its Docker rendering), in the
    order they are written; values unescaped."""
    settings: dict[str, Any] = {"image": c.image, "entrypoint": list(c.entrypoint), "command": list(c.command)}
    # As `up` creates it: secrets only by name (VLLM_ORCH_SECRET_ENV, HF_TOKEN_PATH); their values
    # are Compose `secrets:` (below), files the log wrapper reads.
    settings["environment"] = c.environment()
    labels = dict(c.labels)
    labels[LABEL_OWNER] = OWNER_COMPOSE
    settings["labels"] = labels
    settings["volumes"] = [_volume(m) for m in c.mounts] + [_volume(Mount(m.source, m.target)) for m in c.cache_mounts]
    if c.port:
        settings["ports"] = [{
            "target": c.port.container_port,
            "published": str(c.port.host_port),
            "host_ip": c.port.host_address,
            "protocol": "tcp",
        }]
    devices = gpu_devices(c.gpu, c.gpu_driver)
    if devices:
        settings["deploy"] = {"resources": {"reservations": {"devices": devices}}}
    settings["init"] = c.init
    settings["stop_signal"] = c.stop_signal
    settings.update(options.compose_fields(c.options))  # user, network, /dev/shm, CPUs, ... (options.py)
    if c.healthcheck:
        check = c.healthcheck
        settings["healthcheck"] = {
            "test": list(check.test),
            "interval": f"{check.interval_s}s",
            "timeout": f"{check.timeout_s}s",
            "retries": check.retries,
            "start_period": f"{check.start_period_s}s",
        }
    if c.secrets_as_files:
        # Each one a file at /run/secrets/<NAME>, where `up` mounts it (top-level `secrets:`).
        settings["secrets"] = [{"source": key, "target": secret_files.file_name(key)} for key, _ in c.secret_env]
    if not enabled:
        settings["profiles"] = [DISABLED_PROFILE]
    elif _on_demand(spec, True):
        settings["profiles"] = [ON_DEMAND_PROFILE]
    return settings


def secret_names(containers: list[ContainerSpec]) -> list[str]:
    """Every secret of the project's containers, in the order first met."""
    names: list[str] = []
    for container in containers:
        for key, _ in container.secret_env:
            if key not in names:
                names.append(key)
    return names


def secrets_block(names: list[str], others: dict[str, Any] | None = None, *, comments: bool) -> str:
    """The top-level `secrets:`: each read by Compose from the variable of its name when a
    container is created (Compose refuses to start one while it is unset) and handed to the
    container as a file; the value is never in this file nor in the container's configuration.
    `others`: the side services' own (the gateway's key), already in Compose's form."""
    secrets = {name: {"environment": name} for name in names}
    secrets.update(others or {})
    if not secrets:
        return ""
    note = ("# Read from the environment of `docker compose` (or an .env file); each container gets it as a\n"
            "# file in /run/secrets (the log wrapper reads an instance's into vLLM's environment only).\n"
            ) if comments and names else ""
    return "\n" + note + _dump({"secrets": secrets})


_ABSENT = object()


def split_common(services: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(settings every service has with the same value, each service's remaining settings).
    Merged mappings split item by item; other settings are shared only whole."""
    if not services:
        return {}, []
    common: dict[str, Any] = {}
    for key in services[0]:
        if key in PER_SERVICE:
            continue
        values = [s.get(key, _ABSENT) for s in services]
        if key in MERGED_MAPPINGS:
            if any(v is _ABSENT for v in values):
                continue
            keep = PER_SERVICE_ITEMS.get(key, set())
            shared = {k: v for k, v in values[0].items()
                      if k not in keep and all(k in other and other[k] == v for other in values[1:])}
            if shared:
                common[key] = shared
        elif all(v == values[0] for v in values[1:]):
            common[key] = values[0]
    rest: list[dict[str, Any]] = []
    for service in services:
        own: dict[str, Any] = {}
        for key, value in service.items():
            if key in MERGED_MAPPINGS and key in common:
                extra = {k: v for k, v in value.items() if k not in common[key]}
                if extra:
                    own[key] = extra
            elif key not in common:
                own[key] = value
        rest.append(own)
    return common, rest


# ----------------------------------------------------------------------------- the file
def _on_demand(spec: InstanceSpec, master_on: bool) -> bool:
    return master_on and spec.enabled and spec.workload is not None and spec.workload.on_demand


def _header(project: Any, enabled_all: bool) -> str:
    resolved = project.resolved
    overrides = project.loaded.layers[1:]
    instances = resolved.instances
    containers = [resolved.container_of(spec.name) for spec in instances]
    secrets = secret_names(containers)
    lines = [
        f"docker-compose.yml for the vLLM project {resolved.project!r}, written by `vllm-orch compose` (vllm-orch {__version__}).",
        "It runs the containers `vllm-orch up` runs for the same inputs. Regenerate it instead of editing it:",
        "the same inputs give the same bytes, so a diff in review is a change of the config.",
        f"  config:    {resolved.config_file}",
        "  overrides: " + (", ".join(overrides) + " (in the order applied)" if overrides else "none"),
        f"  project:   {resolved.project} (Compose names the containers {resolved.project}-<service>-1; "
        f"labelled {LABEL_OWNER}={OWNER_COMPOSE})",
        "",
    ]
    if secrets:
        lines += [
            "Secrets are not in this file. Set these variables in the environment (or in an .env file next to",
            "this file, never committed) before `docker compose up`; Compose refuses to create a container without",
            "them, and hands each to it as a file (secrets:), never in its configuration (`docker inspect`):",
            "  " + " ".join(secrets),
            "",
        ]
    log_files = [c.host_log_file for c in containers]
    if log_files:
        lines += [
            "Bind-mount sources must exist: nothing is created for them (create_host_path: false), so a missing",
            "log file stops `docker compose up` instead of turning into a directory. Create the log files first:",
        ]
        for directory in sorted({str(Path(f).parent) for f in log_files}):
            lines.append(f"  mkdir -p {shlex.quote(directory)}")
        for c in containers:
            lines += _made_for(c.user, "touch", c.host_log_file, "666")
        caches = [(c, cache) for c in containers for cache in c.cache_mounts]
        if caches:
            lines.append("and the cache directories (vLLM's compiled graphs, the Hugging Face cache; kept across restarts):")
        for c, cache in caches:
            lines += _made_for(c.user, "mkdir -p", cache.source, "777")
        lines.append("")
    if not enabled_all:
        lines += [
            f"Services in the profile {DISABLED_PROFILE!r} are disabled in the config (or master.enable = false):",
            f"`docker compose up` skips them; `docker compose --profile {DISABLED_PROFILE} up` starts them too.",
            "",
        ]
    on_demand = [spec.name for spec in instances if _on_demand(spec, resolved.master.enable)]
    if on_demand:
        lines += [
            f"On demand in the config: {', '.join(on_demand)}. Compose cannot start a service on its first request",
            f"(`vllm-orch up` does, through its gateway) nor stop it when idle: they are in the profile {ON_DEMAND_PROFILE!r},",
            f"so `docker compose up` leaves them alone; `docker compose --profile {ON_DEMAND_PROFILE} up -d` starts them too.",
            "",
        ]
    if resolved.monitoring is not None:
        lines += ["[monitoring]: no Prometheus here (only `vllm-orch up` runs one); every service serves /metrics for",
                  "your own (`vllm-orch dashboard --rules` prints the rules, `vllm-orch dashboard` the Grafana dashboard).", ""]
    lines += [
        "With `vllm-orch up` on the same host: both publish the same host ports, so whichever starts second",
        "fails (\"port is already allocated\"). `vllm-orch down` never removes these containers, and",
        "`vllm-orch ps` lists both kinds with their OWNER (vllm-orch or compose). Run one or the other.",
    ]
    return "\n".join(("# " + comment_text(line)).rstrip() for line in lines)


def _made_for(user: str | None, make: str, path: str, shared_mode: str) -> list[str]:
    """The shell lines that make `path` and hand it to the server's user: chown for a uid, a
    shared mode for a named user (whose uid only the image knows)."""
    lines = [f"  {make} {shlex.quote(path)}"]
    uid, _, gid = (user or "").partition(":")
    if uid.isdigit():
        lines.append(f"  chown {uid}{':' + gid if gid.isdigit() else ''} {shlex.quote(path)}")
    elif user:
        lines.append(f"  chmod {shared_mode} {shlex.quote(path)}")
    return lines


def _comment(spec: InstanceSpec, c: ContainerSpec, master_on: bool = True) -> str:
    parts = [f"gpus={spec.gpu.describe()}"]
    labels = dict(c.labels)
    if labels.get(LABEL_URL):
        parts.append(labels[LABEL_URL])
    if spec.served_model:
        parts.append(f"model {spec.served_model}")
    parts.append(f"log {c.host_log_file}")
    if not spec.enabled:
        parts.append("disabled")
    lines = [f"{spec.name}: " + ", ".join(parts)]
    if _on_demand(spec, master_on) and spec.workload is not None:
        idle = (f"idle_stop_after = {spec.workload.idle_stop_after} s" if spec.workload.idle_stop_after
                else "idle_stop_after = 0")
        lines += [f"on_demand = true: Compose cannot start a service on its first request, so it is in the profile "
                  f"{ON_DEMAND_PROFILE!r}:",
                  f"`docker compose --profile {ON_DEMAND_PROFILE} up -d {spec.name}` starts it; nothing stops it when "
                  f"idle ({idle} is vllm-orch's)."]
    return "\n".join("# " + comment_text(line) for line in lines)


def render_compose(project: Any, templates: Path | None = None) -> str:
    """The Compose file for `project` (an orchestrator.project.Project), as text."""
    resolved = project.resolved
    if not _COMPOSE_PROJECT.match(resolved.project):
        raise OrchestratorError(
            f"project name {resolved.project!r} is not valid for Compose (lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit): pass another with -p or set [docker] project"
        )
    directory = templates or templates_dir()
    base = _read_template(directory, "base.yml")
    service_template = _read_template(directory, "service.yml")

    master_on = resolved.master.enable
    instances = resolved.instances
    containers = [resolved.container_of(spec.name) for spec in instances]
    services = [_escape(service_settings(spec, c, enabled=master_on and spec.enabled))
                for spec, c in zip(instances, containers)]
    common, own = split_common(services)
    anchors = {key: anchor for key, anchor in MERGED_MAPPINGS.items() if key in common}
    gateway = _gateway_parts(project)  # (service, configs, secrets) or None: orchestrator/gateway/compose_service.py

    # Each service's YAML once: the text is assembled twice (with and without comments).
    settings_blocks = [_block(settings, merges={key: anchors[key] for key in settings if key in anchors})
                       for settings in own]
    common_block = _block(common, anchors=anchors) if common else "{}"

    def assemble(comments: bool) -> str:
        blocks: list[str] = []
        for spec, c, settings_block in zip(instances, containers, settings_blocks):
            blocks.append(fill(
                service_template,
                blocks={"comment": _comment(spec, c, master_on) if comments else "", "settings": settings_block},
                inline={"service": _inline(spec.name)},
                source=str(directory / "service.yml"),
            ))
        if gateway is not None:
            note = "# The gateway (HAProxy): one OpenAI endpoint routed by model; its configuration is below.\n"
            blocks.append((note if comments else "") + _dump({GATEWAY_NAME: gateway[0]}))
        text = fill(
            base,
            blocks={
                "header": _header(project, all(master_on and spec.enabled for spec in instances)) if comments else "",
                "common": common_block,
                "services": "\n".join(blocks) if blocks else "{}",
            },
            inline={"project": _inline(resolved.project)},
            source=str(directory / "base.yml"),
        )
        if gateway is not None:
            text += "\n" + _dump({"configs": gateway[1]})
        # After the template: any copy of it works.
        return text + secrets_block(secret_names(containers), gateway[2] if gateway is not None else {},
                                    comments=comments)

    text = assemble(comments=True)
    names = [spec.name for spec in instances] + ([GATEWAY_NAME] if gateway is not None else [])
    doc = _check(text, resolved.project, names, services + ([gateway[0]] if gateway is not None else []), directory)
    if doc != yaml.load(assemble(comments=False), Loader=_StrictLoader):
        raise OrchestratorError("the compose file's comments would change what it means (a value holds a line "
                                "break the escaping missed); nothing was written")
    return text


def _gateway_parts(project: Any) -> tuple[dict, dict, dict] | None:
    from orchestrator.gateway.compose_service import compose_parts

    gateway = project.resolved.gateway
    if gateway is None:
        return None
    service, configs, secrets = compose_parts(gateway, project.resolved.instances, OWNER_COMPOSE)
    return _escape(service), _escape(configs), secrets


# ----------------------------------------------------------------------------- read-back check
def _missing(expected: Any, actual: Any, path: str) -> str | None:
    """First place where `actual` lacks or changes what `expected` holds (a template may add)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return path
        for key, value in expected.items():
            if key not in actual:
                return f"{path}.{key}"
            found = _missing(value, actual[key], f"{path}.{key}")
            if found:
                return found
        return None
    return None if expected == actual else path


def _as_read(value: Any) -> Any:
    """`value` as a YAML reader gives it back: tuples as lists (a SecretRef is a str already).
    Compared with what the text reads as, without dumping each service once more."""
    if isinstance(value, dict):
        return {key: _as_read(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_read(item) for item in value]
    return value


def _check(text: str, project: str, names: list[str], services: list[dict[str, Any]], directory: Path) -> Any:
    where = f"the compose templates in {directory}"
    try:
        doc = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        raise OrchestratorError(f"{where} give invalid YAML: {exc}") from None
    if not isinstance(doc, dict) or doc.get("name") != project or not isinstance(doc.get("services"), dict):
        raise OrchestratorError(f"{where} must give a mapping with `name: {{{{ project }}}}` and `services:`")
    wanted = {name for service in services for name in (s["source"] for s in service.get("secrets", []))}
    if wanted and set(doc.get("secrets") or {}) != wanted:
        raise OrchestratorError(f"{where} change or drop the top-level secrets")
    if list(doc["services"]) != names:
        raise OrchestratorError(f"{where} give the services {list(doc['services'])}, expected {names}")
    for name, expected in zip(names, services):
        found = _missing(_as_read(expected), doc["services"][name], f"services.{name}")
        if found:
            raise OrchestratorError(f"{where} change or drop {found}")
    return doc
