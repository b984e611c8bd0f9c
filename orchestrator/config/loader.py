"""Read the TOML file and apply overrides, in the contract's order.

Order: the file, then `AUTO_INFER_VLLM_OVERRIDES` (JSON), then each `--override JSON`, then
each `--set dotted.key=value`. Tables merge recursively; every other value, lists included,
is replaced. Bad JSON is refused (the old shell runner silently ignored it).
"""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any, Mapping

from orchestrator.errors import ConfigError, Problem, show_value
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
# The largest config read (file or standard input): a fleet of thousands of instances is a few
# MiB; a device (/dev/zero) or a runaway generator would otherwise fill the memory.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
_JSON_TYPE_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number",
                    bool: "boolean", type(None): "null"}


class LoadedConfig(Value, frozen=False):
    """The merged document plus where each layer came from (for messages and export headers)."""

    path: Path
    data: dict[str, Any] = field(repr=False)  # holds api_key / hf_token as written
    layers: list[str] = field(factory=list)
    # Each override layer's name and the key paths it sets (its leaves), last layer last: a
    # problem at one of those paths is that layer's, not the file's (source_of).
    layer_paths: list[tuple[str, frozenset]] = field(factory=list, repr=False)
    file_paths: frozenset = field(default=frozenset(), repr=False)  # the file's own (kept when there are layers)

    def source_of(self, path: str) -> str:
        """The layer that last set the key at dotted `path` (or a table holding it, or a key
        inside it): an --override, a --set or the overrides variable; else the file. A key of
        one instance that neither the file nor a layer sets there comes from the defaults
        ([instance.server], [docker], ...): then the layer that set the default."""
        for name, paths in reversed(self.layer_paths):
            if _touches(paths, path):
                return name
        default = _default_path(path)
        if default and not _touches(self.file_paths, path):
            for name, paths in reversed(self.layer_paths):
                if _touches(paths, default):
                    return name
        return str(self.path)


def _touches(paths: frozenset, path: str) -> bool:
    """Whether a layer that set `paths` set `path`: itself, a table above it, or a key inside it."""
    if not path or not paths:
        return False
    return path in paths or any(path.startswith(p + ".") or path.startswith(p + "[") or p.startswith(path + ".")
                                for p in paths)


_INSTANCE_KEY = re.compile(r"^instance\.(.+?)\.(server|control|docker|kubernetes)(?=$|[.\[])(.*)$")


def _default_path(path: str) -> str | None:
    """Where the default of an instance's key lives: instance.a.server.port -> instance.server.port,
    instance.a.docker.image -> docker.image."""
    match = _INSTANCE_KEY.match(path)
    if not match or match.group(1) in ("server", "control"):
        return None
    section, rest = match.group(2), match.group(3)
    return (f"instance.{section}" if section in ("server", "control") else section) + rest


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
    problems = document_problems(doc, source)
    return problems[0] if problems else None


def document_problems(doc: Any, source: str) -> list[Problem]:
    """What no layer of a config may hold, found in one walk without recursion: nesting deeper
    than MAX_DEPTH (then only that), TOML dates and times (no vLLM option, argv token or
    variable takes one as such: Python would pass its repr), and NUL characters (no argument,
    environment variable, label or path can carry one), in keys and in values."""
    problems: list[Problem] = []
    stack = [(doc, 0, "")]
    while stack:
        value, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            return [Problem("error", path[:80], f"nested more than {MAX_DEPTH} levels deep", source=source)]
        if isinstance(value, dict):
            for k, v in value.items():
                key_path = f"{path}.{k}" if path else str(k)
                if "\0" in str(k):
                    problems.append(Problem("error", key_path[:80], "the key holds a NUL character", source=source))
                stack.append((v, depth + 1, key_path))
        elif isinstance(value, list):
            stack += [(v, depth + 1, f"{path}[{i}]") for i, v in enumerate(value)]
        elif isinstance(value, str):
            if "\0" in value:
                problems.append(Problem("error", path[:80], "holds a NUL character, which no argument, environment "
                                        "variable or path can carry", source=source))
        elif not isinstance(value, (int, float)) and value is not None:  # datetime, date, time
            problems.append(Problem("error", path[:80], f"{show_value(value)} is a TOML date or time: vLLM and "
                                    "Docker take strings", hint=f'quote it: "{show_value(value)}"', source=source))
    return sorted(problems, key=lambda p: p.path)


def _checked(doc: Any, source: str) -> Any:
    problems = document_problems(doc, source)
    if problems:
        raise ConfigError(problems)
    return doc


def _unreadable(source: str, what: str, exc: BaseException) -> ConfigError:
    """Parsers' own limits (recursion, integers past Python's 4300 digits) as one problem."""
    if isinstance(exc, RecursionError):
        message = f"{what}: nested too deeply to read"
    elif "digits" in str(exc):  # Python's int_max_str_digits limit, worded for a user
        message = f"{what}: an integer of more than 4300 digits (no setting takes one)"
    else:
        message = f"{what}: {str(exc)[:200]}"
    return ConfigError([Problem("error", "", message, source=source)])


def parse_toml(text: str, source: str) -> dict[str, Any]:
    if text.startswith("\ufeff"):  # TOML forbids it; tomllib's "Invalid statement" says nothing
        raise ConfigError([Problem("error", "", "the file starts with a UTF-8 byte order mark (BOM)",
                                   hint="save it as UTF-8 without a BOM", source=source, line=1, column=1)])
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
            [Problem("error", "", f"must be a JSON object, got {_JSON_TYPE_NAMES.get(type(value), 'another value')}",
                     source=source)]
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


def read_config_text(path: Path) -> str:
    """The file's text: a regular file (a FIFO would block forever, a device never end) of at
    most MAX_CONFIG_BYTES, in UTF-8. Opened without blocking, then checked, then read."""
    source = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ConfigError([Problem("error", "", "config file not found", source=source)]) from None
    except OSError as exc:
        raise ConfigError([Problem("error", "", f"cannot read config: {exc.strerror or exc}", source=source)]) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = ("a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO" if stat.S_ISFIFO(info.st_mode)
                    else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else "a socket")
            raise ConfigError([Problem("error", "", f"is {kind}, not a regular file",
                                       hint="pass the TOML file itself, or use --stdin-config to read standard input",
                                       source=source)])
        if info.st_size > MAX_CONFIG_BYTES:
            raise ConfigError([too_large(source)])
        with os.fdopen(fd, "rb", closefd=True) as handle:
            fd = -1
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([Problem("error", "", f"cannot read config: {exc.strerror or exc}", source=source)]) from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(data) > MAX_CONFIG_BYTES:  # grew while being read
        raise ConfigError([too_large(source)])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([Problem("error", "", f"not UTF-8 text (byte {exc.start + 1} is {data[exc.start]:#04x})",
                                   hint="TOML files are UTF-8", source=source)]) from None


def too_large(source: str) -> Problem:
    return Problem("error", "", f"larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB: not a config file",
                   source=source)


def _leaf_paths(doc: Any, prefix: str = "") -> frozenset:
    """The dotted paths an override layer sets (tables walked, every other value a leaf)."""
    paths: set[str] = set()
    stack = [(doc, prefix)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict) and value:
            stack += [(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()]
        else:
            paths.add(path)
    return frozenset(paths)


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
    source = "standard input" if text is not None else str(path)
    if text is None:
        text = read_config_text(path)
    elif len(text) > MAX_CONFIG_BYTES:
        raise ConfigError([too_large(source)])
    data = parse_toml(text, str(path))
    if not data:
        # An empty file (or /dev/null, or nothing on standard input) is not a fleet of none.
        raise ConfigError([Problem("error", "", "the config is empty: no [instance.<name>] table to run",
                                   hint='add e.g. [instance.chat.server] with model = "/models/chat"', source=source)])
    layers = [str(path)]
    layer_paths: list[tuple[str, frozenset]] = []
    env_overrides = env.get(OVERRIDES_ENV, "")
    # The file's own key paths only matter for blaming a layer; walked only when there is one.
    file_paths = _leaf_paths(data) if env_overrides.strip() or overrides or sets else frozenset()

    def add(layer: dict[str, Any], name: str) -> None:
        nonlocal data
        data = deep_merge(data, layer)
        layers.append(name)
        layer_paths.append((name, _leaf_paths(layer)))

    if env_overrides.strip():
        add(parse_json_override(env_overrides, OVERRIDES_ENV), OVERRIDES_ENV)
    for override in overrides:
        add(parse_json_override(override, "--override"), "--override")
    for assignment in sets:
        add(parse_set(assignment), f"--set {assignment.partition('=')[0]}")
    return LoadedConfig(path=path, data=data, layers=layers, layer_paths=layer_paths, file_paths=file_paths)
