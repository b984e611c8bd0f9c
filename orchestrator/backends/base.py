"""The one interface the workflows (`app.py`) drive: what runs now, what to change, change it.

Two backends implement it: `docker` (one container per instance, `backends/docker.py`) and
`local` (one process per instance, the in-container launcher, `backends/local.py`). `backend_for`
is the only place that turns a backend's name into its class; it imports the class on demand, so
`--help` and `validate` never load either module.

Each verb works on what both backends share: the project's name, its instance specs, the
instances named on the command line (`selected`, None for all of them). Options that only one
backend has a use for are keyword arguments of that backend's method, named in its docstring
(Docker's `image_ids`, `on_done`, `start_after`; the launcher's `health_timeout`); the workflow
that passes them (`up` is Docker's, `launch` the launcher's) knows which backend it drives.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol, runtime_checkable

from orchestrator.errors import OrchestratorError
from orchestrator.value import Value, field

if TYPE_CHECKING:  # annotations only: importing them here would load the config layer at start-up
    from orchestrator.project import Project
    from orchestrator.spec import InstanceSpec

DOCKER, LOCAL = "docker", "local"
BACKENDS = (DOCKER, LOCAL)  # the names `--backend` accepts, in the order its help lists them

# name -> (module, class); imported by backend_for only.
_CLASSES = {DOCKER: ("orchestrator.backends.docker", "DockerBackend"),
            LOCAL: ("orchestrator.backends.local", "LocalBackend")}

Say = Callable[[str], None]


def quiet(message: str) -> None:
    pass


class Removal(Value):
    """What `remove` did, as `down` reports it."""

    results: list  # one per instance, each with .ok, .to_json(), .engine_lost and .error_exit_code
    json_key: str  # `down --json`'s key for the results: "removed" (containers) or "stopped" (processes)
    failure: str = ""  # the error's text when some failed, as the backend words it; "" when none did
    left: dict = field(factory=dict)  # config file -> names another config made (left alone; Docker only)


@runtime_checkable
class Backend(Protocol):
    """Where the instances of a project run, and how they are changed."""

    name: ClassVar[str]  # "docker" or "local": what `--backend` and the record of a project call it
    status_columns: ClassVar[tuple[str, ...]]  # the columns of `ps`'s table, in order

    def observe(self, project: str) -> list:
        """What runs now for the project named `project`, and nothing of any other project:
        Docker's containers made by `up` (plan.Observed), the launcher's live processes
        (local.Record). One engine list call, or one read of the state directory."""
        ...

    def plan(self, project: Project, selected: set[str] | None, observed: list, **options: Any) -> list:
        """Decide, don't act: the steps that bring `observed` (from `observe`) to the config,
        each printable (`describe()`) and serialisable (`to_json()`). Pure. Docker: plan.Action
        via plan.plan_up (options `image_ids`, required, and `remove_orphans`); local:
        local.LaunchStep via local.plan_launch, in the order the launcher starts them."""
        ...

    def apply(self, project: Project, plan: list, **options: Any) -> Any:
        """Carry out `plan` (from `plan`). Docker: the list of ActionResult (options `on_done`,
        `start_after`, `await_healthy`, `progress`: see DockerBackend.run_actions); local: the
        launcher's exit code (options `out`, `health_timeout`, `named`)."""
        ...

    def remove(self, project: str, selected: set[str] | None, *, config_file: str | None = None,
               timeout: float | None = None, report: Say = quiet, say: Say = quiet) -> Removal:
        """Stop the project's instances (the `selected` ones), keeping their logs. `report` gets
        one line per instance, `say` the notes (waiting for another run's lock). Docker removes
        only the containers `config_file` made (None: any) and stops each with its own stop
        timeout (`timeout` is not used); local stops every process of the project, SIGKILL
        after `timeout` seconds (None: 60), whatever config launched it."""
        ...

    def status(self, project: str, instances: list[InstanceSpec]) -> list[dict[str, Any]]:
        """`ps`'s rows: one per configured instance (`instances`, may be empty when no config is
        at hand), then one per instance that runs but is no longer configured."""
        ...

    def log_file(self, spec: InstanceSpec) -> Path:
        """Where the instance's log file is on this machine (it may not exist yet)."""
        ...

    def missing_log(self, spec: InstanceSpec, path: Path) -> str:
        """Why there is no log file at `path` (from `log_file`), as one line for the user."""
        ...


def backend_for(name: str, **options: Any) -> Backend:
    """The backend called `name`, made with `options` (Docker: `engine`; local: `state_dir`).
    The only place that maps a name to a class."""
    try:
        module_name, class_name = _CLASSES[name]
    except (KeyError, TypeError):
        raise OrchestratorError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}") from None
    import importlib

    return getattr(importlib.import_module(module_name), class_name)(**options)
