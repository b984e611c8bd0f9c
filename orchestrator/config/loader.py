"""Read the TOML file and apply overrides, in the contract's order.

Order: the file, then `AUTO_INFER_VLLM_OVERRIDES` (JSON), then each `--override JSON`, then
each `--set dotted.key=value`. Tables merge recursively; every other value, lists included,
is replaced. Bad JSON is refused (the old shell runner silently ignored it).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Mapping

from orchestrator.errors import ConfigError, Problem
from orchestrator.value import Value, field

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

CONFIG_ENV = "AUTO_INFER_VLLM_CONFIG"
OVERRIDES_ENV = "AUTO_INFER_VLLM_OVERRIDES"

_LINE_COL = re.compile(r"\s*\(at line (\d+), column (\d+)\)\s*$")
# The deepest a real config goes is about 6 (instance.<name>.server.<key>.<table>.<key>); a
# document nested far deeper is refused before anything recursive (merge, checks) walks it.
MAX_DEPTH = 32


class LoadedConfig(Value, frozen=False):
    """The merged document plus where each layer came from (for messages and export headers)."""

    path: Path
    data: dict[str, Any] = field(repr=False)  # holds api_key / hf_token as written
    layers: list[str] = field(factory=list)

    @property
    def base_dir(self) -> Path:
        """Relative host paths in `[docker]` tables are relative to the TOML file, as in Compose."""
        return self.path.parent


def resolve_config_path(cli_path: str | None, env: Mapping[str, str] = os.environ) -> Path | None:
    if cli_path:
        return Path(cli_path)
    from_env = env.get(CONFIG_ENV)
    return Path(from_env) if from_env else None


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """Return a new dict: base updated by override (neither argument is modified).

    Tables merge recursively; every other type (lists included) is replaced, as the contract
    says. Key order is kept (existing keys stay in place, new keys are appended) because server
    keys become argv in merged key order.
    """
    import copy

    from deepmerge import Merger  # imported when there is something to merge

    merger = Merger([(dict, ["merge"])], ["override"], ["override"])
    return merger.merge(copy.deepcopy(dict(base)), copy.deepcopy(dict(override)))


def nesting_problem(doc: Any, source: str) -> Problem | None:
    """A Problem when `doc` is nested deeper than MAX_DEPTH (walked without recursion)."""
    stack = [(doc, 0, "")]
    while stack:
        value, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            return Problem("error", path[:80], f"nested more than {MAX_DEPTH} levels deep", source=source)
        if isinstance(value, dict):
            stack += [(v, depth + 1, f"{path}.{k}" if path else str(k)) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [(v, depth + 1, f"{path}[{i}]") for i, v in enumerate(value)]
    return None


def _checked(doc: Any, source: str) -> Any:
    problem = nesting_problem(doc, source)
    if problem:
        raise ConfigError([problem])
    return doc


def _unreadable(source: str, what: str, exc: BaseException) -> ConfigError:
    """Parsers' own limits (recursion, integers past Python's 4300 digits) as one problem."""
    if isinstance(exc, RecursionError):
        message = f"{what}: nested too deeply to read"
    else:
        message = f"{what}: {str(exc)[:200]}"
    return ConfigError([Problem("error", "", message, source=source)])


def parse_toml(text: str, source: str) -> dict[str, Any]:
    try:
        return _checked(tomllib.loads(text), source)
    except (RecursionError, ValueError) as exc:
        if not isinstance(exc, tomllib.TOMLDecodeError):
            raise _unreadable(source, "TOML", exc) from None
        message = str(exc)
        line = column = None
        match = _LINE_COL.search(message)
        if match:
            line, column = int(match.group(1)), int(match.group(2))
            message = message[: match.start()]
        raise ConfigError(
            [Problem("error", "", f"TOML syntax: {message}", source=source, line=line, column=column)]
        ) from None


def parse_json_override(text: str, source: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [Problem("error", "", f"invalid JSON: {exc.msg}", source=source, line=exc.lineno, column=exc.colno)]
        ) from None
    except (RecursionError, ValueError) as exc:
        raise _unreadable(source, "JSON", exc) from None
    _checked(value, source)
    if not isinstance(value, dict):
        raise ConfigError(
            [Problem("error", "", f"must be a JSON object, got {type(value).__name__}", source=source)]
        )
    return value


def parse_set(assignment: str) -> dict[str, Any]:
    """`instance.chat.server.max_model_len=8192` -> nested dict; the value is read as TOML.

    A value that is not valid TOML (a bare word such as a path) is taken as a string, so
    `--set instance.a.server.model=/models/x` works without quoting.
    """
    key, sep, raw = assignment.partition("=")
    source = f"--set {key[:60]}"
    parts = [p.strip() for p in key.split(".")]
    if not sep or not all(parts):
        raise ConfigError([Problem("error", "", "expected dotted.key=value", source=source)])
    if len(parts) > MAX_DEPTH:
        raise ConfigError([Problem("error", "", f"key nested more than {MAX_DEPTH} levels deep", source=source)])
    try:
        value = _checked(tomllib.loads(f"v = {raw}")["v"], source)
    except tomllib.TOMLDecodeError:
        value = raw
    except (RecursionError, ValueError) as exc:
        raise _unreadable(source, "value", exc) from None
    nested: dict[str, Any] = {parts[-1]: value}
    for part in reversed(parts[:-1]):
        nested = {part: nested}
    return nested


def load_config(
    path: Path,
    *,
    env: Mapping[str, str] = os.environ,
    overrides: list[str] | tuple[str, ...] = (),
    sets: list[str] | tuple[str, ...] = (),
    text: str | None = None,
) -> LoadedConfig:
    """Read `path` and apply the override layers. Raises ConfigError with line/column.
    `text`: the file's content as it will be (for a provisioning tool's check mode); `path`
    still names it, so relative paths, the default project name and labels are the file's."""
    try:
        if text is None:
            text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([Problem("error", "", "config file not found", source=str(path))]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem("error", "", f"cannot read config: {exc}", source=str(path))]) from None
    data = parse_toml(text, str(path))
    layers = [str(path)]

    env_overrides = env.get(OVERRIDES_ENV, "")
    if env_overrides.strip():
        data = deep_merge(data, parse_json_override(env_overrides, OVERRIDES_ENV))
        layers.append(OVERRIDES_ENV)
    for text in overrides:
        data = deep_merge(data, parse_json_override(text, "--override"))
        layers.append("--override")
    for assignment in sets:
        data = deep_merge(data, parse_set(assignment))
        layers.append(f"--set {assignment.partition('=')[0]}")
    return LoadedConfig(path=path, data=data, layers=layers)
