"""The JSON Schema of the whole TOML file: the single source of truth for its keys and types.

`vllm-orch schema` prints it and `configs/vllm-orch.schema.json` is a copy for TOML editors
(Taplo / Even Better TOML read `#:schema ./vllm-orch.schema.json` at the top of a file).
`validate.py` walks this same document, so editor hints and `vllm-orch validate` agree.
"""

from __future__ import annotations

from typing import Any

SCHEMA_ID = "https://vllm-orch.dev/schema/vllm-orch.schema.json"

_GPU_IDS: dict[str, Any] = {
    "description": (
        'GPUs for this instance: "all" (or absent) = every GPU, "none" = no GPU, '
        '"0,1" / 0 / [0, 1] = those host GPU ids (renumbered from 0 inside a container).'
    ),
    "oneOf": [
        {"type": "string"},
        {"type": "integer", "minimum": 0},
        {"type": "array", "items": {"type": "integer", "minimum": 0}},
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
        "log_dir": {"type": "string", "default": "/tmp", "description": "Log directory inside the container."},
        "log_file": {
            "type": "string",
            "description": "Log file inside the container; default <log_dir>/vllm-server-<name>.log.",
        },
        "gpu_ids": _GPU_IDS,
    },
}

_SERVER_VALUE: dict[str, Any] = {
    "description": "A vLLM option: key -> --key; true -> bare flag; false -> omitted (or --no-key); list -> repeated.",
    "type": ["string", "integer", "number", "boolean", "array", "object"],
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
            "type": "string",
            "description": "Secret: passed as VLLM_API_KEY in the environment, never on argv or in output.",
        },
        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 8000},
        "host": {"type": "string"},
        "tensor_parallel_size": {"type": "integer", "minimum": 1},
        "pipeline_parallel_size": {"type": "integer", "minimum": 1},
        "gpu_memory_utilization": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    },
    "additionalProperties": _SERVER_VALUE,
}

_DOCKER_PROPERTIES: dict[str, Any] = {
    "image": {"type": "string", "description": "Image to run (the infer-dev image)."},
    "pixi_project_host_dir": {
        "type": "string",
        "description": "Host directory bind-mounted at master.pixi_project_dir (relative to this file).",
    },
    "log_host_dir": {
        "type": "string",
        "default": "logs",
        "description": "Host directory that holds the instances' log files (relative to this file).",
    },
    "cache_host_dir": {
        "type": ["string", "boolean"],
        "default": "cache",
        "description": "Host directory for each instance's vLLM and Hugging Face caches, in <dir>/<instance>/{vllm,huggingface} "
                       "(relative to this file), so a restart does not recompile; false: no caches on the host.",
    },
    "volumes": {
        "type": "array",
        "items": {"type": "string"},
        "description": 'Extra bind mounts "HOST:CONTAINER[:ro|rw]"; a relative HOST is relative to this file.',
    },
    "publish": {"type": "boolean", "default": True, "description": "Publish server.port on the host."},
    "publish_address": {
        "type": "string",
        "default": "127.0.0.1",
        "description": "Host address the port is published on; 0.0.0.0 exposes it to the network.",
    },
    "publish_port": {
        "type": "integer",
        "minimum": 1,
        "maximum": 65535,
        "description": "Host port (default: the instance's server.port).",
    },
    "env": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "Environment variables for the container.",
    },
    "secret_env": {
        "type": "array",
        "items": {"type": "string"},
        "description": "Secret variable names: value from [docker.env] or the host environment at up; never printed or exported.",
    },
    "shm_size": {
        "type": ["string", "integer"],
        "default": "8g",
        "description": "Size of /dev/shm (vLLM needs far more than Docker's 64 MB).",
    },
    "ipc": {"type": "string", "description": 'IPC mode, e.g. "host" (then shm_size is ignored).'},
    "user": {"type": "string", "description": 'User to run as, "uid[:gid]" or a name (default: the image\'s).'},
    "restart": {
        "type": "string",
        "enum": ["no", "always", "unless-stopped", "on-failure"],
        "default": "no",
        "description": "Docker restart policy.",
    },
    "stop_timeout": {
        "type": "integer",
        "minimum": 1,
        "default": 60,
        "description": "Seconds between SIGTERM and SIGKILL on stop.",
    },
    "health_start_period": {
        "type": "integer",
        "minimum": 0,
        "default": 900,
        "description": "Seconds of model loading during which failed health checks do not count.",
    },
    "health_interval": {"type": "integer", "minimum": 1, "default": 10},
    "health_cmd": {
        "type": "array",
        "items": {"type": "string"},
        "description": "Exec-form health check command; default: the image's python3 GETs /health.",
    },
    "network_mode": {"type": "string", "description": 'Docker network mode, e.g. "host" (then nothing is published).'},
    "gpu_driver": {"type": "string", "default": "nvidia", "description": "DeviceRequest driver."},
    "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Extra container labels."},
}

_DOCKER_GLOBAL: dict[str, Any] = {
    "type": "object",
    "description": "Container settings for every instance (ignored by the in-container launcher).",
    "additionalProperties": False,
    "properties": {
        "project": {
            "type": "string",
            "pattern": "^[a-z0-9][a-z0-9_-]*$",
            "description": "Project name: labels and container names (default: the TOML file's stem).",
        },
        **_DOCKER_PROPERTIES,
    },
}

_DOCKER_INSTANCE: dict[str, Any] = {
    "type": "object",
    "description": "Container settings of this instance; tables merge with [docker], other values replace.",
    "additionalProperties": False,
    "properties": dict(_DOCKER_PROPERTIES),
}

_INSTANCE: dict[str, Any] = {
    "type": "object",
    "description": "One vLLM server.",
    "additionalProperties": False,
    "properties": {"control": _CONTROL, "server": _SERVER, "docker": _DOCKER_INSTANCE},
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
            "propertyNames": {"pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]*$"},
            "additionalProperties": _INSTANCE,
        },
        "docker": _DOCKER_GLOBAL,
    },
}
