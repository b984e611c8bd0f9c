"""Server table -> vLLM argv, by the contract's rules, refined by vLLM's real option table.

The contract's rules: `key` -> `--key` (underscores to hyphens); string/number -> `--key value`;
true -> bare `--key`; false -> omitted; list -> repeated `--key item`; `extra_args` appended
as-is, last. Where vLLM would read that argv differently from what the TOML says, vLLM's
parser wins (each case is listed in the README):

* a table (inline or not) -> one JSON argument, which is how vLLM reads its dict options;
* with an option table: `false` on an option that has a `--no-` form -> `--no-key` (omitting
  it would leave a default of true in force); a list on an option that takes several values
  after one flag (nargs '+'/'*') -> `--key a b` (repeating it keeps only the last); a list on
  a JSON-typed option -> one JSON string; a list on a comma-separated option -> `--key a,b`;
* a value starting with "-" -> `--key=value` (vLLM would read `-0.5` as a dotted option key);
* `null` (possible in JSON overrides) removes a key inherited from the defaults.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from orchestrator.vllm_options import OptionTable

DEFAULT_MODULE = "vllm.entrypoints.openai.api_server"

# Secret server keys: passed in the environment vLLM reads instead of argv (in a container through
# a file the log wrapper reads, container.SECRET_LOADER), so they never
# show up in `ps`, /proc/*/cmdline, `docker inspect`'s Cmd or our output.
SECRET_SERVER_KEYS = {"api_key": "VLLM_API_KEY", "hf_token": "HF_TOKEN"}


def split_secrets(server: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Take secret keys out of a server table: (table without them, {ENV_NAME: value})."""
    remaining: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    for key, value in server.items():
        env_name = SECRET_SERVER_KEYS.get(key)
        # `hf_token = true` means "use the stored token": a plain flag, nothing secret in it.
        if env_name and isinstance(value, str):
            secrets[env_name] = value
        else:
            remaining[key] = value
    return remaining, secrets


def flag_for(key: str) -> str:
    return "--" + key.replace("_", "-")


def _scalar(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_option(key: str, value: Any, table: OptionTable | None = None) -> list[str]:
    """argv tokens for one server key."""
    option = table.lookup(key) if table else None
    flag = option.flag if option and flag_for(key) in option.flags else flag_for(key)
    if value is None:
        return []
    if isinstance(value, bool):
        if value:
            return [flag]
        if option and option.negative_flag:
            return [option.negative_flag]
        return []
    if isinstance(value, dict):
        return [flag, _scalar(value)]
    if isinstance(value, list):
        if option and option.value_type == "json":
            return [flag, _scalar(value)]
        if option and option.comma_separated:
            return [flag, ",".join(_scalar(item) for item in value)] if value else []
        if option and option.takes_many:
            return [flag, *(_scalar(item) for item in value)] if value or option.nargs == "*" else []
        tokens: list[str] = []
        for item in value:
            tokens += [flag, _scalar(item)]
        return tokens
    text = _scalar(value)
    # vLLM reads a token that starts with "-" and holds a "." as a dotted option key, so
    # `--watermark -0.5` breaks its parser; `--watermark=-0.5` does not.
    return [f"{flag}={text}"] if text.startswith("-") else [flag, text]


def render_server_args(
    server: Mapping[str, Any], extra_args: Iterable[str] = (), table: OptionTable | None = None
) -> list[str]:
    """The vLLM part of the argv, in the server table's (merged) key order."""
    argv: list[str] = []
    for key, value in server.items():
        if key == "extra_args":
            continue
        argv += render_option(key, value, table)
    argv += [str(token) for token in extra_args]
    return argv


def python_prefix(pixi_project_dir: str | None = None, pixi_environment: str = "default") -> list[str]:
    """How the contract reaches vLLM's Python: through `pixi run` when a project dir is set."""
    if pixi_project_dir:
        return ["pixi", "run", "--manifest-path", pixi_project_dir, "--environment", pixi_environment, "--frozen", "python"]
    return ["python"]


def launch_command(
    server_args: Iterable[str],
    *,
    module: str = DEFAULT_MODULE,
    pixi_project_dir: str | None = None,
    pixi_environment: str = "default",
) -> list[str]:
    """The contract's launch command, through pixi when a project dir is configured."""
    return [*python_prefix(pixi_project_dir, pixi_environment), "-m", module, *server_args]
