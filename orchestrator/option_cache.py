"""vLLM's option table from the image that will actually run it, cached per image id.

A short-lived container of the instance's image runs `vllm_options_dump.py` through the same
pixi/python launch path as the server, so the table describes the vLLM that will parse the
argv. The answer (or the reason there is none, e.g. an image without vLLM) is cached under the
image id: a rebuilt image gets a fresh table, an unchanged one costs a file read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import zlib
from pathlib import Path
from typing import Any, Callable, Iterable

from orchestrator.argv import python_prefix
from orchestrator.value import Value
from orchestrator.vllm_options import OptionTable

CACHE_ENV = "VLLM_ORCH_CACHE_DIR"
DUMP_REVISION = "platform"  # what the dump records beyond the options (its "platform": sleep mode)
TABLE_TIMEOUT_S = 600  # importing vLLM on a cold CPU-only host can take a while
_FLAG = re.compile(r"^--?[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
    # DUMP_REVISION: a table written before the dump recorded the platform is asked for again.
    return f"{digest}-{zlib.crc32(json.dumps([*prefix, DUMP_REVISION]).encode()):08x}"


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
    doc = read_cached(path)
    if doc is None:
        progress(f"asking {image} for its vLLM option table (once per image build)")
        doc, lasting = _ask_image(backend, image, [*prefix, "-c", dump_source()], mounts)
        if lasting:
            write_cached(path, doc)
    if doc.get("error") or not doc.get("options"):
        return TableAnswer(image, None, f"image {image} could not describe its vLLM options ({doc.get('error', 'no options')})")
    table = OptionTable(doc, f"vLLM {doc.get('vllm_version', '?')} in image {image}")
    return TableAnswer(image, table, table.source)


def read_cached(path: Path) -> dict[str, Any] | None:
    """The cached answer, or None (ask again) when there is none or it cannot be trusted: not
    a plain file of ours that only we can write (a table decides how every server's argv is
    spelled), or not the shape `vllm_options_dump.py` writes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
            return None
        try:
            doc = json.loads(handle.read())
        except (ValueError, RecursionError):
            return None
    return doc if well_formed(doc) else None


def well_formed(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return False
    if doc.get("error"):
        return isinstance(doc["error"], str)
    options = doc.get("options")
    if not isinstance(options, list) or not options:
        return False
    for option in options:
        if not isinstance(option, dict) or not isinstance(option.get("dest"), str):
            return False
        flags = option.get("flags")
        negative = option.get("negative_flag")
        if not isinstance(flags, list) or not all(isinstance(f, str) and _FLAG.match(f) for f in flags):
            return False
        if negative is not None and not (isinstance(negative, str) and _FLAG.match(negative)):
            return False
    return True


def write_cached(path: Path, doc: dict[str, Any]) -> None:
    """Atomically, through a temporary file of its own (two runs may write at once), 0600 in a
    0700 directory. A cache that cannot be written only costs asking the image again."""
    import tempfile  # only when a table was asked for

    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".table-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(doc))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError:
        pass


def _ask_image(backend: Any, image: str, argv: list[str], mounts: Iterable[Any]) -> tuple[dict[str, Any], bool]:
    """(the answer, whether it lasts as long as the image). Only what the dump itself printed
    lasts (its table, or its own "no vLLM here"); an engine error, a timeout or a crash is
    transient and asked again next time instead of leaving the preflight at warnings for good."""
    code, out, err = backend.run_once(image, argv, mounts, timeout=TABLE_TIMEOUT_S)
    try:
        doc = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
    except (ValueError, RecursionError):
        doc = {}
    if well_formed(doc):
        return doc, True
    last = (err.strip().splitlines() or [f"exit code {code}"])[-1]
    return {"format": 1, "error": last[:300]}, False
