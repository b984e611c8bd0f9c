"""What a server table may not hold although vLLM's parser might take it: values no process can
take, and `extra_args` flags that set what a server key sets.

vllm-orch reads some server keys for its own decisions: `port` is published and health-checked,
`host` decides whether the published port reaches vLLM, the parallel sizes count GPUs,
`gpu_memory_utilization` is summed per GPU, `model` / `served_model_name` name the instance,
`api_key` / `hf_token` are kept off argv. The same setting given in `extra_args` would be obeyed
by vLLM (its last flag wins) and never seen by vllm-orch, so it is refused, naming the key to use.
"""

from __future__ import annotations

from typing import Any

from orchestrator.errors import Problem, show_value
from orchestrator.vllm_options import OptionTable

# vLLM option (its dest) -> what vllm-orch does with the server key of that name.
READ_BY_VLLM_ORCH: dict[str, str] = {
    "model": "checks the model directory and names the served model with it",
    "served_model_name": "names the served model with it (exports, health)",
    "port": "publishes and health-checks that port",
    "host": "decides from it whether the published port and the health check reach vLLM",
    "tensor_parallel_size": "counts the GPUs the instance needs with it",
    "pipeline_parallel_size": "counts the GPUs the instance needs with it",
    "data_parallel_size": "counts the GPUs the instance uses with it",
    "gpu_memory_utilization": "checks that instances sharing a GPU fit with it",
    "api_key": "passes it as VLLM_API_KEY, never on the command line (ps, docker inspect, exports)",
    "hf_token": "passes it as HF_TOKEN, never on the command line (ps, docker inspect, exports)",
}
_NOT_EMPTY = ("model", "served_model_name")
_FLAGS: dict[str, str] = {}  # every spelling of those options' flags -> dest (filled once)
_ALL_LONG_FLAGS: list[str] = []


def _reserved_flags() -> dict[str, str]:
    """Flag -> dest for the options above, with every alias vLLM's recorded table gives them
    (`-tp`, `--device-memory-utilization`); vLLM reads `--a_b` as `--a-b`."""
    if not _FLAGS:
        table = OptionTable.bundled()
        for dest in READ_BY_VLLM_ORCH:
            _FLAGS["--" + dest.replace("_", "-")] = dest
            option = table.lookup(dest)
            for flag in option.flags if option else ():
                _FLAGS[flag] = dest
        _ALL_LONG_FLAGS.extend(f for o in table.options for f in o.flags if f.startswith("--"))
    return _FLAGS


def reserved_dest(token: str) -> str | None:
    """The option of READ_BY_VLLM_ORCH a token names, as vLLM's parser would read it: whole,
    with `=value`, with underscores, or as the one long flag it abbreviates."""
    flags = _reserved_flags()
    flag = token.split("=", 1)[0]
    if flag.startswith("--"):
        flag = "--" + flag[2:].replace("_", "-")
    if flag in flags:
        return flags[flag]
    if flag.startswith("--") and len(flag) > 3:
        completions = {f for f in _ALL_LONG_FLAGS if f.startswith(flag)}
        if len(completions) == 1:
            return flags.get(completions.pop())
    return None


def server_problems(spec: Any, source: str) -> list[Problem]:
    """Problems of one instance's server table and extra_args (errors: vLLM would not start, or
    vllm-orch would act on a setting vLLM does not use)."""
    out: list[Problem] = []
    where = f"instance.{spec.name}.server"
    for key in _NOT_EMPTY:
        value = spec.server.get(key)
        if value == "" or (isinstance(value, list) and "" in value):
            out.append(Problem("error", f"{where}.{key}", "is empty: vLLM cannot serve a model without a name",
                               hint="give the model directory inside the container" if key == "model"
                               else "remove the key (vLLM then uses model)", source=source))
    if dict(spec.secrets).get("VLLM_API_KEY") == "":
        out.append(Problem("warning", f"{where}.api_key", 'is "": vLLM treats an empty key as no key and '
                           "serves everyone", hint="set a key, or remove api_key", source=source))
    for index, token in enumerate(spec.extra_args):
        path = f"{where}.extra_args[{index}]"
        if token == "--":  # argparse: everything after it is positional
            break
        if token.strip() == "":
            out.append(Problem("error", path, f"is an empty argument {show_value(token)}: vLLM takes it for a stray "
                               "positional argument and does not start", hint="remove it", source=source))
            continue
        if not token.startswith("-"):
            continue
        dest = reserved_dest(token)
        if dest is not None:
            flag = token.split("=", 1)[0]
            out.append(Problem("error", path, f"{flag} sets what server.{dest} sets: vllm-orch "
                               f"{READ_BY_VLLM_ORCH[dest]}, and would not see it in extra_args",
                               hint=f"set {where}.{dest} instead, and remove it from extra_args", source=source))
    return out
