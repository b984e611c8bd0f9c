"""The JSON Schema of the whole TOML file: the single source of truth for its keys and types.

`vllm-orch schema` prints it and `configs/vllm-orch.schema.json` is a copy for TOML editors
(Taplo / Even Better TOML read `#:schema ./vllm-orch.schema.json` at the top of a file).
`validate.py` walks this same document, so editor hints and `vllm-orch validate` agree.
"""

from __future__ import annotations

from typing import Any

from orchestrator import options
from orchestrator.exporters.kubernetes_settings import schema_fragment
from orchestrator.gateway.settings import schema as gateway_schema
from orchestrator.monitoring.settings import schema as monitoring_schema
from orchestrator.options import MAX_NAME_LENGTH
from orchestrator.spec import MAX_GPU_INDEX

SCHEMA_ID = "https://vllm-orch.dev/schema/vllm-orch.schema.json"
# The [docker] keys come from the option table (options.py); limits there and here are ones the
# engine (or the kernel) would otherwise enforce only at create, start or stop, after other
# instances have already changed: checked by `validate` instead.

_GPU_IDS: dict[str, Any] = {
    "description": (
        'GPUs for this instance: "all" (or absent) = every GPU, "none" = no GPU, '
        '"0,1" / 0 / [0, 1] = those host GPU indexes, "GPU-<uuid>,MIG-<uuid>" / ["GPU-<uuid>"] = those '
        "GPU or MIG UUIDs as `nvidia-smi -L` prints them (not mixed with indexes; renumbered from 0 inside a container)."
    ),
    "oneOf": [
        {"type": "string"},
        {"type": "integer", "minimum": 0, "maximum": MAX_GPU_INDEX},
        {"type": "array", "items": {"type": ["integer", "string"], "minimum": 0, "maximum": MAX_GPU_INDEX}},
    ],
}

_CONTROL: dict[str, Any] = {
    "type": "object",
    "description": "Launcher settings ([instance.control] = defaults, merged key by key).",
    "additionalProperties": False,
    "properties": {
        "enabled": {"type": "boolean", "default": True, "description": "Launch this instance."},
        "background": {
            "type": "boolean",
            "default": True,
            "description": "In-container launcher: detach (true) or wait for the process (false).",
        },
        "log_dir": {"type": "string", "default": "/tmp", "description": "Log directory inside the container (absolute)."},
        "log_file": {
            "type": "string",
            "description": "Log file inside the container (absolute); default <log_dir>/vllm-server-<name>.log.",
        },
        "gpu_ids": _GPU_IDS,
    },
}

_SERVER_VALUE: dict[str, Any] = {
    "description": ("A vLLM option: key -> --key; true -> bare flag; false -> omitted (or --no-key); list -> repeated; "
                    "null (in a JSON override) removes an inherited key."),
    "type": ["string", "integer", "number", "boolean", "array", "object", "null"],
}

_SERVER: dict[str, Any] = {
    "type": "object",
    "description": "vLLM api_server options ([instance.server] = defaults; instance keys replace them).",
    "properties": {
        "extra_args": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Raw argv tokens appended last (global list first, then the instance's).",
        },
        "api_key": {
            "type": ["string", "null"],
            "writeOnly": True,
            "description": "Secret: passed as VLLM_API_KEY in the environment, never on argv or in output.",
        },
        "hf_token": {
            "type": ["string", "boolean", "null"],
            "writeOnly": True,
            "description": "Secret: a token is passed as HF_TOKEN in the environment; true = vLLM's --hf-token (the stored token).",
        },
        "port": {"type": ["integer", "null"], "minimum": 1, "maximum": 65535, "default": 8000},
        "host": {"type": ["string", "null"]},
        "tensor_parallel_size": {"type": ["integer", "null"], "minimum": 1},
        "pipeline_parallel_size": {"type": ["integer", "null"], "minimum": 1},
        "gpu_memory_utilization": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": 1},
    },
    "additionalProperties": _SERVER_VALUE,
    "propertyNames": {
        "pattern": "^[A-Za-z][A-Za-z0-9_.-]*$",
        "description": "a vLLM option's name (letters, digits, '_', '-', '.'): it becomes --name on the "
                       "command line, where '=', a space or a leading '-' would change what the argv means",
    },
}

_DOCKER_GLOBAL: dict[str, Any] = {
    "type": "object",
    "description": "Container settings for every instance (ignored by the in-container launcher).",
    "additionalProperties": False,
    "properties": options.schema_properties(global_table=True),
}

_DOCKER_INSTANCE: dict[str, Any] = {
    "type": "object",
    "description": "Container settings of this instance; tables merge with [docker], other values replace.",
    "additionalProperties": False,
    "properties": options.schema_properties(global_table=False),
}

_KUBERNETES_GLOBAL = schema_fragment("Kubernetes settings of every instance, read by `vllm-orch k8s` only.")
_KUBERNETES_INSTANCE = schema_fragment(
    "Kubernetes settings of this instance; tables merge with [kubernetes], other values replace."
)

_INSTANCE: dict[str, Any] = {
    "type": "object",
    "description": "One vLLM server.",
    "additionalProperties": False,
    "properties": {"control": _CONTROL, "server": _SERVER, "docker": _DOCKER_INSTANCE, "kubernetes": _KUBERNETES_INSTANCE},
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": SCHEMA_ID,
    "title": "vllm-orch / AUTO_INFER_VLLM_CONFIG",
    "description": "vLLM server instances for the in-container launcher and for vllm-orch's containers.",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "master": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "enable": {"type": "boolean", "default": True, "description": "Launch anything at all."},
                "pixi_project_dir": {
                    "type": "string",
                    "description": "Pixi project inside the container; launch through `pixi run`.",
                },
                "pixi_environment": {"type": "string", "default": "default"},
                "api_server_module": {"type": "string", "default": "vllm.entrypoints.openai.api_server"},
            },
        },
        "instance": {
            "type": "object",
            "description": "[instance.control] and [instance.server] are defaults; every other key is an instance.",
            "properties": {"control": _CONTROL, "server": _SERVER},
            "propertyNames": {"pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$", "maxLength": MAX_NAME_LENGTH},
            "additionalProperties": _INSTANCE,
        },
        "docker": _DOCKER_GLOBAL,
        "kubernetes": _KUBERNETES_GLOBAL,
        "gateway": gateway_schema(),
        "monitoring": monitoring_schema(),
    },
}
