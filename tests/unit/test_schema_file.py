"""configs/vllm-orch.schema.json is what editors read: it must be the schema `validate` uses."""

from __future__ import annotations

import json

from orchestrator.config.schema import SCHEMA

from .conftest import CONFIGS


def test_the_published_schema_file_is_the_one_validate_uses():
    published = json.loads((CONFIGS / "vllm-orch.schema.json").read_text())
    assert published == SCHEMA, "regenerate it: python -m orchestrator.generate"


def test_the_published_schema_declares_the_kubernetes_tables():
    published = json.loads((CONFIGS / "vllm-orch.schema.json").read_text())
    instance = published["properties"]["instance"]["additionalProperties"]
    for table in (published["properties"]["kubernetes"], instance["properties"]["kubernetes"]):
        assert table["additionalProperties"] is False
        assert {"namespace", "gpu_count", "secret_name", "volumes"} <= set(table["properties"])
