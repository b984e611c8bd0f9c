"""The record of `vllm-orch watch`'s restarts: one JSON line per restart, next to the log file.

Beside the instance's log file (`logs/vllm-server-chat.log` -> `logs/vllm-server-chat.restarts.jsonl`)
because that is what outlives the container (`down`, a recreate, a reboot) and is already the
instance's place on the host; a file of its own, not lines in the log, because the log file is
vLLM's output as vLLM wrote it (the in-container wrapper is its only writer) and the record is
read by `ps` as data. Files are opened the way log_files.py opens logs (no symlink or FIFO in the
place of one is followed).
"""

from __future__ import annotations

import json
import os
from typing import Any

from orchestrator.log_files import UnsafeLogFile, open_for_append, open_for_reading

SUFFIX = ".restarts.jsonl"
MAX_LOG_LINES = 50  # the log lines kept with each record


def path_for(log_file: str) -> str:
    """Where the record of the instance whose log file is `log_file` lives."""
    base = log_file[: -len(".log")] if log_file.endswith(".log") else log_file
    return base + SUFFIX


def append(log_file: str, record: dict[str, Any]) -> str:
    """Add one record (a single write of one line: two watchers cannot interleave it). Returns
    the record file's path."""
    path = path_for(log_file)
    fd = open_for_append(path)
    try:
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)
    return path


def read(log_file: str) -> list[dict[str, Any]]:
    """Every record, oldest first; [] where there is none (or no readable file); a damaged line
    is skipped, not fatal (`ps` must still print)."""
    if not log_file:
        return []
    try:
        fd = open_for_reading(path_for(log_file))
    except (OSError, UnsafeLogFile):  # none yet, or not a plain file of ours in its place
        return []
    records = []
    with os.fdopen(fd, "rb") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def summary(log_file: str) -> tuple[int, str | None]:
    """(restarts watch carried out, the last record's reason) for `ps`."""
    records = read(log_file)
    count = sum(1 for r in records if r.get("action", "restart") == "restart")
    return count, (str(records[-1].get("reason")) if records else None)
