"""The one interface the workflows (`app.py`) drive: what runs now, what to change, check, change it.

Two backends implement it: `docker` (one container per instance, `backends/docker.py`) and
`local` (one process per instance, the in-container launcher, `backends/local.py`). `backend_for`
is the only place that makes one (the only constructor the rest of the package calls); it imports
the class on demand, so `--help` and `validate` never load either module.

The verbs are typed per backend: `Backend[Observed, Step, Request, Result]`. Each backend names
what it observes, the steps of its plan (each printable and serialisable: `Step`), the request
that carries the options of one run, and what `apply` returns:

  docker: Backend[plan.Observed, plan.Action, docker.ContainerRun, list[ActionResult]]
  local:  Backend[local_state.Record, local_plan.LaunchStep, local.LaunchRun, int (the exit code)]

Options that only one backend has are fields of its request type (Docker's image ids, orphan
removal and progress callbacks; the launcher's health timeout), not keyword arguments: the
workflow that builds the request (`up` builds a ContainerRun, `launch` a LaunchRun) is checked by
the type checker against the backend it drives, and a request is one value to log or test. What
only Docker has beyond the verbs (its images, one-off containers, the engine's address for the
run lock) is reached through the DockerBackend type that `backend_for(DOCKER)` returns.

Export targets (Compose, Kubernetes) are not backends: nothing runs through them; `targets.py`
names them apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import (TYPE_CHECKING, Any, Callable, ClassVar, Final, Literal, Protocol, Sequence, TypeVar, overload,
                    runtime_checkable)

from orchestrator.errors import OrchestratorError
from orchestrator.targets import BACKENDS, DOCKER, LOCAL
from orchestrator.value import Value, field

if TYPE_CHECKING:  # annotations only: importing them here would load the config layer at start-up
    from orchestrator.backends.docker import DockerBackend
    from orchestrator.backends.local import LocalBackend
    from orchestrator.project import Project
    from orchestrator.resolve import Resolved
    from orchestrator.spec import InstanceSpec

__all__ = ["BACKENDS", "DOCKER", "LOCAL", "Backend", "Removal", "Removed", "Say", "Step", "backend_for", "quiet"]

# name -> (module, class); imported by backend_for only.
_CLASSES: Final = {DOCKER: ("orchestrator.backends.docker", "DockerBackend"),
                   LOCAL: ("orchestrator.backends.local", "LocalBackend")}

Say = Callable[[str], None]


def quiet(message: str) -> None:
    pass


class Removed(Protocol):
    """One instance's result in a Removal: Docker's ActionResult, the launcher's StopResult."""

    @property
    def instance(self) -> str: ...

    @property
    def ok(self) -> bool: ...

    @property
    def engine_lost(self) -> bool: ...

    @property
    def error_exit_code(self) -> int: ...

    def to_json(self) -> dict[str, Any]: ...


class Removal(Value):
    """What `remove` did, as `down` reports it."""

    results: Sequence[Removed]  # one per instance
    json_key: str  # `down --json`'s key for the results: "removed" (containers) or "stopped" (processes)
    failure: str = ""  # the error's text when some failed, as the backend words it; "" when none did
    left: dict = field(factory=dict)  # config file -> names another config made (left alone; Docker only)


class Step(Protocol):
    """One step of a plan, whatever the backend: whom it concerns, a line for the user (`up
    --dry-run`, `launch --dry-run`) and its JSON."""

    @property
    def instance(self) -> str: ...

    def describe(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


ObservedT = TypeVar("ObservedT")
StepT = TypeVar("StepT", bound=Step)
RequestT = TypeVar("RequestT", contravariant=True)
ResultT = TypeVar("ResultT", covariant=True)


@runtime_checkable
class Backend(Protocol[ObservedT, StepT, RequestT, ResultT]):
    """Where the instances of a project run, and how they are changed."""

    name: ClassVar[str]  # "docker" or "local": what `--backend` and the record of a project call it
    status_columns: ClassVar[tuple[str, ...]]  # the columns of `ps`'s table, in order

    def observe(self, project: str) -> list[ObservedT]:
        """What runs now for the project named `project`, and nothing of any other project:
        Docker's containers made by `up` (plan.Observed), the launcher's live processes
        (local_state.Record). One engine list call, or one read of the state directory."""
        ...

    def plan(self, project: Project, selected: set[str] | None, observed: list[ObservedT],
             request: RequestT) -> list[StepT]:
        """Decide, don't act: the steps that bring `observed` (from `observe`) to the config, in
        the order they will be carried out. Pure."""
        ...

    def preflight(self, project: Project, plan: list[StepT], request: RequestT) -> list[str]:
        """Everything that can be known before `apply` changes anything. Every problem found is
        in one PreflightError (exit 4, one line each), so one run names them all; nothing has
        changed then. Returns the notes and warnings to show."""
        ...

    def apply(self, project: Project, plan: list[StepT], request: RequestT) -> ResultT:
        """Carry out `plan` (from `plan`, after `preflight`)."""
        ...

    def remove(self, project: str, selected: set[str] | None, *, config_file: str | None = None,
               timeout: float | None = None, report: Say = quiet, say: Say = quiet) -> Removal:
        """Stop the project's instances (the `selected` ones), keeping their logs. `report` gets
        one line per instance, `say` the notes (waiting for another run's lock). Docker removes
        only the containers `config_file` made (None: any) and stops each with its own stop
        timeout (`timeout` is not used); local stops every process of the project, SIGKILL
        after `timeout` seconds (None: 60), whatever config launched it."""
        ...

    def status(self, project: str, resolved: Resolved | None) -> list[dict[str, Any]]:
        """`ps`'s rows: one per configured instance (of `resolved`, None when no config is at
        hand), then one per instance that runs but is no longer configured."""
        ...

    def log_file(self, resolved: Resolved, spec: InstanceSpec) -> Path:
        """Where the instance's log file is on this machine (it may not exist yet)."""
        ...

    def missing_log(self, spec: InstanceSpec, path: Path) -> str:
        """Why there is no log file at `path` (from `log_file`), as one line for the user."""
        ...


AnyBackend = Backend[Any, Any, Any, Any]


@overload
def backend_for(name: Literal["docker"], **options: Any) -> DockerBackend: ...
@overload
def backend_for(name: Literal["local"], **options: Any) -> LocalBackend: ...
@overload
def backend_for(name: str | None, **options: Any) -> AnyBackend: ...


def backend_for(name: str | None, **options: Any) -> AnyBackend:
    """The backend called `name`, made with `options` (Docker: `engine`; local: `state_dir`).
    The only place that maps a name to a class, and the only constructor the package calls."""
    if name not in _CLASSES:
        raise OrchestratorError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")
    module_name, class_name = _CLASSES[name]
    import importlib

    return getattr(importlib.import_module(module_name), class_name)(**options)
