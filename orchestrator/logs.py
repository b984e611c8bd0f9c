"""Read an instance's log file on the host: the last lines, and follow it like `tail -F`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterator

from orchestrator.log_files import open_for_reading

_CHUNK = 64 * 1024


def tail_lines(path: Path | str, count: int) -> list[str]:
    """The last `count` lines, reading backwards so a multi-GB log costs what the tail costs.
    The file is opened as log_files.py opens it: a symlink or FIFO in its place is refused."""
    if count <= 0:
        return []
    try:
        fd = open_for_reading(str(path))
    except FileNotFoundError:
        return []
    with os.fdopen(fd, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        position = handle.tell()
        data = b""
        while position > 0 and data.count(b"\n") <= count:
            step = min(_CHUNK, position)
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    lines = data.decode(errors="replace").splitlines()
    return lines[-count:]


def all_lines(path: Path | str) -> list[str]:
    """Every line of the log (FileNotFoundError when there is none)."""
    with os.fdopen(open_for_reading(str(path)), "rb") as handle:
        return handle.read().decode(errors="replace").splitlines()


def follow(path: Path | str, *, start_at_end: bool = True, stop: Callable[[], bool] = lambda: False,
           poll_s: float = 0.25) -> Iterator[str]:
    """Yield new lines as they are appended; survives the file being truncated or replaced."""
    path = Path(path)
    handle = None
    inode = None
    pending = ""
    while not stop():
        if handle is None:
            try:
                handle = os.fdopen(open_for_reading(str(path)), "r", errors="replace")
            except FileNotFoundError:
                start_at_end = False  # a log that appears later is new: all of it is news (tail -F)
                time.sleep(poll_s)
                continue
            inode = os.fstat(handle.fileno()).st_ino
            if start_at_end:
                handle.seek(0, os.SEEK_END)
            start_at_end = False
        chunk = handle.read()
        if chunk:
            pending += chunk
            *complete, pending = pending.split("\n")
            yield from complete
            continue
        try:
            stat = os.stat(path)
            if stat.st_ino != inode or stat.st_size < handle.tell():
                handle.close()
                handle = None  # rotated or truncated: reopen from the start
                continue
        except FileNotFoundError:
            pass
        time.sleep(poll_s)
    if handle:
        handle.close()
