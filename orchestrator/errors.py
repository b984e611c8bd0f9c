"""One error root for everything a user can meet; the CLI prints it on one line and exits.

Engine, file-system and parse errors are translated into these at the module that meets
them, so no other module needs to know docker-py's or tomllib's exception types.
"""

from __future__ import annotations

import re
from typing import Any

from orchestrator.value import Value

# What must never reach a terminal raw from a config, a path or an engine's answer: C0 and C1
# controls and DEL (ESC sequences retitle or clear the terminal, BEL rings, NUL and line breaks
# split one message into several), the line/paragraph separators, and the bidirectional controls
# (U+202E shows a name backwards). Every other character, accented names included, is kept.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]")


def printable(text: str) -> str:
    """`text` with each control character written as its escape (\\x1b, \\u202e): safe on a terminal
    and still one line. `--json` output needs none of this (json escapes them itself)."""
    if not _UNPRINTABLE.search(text):
        return text
    return _UNPRINTABLE.sub(_escape, text)


def _escape(match: "re.Match[str]") -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def show_value(value: Any) -> str:
    """A config value as a message shows it, in TOML's spelling rather than Python's
    (true, null, 1979-05-27; strings quoted as before), escaped and cut to one short line."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, str):
        text = repr(value)  # quoted, with its control characters escaped
    elif isinstance(value, (int, float)):
        text = repr(value)
    elif isinstance(value, list):
        text = "[" + ", ".join(show_value(v) for v in value[:20]) + (", ..." if len(value) > 20 else "") + "]"
    elif isinstance(value, dict):
        items = list(value.items())
        text = "{" + ", ".join(f"{show_value(str(k))} = {show_value(v)}" for k, v in items[:20]) + \
            (", ..." if len(items) > 20 else "") + "}"
    elif hasattr(value, "isoformat"):  # TOML's dates and times
        text = value.isoformat()
    else:
        text = str(value)
    text = printable(text)
    return text if len(text) <= 80 else text[:60] + f"... ({len(text)} characters)"


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
        return printable(text)

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
