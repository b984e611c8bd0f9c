"""Prometheus' files on the host, each replaced atomically (written under a temporary name in
its own directory, then renamed over the old one): Prometheus and its file watcher never read half
a file, and an unchanged file is not written at all (so a second `up` changes nothing)."""

from __future__ import annotations

import os
import tempfile


def read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError:
        return None


def write_if_changed(path: str, data: bytes, mode: int = 0o644) -> bool:
    """Make `path` hold `data`; False when it already did."""
    if read(path) == data:
        return False
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=".staging-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(staging, mode)
        os.replace(staging, path)
    except BaseException:
        if os.path.lexists(staging):
            os.unlink(staging)
        raise
    return True


def remove(path: str) -> bool:
    if not os.path.lexists(path):
        return False
    os.unlink(path)
    return True


def private_dir(path: str) -> None:
    """A directory only the caller can read (the key's)."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
