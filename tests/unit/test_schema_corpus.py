"""The hand-written schema walker (config/validate.py's `schema_problems`) against the
`jsonschema` library, on every config the repository and its tests hold: both must give the
same verdict (valid / invalid) for each document. The walker exists for its messages (dotted
key paths, did-you-mean hints) and its start-up time; this keeps it an implementation of the
JSON Schema that editors read (`configs/vllm-orch.schema.json`), not a dialect of its own.

The corpus: every .toml file in the repository; every TOML text the tests write (string
constants of the test modules that parse as a config); each hostile-input case with its override
layers. One rule JSON Schema cannot state is applied to the library's side too: numbers must be
finite (TOML has inf and nan, JSON has neither, and no engine setting takes them)."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import pytest

from orchestrator.config.loader import load_config
from orchestrator.config.schema import SCHEMA
from orchestrator.config.validate import schema_problems
from orchestrator.errors import OrchestratorError

ROOT = Path(__file__).resolve().parents[2]
SKIPPED_DIRS = {".venv", ".git", "build", "dist", ".mypy_cache", ".pytest_cache", "node_modules"}
CONFIG_TABLES = {"instance", "docker", "master", "kubernetes"}

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def toml_files() -> Iterator[Path]:
    for path in sorted(ROOT.rglob("*.toml")):
        parts = set(path.relative_to(ROOT).parts)
        if parts & SKIPPED_DIRS or path.name in ("pyproject.toml", "pixi.toml"):
            continue
        yield path


def texts_in_tests() -> Iterator[tuple[str, str]]:
    """(where, text): the string constants of the test modules that parse as a config."""
    for module in sorted((ROOT / "tests").rglob("*.py")):
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "[" in node.value:
                try:
                    doc = tomllib.loads(node.value)
                except (tomllib.TOMLDecodeError, RecursionError, ValueError):
                    continue
                if CONFIG_TABLES & doc.keys():
                    yield f"{module.relative_to(ROOT)}:{node.lineno}", node.value


def hostile_cases() -> Iterator[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    """(name, text, overrides, sets) of tests/unit/test_hostile_input.py's cases."""
    from tests.unit import test_hostile_input as hostile

    for name, extra, args, *_ in hostile.CASES:
        overrides = tuple(args[i + 1] for i, a in enumerate(args[:-1]) if a == "--override")
        sets = tuple(args[i + 1] for i, a in enumerate(args[:-1]) if a == "--set")
        yield f"hostile: {name}", hostile.BASE + (extra or ""), overrides, sets


def corpus(tmp: Path) -> Iterator[tuple[str, Any]]:
    """(where, document) for every config of the corpus that loads (a TOML syntax error or an
    override nested too deeply never reaches the schema)."""
    def loaded(where: str, path: Path, overrides: tuple[str, ...] = (), sets: tuple[str, ...] = ()) -> Any:
        try:
            return load_config(path, env={}, overrides=overrides, sets=sets).data
        except (OrchestratorError, RecursionError, ValueError):
            return None

    for path in toml_files():
        yield str(path.relative_to(ROOT)), loaded("", path)
    for number, (where, text) in enumerate(texts_in_tests()):
        path = tmp / f"t{number}.toml"
        path.write_text(text)
        yield where, loaded(where, path)
    for number, (where, text, overrides, sets) in enumerate(hostile_cases()):
        path = tmp / f"h{number}.toml"
        path.write_text(text)
        yield where, loaded(where, path, overrides, sets)


def finite(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(finite(v) for v in value.values())
    if isinstance(value, list):
        return all(finite(v) for v in value)
    return True


def library_valid(validator: Any, document: Any) -> bool:
    return validator.is_valid(document) and finite(document)


@pytest.fixture(scope="module")
def validator() -> Any:
    cls = jsonschema.validators.validator_for(SCHEMA)
    cls.check_schema(SCHEMA)
    return cls(SCHEMA)


def test_the_walker_and_jsonschema_agree_on_every_config_of_the_corpus(tmp_path, validator):
    documents = [(where, doc) for where, doc in corpus(tmp_path) if doc is not None]
    verdicts = {where: (not any(p.is_error for p in schema_problems(doc, where)), library_valid(validator, doc))
                for where, doc in documents}
    disagree = {where: f"walker {'valid' if mine else 'invalid'}, jsonschema {'valid' if theirs else 'invalid'}"
                for where, (mine, theirs) in verdicts.items() if mine != theirs}
    assert disagree == {}
    # The corpus is what the tests say it is: both verdicts occur, in numbers worth checking.
    valid = sum(1 for mine, _ in verdicts.values() if mine)
    assert valid >= 20 and len(verdicts) - valid >= 20, (valid, len(verdicts))


def test_the_schema_file_is_the_schema_checked(validator):
    """configs/vllm-orch.schema.json (what editors read) is the document both sides check."""
    assert json.loads((ROOT / "configs" / "vllm-orch.schema.json").read_text()) == SCHEMA
