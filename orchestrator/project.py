"""Config file + overrides -> validated, resolved project. The one entry point the commands use."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from orchestrator.config.loader import LoadedConfig, load_config
from orchestrator.config.on_demand_check import sleep_mode_problems
from orchestrator.config.validate import option_problems, schema_problems, semantic_problems
from orchestrator import secret_files
from orchestrator.errors import ConfigError, Problem
from orchestrator.resolve import Resolved, apply_tables, resolve
from orchestrator.targets import BACKENDS, DOCKER, KUBERNETES, LOCAL, Target, runs_containers
from orchestrator.value import Value, field
from orchestrator.vllm_options import OptionTable


_SAME = object()  # open_project's `backend` not given: `target` says it


class Project(Value, frozen=False):
    loaded: LoadedConfig
    resolved: Resolved
    problems: list[Problem] = field(factory=list)
    option_check: str = ""  # which option table the server keys were checked against
    gpu_check: str = ""  # what the GPUs were checked against (validate), or why they were not
    target: Target = DOCKER  # what it is checked and rendered for (targets.py): a backend or an export
    # This machine runs the instances (`up`, `validate`): facts about it are errors, not
    # warnings as in a review elsewhere (`plan`, `compose`, `k8s`, `validate --offline`).
    on_host: bool = True

    @property
    def name(self) -> str:
        return self.resolved.project

    @property
    def backend(self) -> str | None:
        """The backend that runs its instances (`plan --json`'s "backend"); None for an export."""
        return self.target if self.target in BACKENDS else None

    @property
    def runs_containers(self) -> bool:
        """Whether its instances run as containers (Docker, Compose, Kubernetes) rather than processes."""
        return runs_containers(self.target)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]

    def select(self, names: list[str] | tuple[str, ...]) -> set[str] | None:
        """Validate instance names given on the command line; None means all of them."""
        if not names:
            return None
        known = [i.name for i in self.resolved.instances]
        unknown = [n for n in names if n not in known]
        if unknown:
            import difflib

            hint = difflib.get_close_matches(unknown[0], known, n=1)
            raise ConfigError([Problem("error", f"instance.{unknown[0]}", "no such instance in the config",
                                       hint=f"did you mean {hint[0]}?" if hint else "instances: " + ", ".join(known),
                                       source=str(self.loaded.path))])
        return set(names)


def open_project(
    config_path: Path,
    *,
    env: Mapping[str, str] = os.environ,
    overrides: tuple[str, ...] | list[str] = (),
    sets: tuple[str, ...] | list[str] = (),
    project_name: str | None = None,
    target: Target | None = DOCKER,
    backend: object = _SAME,
    tables: Mapping[str, OptionTable] | None = None,
    strict: bool = True,
    checks: bool = True,
    text: str | None = None,
    on_host: bool = True,
) -> Project:
    """Load, check and resolve. With `strict`, any error raises ConfigError carrying all of them.
    With `checks=False`, a first look (which images?) that `check_project` completes once the
    images' option tables are known; the file is read and resolved once either way. `target`
    (targets.py) None: the config's own backend (guess_backend); `backend` is its older name,
    kept for callers written before targets had their own. `on_host` False: a review elsewhere,
    where facts about this machine are warnings (Project.on_host)."""
    if backend is not _SAME:
        target = backend  # type: ignore[assignment]  # the older keyword: same values
    loaded = load_config(config_path, env=env, overrides=overrides, sets=sets, text=text)
    problems = attributed(schema_problems(loaded.data, str(config_path)), loaded)
    if any(p.is_error for p in problems):
        # Resolving a document of the wrong shape would only add noise to a correct report.
        raise ConfigError(problems)
    if target is None:
        target = guess_backend(loaded.data)
    try:
        resolved = resolve(loaded.data, config_path=config_path, project=project_name, host_env=env,
                           kubernetes=target == KUBERNETES)
    except ConfigError as exc:
        raise ConfigError(attributed(exc.problems, loaded)) from None
    first = Project(loaded, resolved, problems, target=target, on_host=on_host)
    return check_project(first, tables=tables, strict=strict) if checks else first


def check_project(
    first: Project,
    *,
    tables: Mapping[str, OptionTable] | None = None,
    table_notes: list[str] | tuple[str, ...] = (),
    strict: bool = True,
    options_block: bool = True,
    extra: tuple[Problem, ...] | list[Problem] = (),
) -> Project:
    """The first look checked: semantics, and the server keys against the option tables.

    `tables` (image -> option table of its vLLM) make rendering follow vLLM's real options and
    turn unknown options into errors; instances without one are rendered by the contract's
    rules and compared with the recorded vLLM table, as warnings only. `extra`: problems found
    on the way (an image the engine lacks), reported with the rest."""
    tables = dict(tables or {}) if first.runs_containers else {}
    resolved = apply_tables(first.resolved, tables) if tables else first.resolved
    source = str(first.loaded.path)
    problems = list(first.problems)
    new = list(resolved.problems)
    new += semantic_problems(resolved, first.loaded.data, source, first.target, on_host=first.on_host)
    unchecked = []
    by_table: dict[int, tuple[OptionTable | None, set[str]]] = {}
    for spec in resolved.instances:
        container = resolved.containers.get(spec.name)
        exact = tables.get(container.image if container else "")
        if exact is None:
            unchecked.append(spec.name)
        by_table.setdefault(id(exact), (exact, set()))[1].add(spec.name)
    # One pass over the instances per option table (not one per instance: that was quadratic).
    # The recorded table is read only for instances no image answered for (~5 ms of JSON).
    for exact, names in by_table.values():
        new += option_problems(resolved, exact or OptionTable.bundled(), source,
                               exact=exact is not None and options_block, only=names)
    if first.runs_containers:  # the launcher's processes take their secrets in the environment
        new += secret_files.problems(resolved.instances, resolved.containers, tables, source)
        new += sleep_mode_problems(resolved, tables, source)
    problems += attributed(new, first.loaded)
    problems += extra
    notes = list(table_notes)
    if unchecked:
        who = ", ".join(unchecked) if len(unchecked) <= 4 else f"{len(unchecked)} instances"
        notes.append(f"{who}: not checked against the vLLM that will run; "
                     f"compared with the {OptionTable.bundled().source} (warnings only)")
    project = Project(first.loaded, resolved, problems, option_check="; ".join(notes), target=first.target,
                      on_host=first.on_host)
    if strict and project.errors:
        raise ConfigError(problems)
    return project


def attributed(problems: list[Problem], loaded: LoadedConfig) -> list[Problem]:
    """Each problem blamed on the layer that set its key: a --set, an --override or the
    overrides variable rather than the TOML file, when one of them did."""
    if not loaded.layer_paths:
        return problems
    file = str(loaded.path)
    return [p.replace(source=loaded.source_of(p.path), line=None, column=None)
            if p.source == file and p.path and loaded.source_of(p.path) != file else p
            for p in problems]


def guess_backend(data: Mapping) -> Target:
    """A file with container settings is meant for Docker; a contract-only file is the
    in-container launcher's (the contract's own examples have no [docker] table)."""
    instances = (data.get("instance") or {}).values()
    if "docker" in data or any(isinstance(t, dict) and "docker" in t for t in instances):
        return DOCKER
    return LOCAL
