"""Specs for tests, built the way the commands build them: a TOML text is written to a file, read
by the loader and resolved. One place for that call, so a test says only what matters to it.

    spec = instance(config(docker='shm_size = "1g"'), tmp_path)       # one InstanceSpec
    resolved = resolve_toml(TEXT, tmp_path, env={"HF_TOKEN": "x"})     # the whole Resolved
    row = observed_for(spec, state="exited")                           # what `up` would observe
    c = container_of(spec)                                             # its Docker rendering

The host environment is empty unless a test passes one (`env`), so the machine running the
tests never leaks into a spec.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

from orchestrator.config.loader import load_config
from orchestrator.container import ContainerSpec
from orchestrator.plan import Observed
from orchestrator.labels import LABEL_HASH, LABEL_OWNER, LABEL_SPEC
from orchestrator.resolve import Resolved, resolve
from orchestrator.spec import InstanceSpec

DEFAULT_IMAGE = "img:1"
DEFAULT_IMAGE_ID = "sha256:aaa"
CONFIG_NAME = "fleet.toml"  # so the default project name is "fleet"


def config(*names: str, image: str = DEFAULT_IMAGE, docker: str = "", control: str = "", server: str = "",
           first_port: int = 8001) -> str:
    """A small fleet: `[docker] image` plus the `docker` lines, `[instance.control]` with the
    `control` lines, and for each name (default "a") an instance serving model "/m" on its own
    port (first_port, first_port + 1, ...) plus the `server` lines."""
    parts = [f'[docker]\nimage = "{image}"\n{textwrap.dedent(docker).strip()}\n']
    if control:
        parts.append(f"[instance.control]\n{textwrap.dedent(control).strip()}\n")
    for number, name in enumerate(names or ("a",)):
        parts.append(f'[instance.{name}.server]\nmodel = "/m"\nport = {first_port + number}\n'
                     f"{textwrap.dedent(server).strip()}\n")
    return "\n".join(parts)


def write_config(text: str, directory: Path, name: str = CONFIG_NAME) -> Path:
    """The text (dedented) as a config file in `directory`; returns its path."""
    path = Path(directory) / name
    path.write_text(textwrap.dedent(text))
    return path


def load_data(path: Path) -> dict[str, Any]:
    """The document of a config file as the loader reads it (no override layers)."""
    return load_config(Path(path), env={}).data


# The Docker rendering `resolve` made beside each spec resolved here (Resolved.containers), by
# the spec's identity (the spec is kept too, so its id is never reused): a test holding a spec
# asks for its container as the commands ask the Resolved (`Resolved.container_of`).
_RENDERED: dict[int, tuple[InstanceSpec, ContainerSpec]] = {}


def remember(resolved: Resolved) -> Resolved:
    """Note each spec's container, for `container_of` and `containers_of`."""
    for spec in resolved.instances:
        _RENDERED[id(spec)] = (spec, resolved.container_of(spec.name))
    return resolved


def container_of(spec: InstanceSpec) -> ContainerSpec:
    """The Docker rendering of a spec resolved here (or by a Resolved passed to `remember`)."""
    found = _RENDERED.get(id(spec))
    if found is None or found[0] is not spec:
        raise LookupError(f"instance {spec.name!r}: not resolved by tests/builders.py (no container noted)")
    return found[1]


def containers_of(specs: Sequence[InstanceSpec]) -> dict[str, ContainerSpec]:
    """The specs' containers by instance name, as Resolved.containers holds them (plan_up's `containers`)."""
    return {spec.name: container_of(spec) for spec in specs}


def resolve_data(data: Mapping[str, Any], config_path: Path, *, env: Mapping[str, str] | None = None,
                 project: str | None = None) -> Resolved:
    """A loaded (perhaps edited) document resolved as if read from `config_path`."""
    return remember(resolve(data, config_path=Path(config_path), project=project, host_env=dict(env or {})))


def resolve_file(path: Path, *, env: Mapping[str, str] | None = None, overrides: Sequence[str] = (),
                 project: str | None = None) -> Resolved:
    """A config file on disk, loaded with `overrides` (JSON texts, as `--override` takes them)
    and resolved against `env` as the host environment (secrets come from there)."""
    data = load_config(Path(path), env={}, overrides=tuple(overrides)).data
    return resolve_data(data, path, env=env, project=project)


def resolve_toml(text: str, tmp_path: Path, *, env: Mapping[str, str] | None = None, overrides: Sequence[str] = (),
                 project: str | None = None, name: str = CONFIG_NAME) -> Resolved:
    """The text written to tmp_path/fleet.toml (dedented), then `resolve_file`."""
    return resolve_file(write_config(text, tmp_path, name), env=env, overrides=overrides, project=project)


def instances(text: str, tmp_path: Path, **kwargs: Any) -> list[InstanceSpec]:
    """Every instance of the text, in file order (keywords as for `resolve_toml`)."""
    return resolve_toml(text, tmp_path, **kwargs).instances


def instance(text: str, tmp_path: Path, name: str | None = None, **kwargs: Any) -> InstanceSpec:
    """One instance of the text: the one called `name`, or the first."""
    resolved = resolve_toml(text, tmp_path, **kwargs)
    if name is None:
        return resolved.instances[0]
    found = resolved.instance(name)
    if found is None:
        raise LookupError(f"no instance {name!r} in the config (have {[i.name for i in resolved.instances]})")
    return found


def container_labels(spec: InstanceSpec) -> dict[str, str]:
    """The labels a container made from the spec carries, as engine_body.create_body writes
    them: ours and the user's, the config hash and the settings record."""
    rendering = container_of(spec)
    labels = dict(rendering.labels)
    labels[LABEL_HASH] = rendering.config_hash()
    labels[LABEL_SPEC] = json.dumps(rendering.to_json(), sort_keys=True, separators=(",", ":"))
    return labels


def observed_for(spec: InstanceSpec, state: str = "running", image_id: str = DEFAULT_IMAGE_ID, *,
                 status: str | None = None, container_id: str | None = None) -> Observed:
    """What `up` observes of a container made from the spec: its labels and hash as the create
    body wrote them, in `state`, from the image `image_id`."""
    rendering = container_of(spec)
    if status is None:
        status = "Up 1 minute" if state == "running" else "Exited (0) 1 minute ago"
    labels = container_labels(spec)
    return Observed(
        id=container_id or f"id-{spec.name}", name=rendering.name, instance=spec.name,
        owner=labels.get(LABEL_OWNER, ""), state=state, status=status, image_id=image_id,
        config_hash=labels[LABEL_HASH], labels=labels,
    )
