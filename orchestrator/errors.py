"""One error root for everything a user can meet; the CLI prints it on one line and exits.

Engine, file-system and parse errors are translated into these at the module that meets
them, so no other module needs to know docker-py's or tomllib's exception types.
"""

from __future__ import annotations

from orchestrator.value import Value


class OrchestratorError(Exception):
    """An error the user can act on. `str()` is the one line the CLI prints; `details` (such as
    an instance's last log lines) are printed above it."""

    exit_code = 1

    def __init__(self, message: str = "", details: str = ""):
        super().__init__(message)
        self.details = details


class Problem(Value):
    """One finding of validation, with where it is and how to fix it."""

    severity: str  # "error" or "warning"
    path: str  # dotted key path in the merged config, "" for the whole file
    message: str
    hint: str = ""
    source: str = ""  # file name, or "AUTO_INFER_VLLM_OVERRIDES", ...
    line: int | None = None
    column: int | None = None
    # A fact about the machine that runs the instances (a volume's host path, a model directory),
    # not about the config: `up` leaves these to the Docker preflight, which checks them for the
    # instances it creates and reports them with the engine's problems (images, ports), all at once.
    host_fact: bool = False

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    def format(self) -> str:
        where = self.source or "config"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        parts = [where]
        if self.path:
            parts.append(self.path)
        text = ": ".join(parts) + f": {self.severity}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text

    def to_json(self) -> dict:
        return {
            "severity": self.severity,
            "path": self.path,
            "message": self.message,
            "hint": self.hint,
            "source": self.source,
            "line": self.line,
            "column": self.column,
        }


class ConfigError(OrchestratorError):
    """The config cannot be used. Carries every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.is_error]
        first = errors[0].format() if errors else "invalid configuration"
        more = f" (and {len(errors) - 1} more error(s))" if len(errors) > 1 else ""
        super().__init__(first + more)
        self.details = ""


class OwnedElsewhere(OrchestratorError):
    """The project's containers belong to another config file; nothing was changed."""

    exit_code = 2


class DockerUnavailable(OrchestratorError):
    exit_code = 3


class PreflightError(OrchestratorError):
    """The engine or host cannot run the plan; raised before anything is changed. Carries every
    problem the preflight found (`problems`, one line each), so one run names them all."""

    exit_code = 4

    def __init__(self, message: str = "", details: str = "", *, problems: list[str] | tuple[str, ...] = ()):
        self.problems = list(problems) or [message]
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__((message or self.problems[0]) + more, details)


class InstanceFailed(OrchestratorError):
    """An instance did not become healthy (`up --wait`)."""

    exit_code = 5
