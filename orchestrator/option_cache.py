"""vLLM's option table from the image that will actually run it, cached per image id.

A short-lived container of the instance's image runs `vllm_options_dump.py` through the same
pixi/python launch path as the server, so the table describes the vLLM that will parse the
argv. The answer (or the reason there is none, e.g. an image without vLLM) is cached under the
image id: a rebuilt image gets a fresh table, an unchanged one costs a file read.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable

from orchestrator.argv import python_prefix
from orchestrator.value import Value
from orchestrator.vllm_options import OptionTable

CACHE_ENV = "VLLM_ORCH_CACHE_DIR"
TABLE_TIMEOUT_S = 600  # importing vLLM on a cold CPU-only host can take a while


def cache_dir() -> Path:
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit) / "option-tables"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vllm-orch" / "option-tables"


def cache_key(image_id: str, prefix: list[str]) -> str:
    """The image id is already a content digest; the launch prefix (pixi or plain python) only
    tells apart the few ways one image is started. A CRC of it does that without hashlib, whose
    OpenSSL import would cost `validate` ~5 ms."""
    digest = image_id.split(":")[-1][:32]
    return f"{digest}-{zlib.crc32(json.dumps(prefix).encode()):08x}"


def dump_source() -> str:
    with open(os.path.join(os.path.dirname(__file__), "vllm_options_dump.py"), encoding="utf-8") as handle:
        return handle.read()


class TableAnswer(Value):
    image: str
    table: OptionTable | None
    note: str  # where the table came from, or why there is none


def image_table(backend: Any, image: str, image_id: str, *, pixi_project_dir: str | None,
                pixi_environment: str, mounts: Iterable[Any] = (),
                progress: Callable[[str], None] = lambda message: None) -> TableAnswer:
    prefix = python_prefix(pixi_project_dir, pixi_environment)
    path = cache_dir() / f"{cache_key(image_id, prefix)}.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        progress(f"asking {image} for its vLLM option table (once per image build)")
        doc = _ask_image(backend, image, [*prefix, "-c", dump_source()], mounts)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        tmp.replace(path)
    if doc.get("error") or not doc.get("options"):
        return TableAnswer(image, None, f"image {image} could not describe its vLLM options ({doc.get('error', 'no options')})")
    table = OptionTable(doc, f"vLLM {doc.get('vllm_version', '?')} in image {image}")
    return TableAnswer(image, table, table.source)


def _ask_image(backend: Any, image: str, argv: list[str], mounts: Iterable[Any]) -> dict[str, Any]:
    code, out, err = backend.run_once(image, argv, mounts, timeout=TABLE_TIMEOUT_S)
    try:
        doc = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    except ValueError:
        doc = {}
    if not isinstance(doc, dict) or (not doc.get("options") and not doc.get("error")):
        last = (err.strip().splitlines() or [f"exit code {code}"])[-1]
        doc = {"format": 1, "error": last[:300]}
    return doc
