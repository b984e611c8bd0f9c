"""The rendered configuration on the host: versioned directories and one symlink, switched atomically.

    <host_dir>/v-<hash>/...      one complete configuration (haproxy.cfg, models.map, answers/)
    <host_dir>/current           -> v-<hash>: what the gateway serves; replaced by a rename
    <host_dir>/secret/keys       the API key (directory 0700, file 0400): mounted read-only

A version is written in full under a temporary name, then renamed, then `current` is switched
by renaming a new symlink over it: the gateway's watcher never sees half a configuration, and
a version's name is its content's hash, so an unchanged plan writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Any

KEEP_VERSIONS = 2  # the current one and the one before it (a reload may still be reading it)


def version_of(files: dict[str, bytes], key_digest: str) -> str:
    digest = hashlib.sha256(key_digest.encode())
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return "v-" + digest.hexdigest()[:12]


def current_version(host_dir: str) -> str | None:
    try:
        return os.readlink(os.path.join(host_dir, "current"))
    except OSError:
        return None


def read_current(host_dir: str, name: str) -> Any:
    """A JSON file of the version being served (None when there is none or it is unreadable)."""
    try:
        with open(os.path.join(host_dir, "current", name), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write_version(host_dir: str, version: str, files: dict[str, bytes], keys: bytes | None) -> bool:
    """Make `version` the served one; False when it already was. The key is written first, so
    the version that needs it never loads without it."""
    os.makedirs(host_dir, mode=0o755, exist_ok=True)
    _write_keys(os.path.join(host_dir, "secret"), keys)
    if current_version(host_dir) == version and os.path.isdir(os.path.join(host_dir, version)):
        return False
    target = os.path.join(host_dir, version)
    if not os.path.isdir(target):
        staging = tempfile.mkdtemp(prefix=".staging-", dir=host_dir)
        try:
            for name, data in files.items():
                path = os.path.join(staging, name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as handle:
                    handle.write(data)
            os.chmod(staging, 0o755)
            os.rename(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    link = os.path.join(host_dir, f".current-{os.getpid()}")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(version, link)  # relative: it resolves on the host and in the container alike
    os.replace(link, os.path.join(host_dir, "current"))
    _prune(host_dir, version)
    return True


def _write_keys(secret_dir: str, keys: bytes | None) -> None:
    os.makedirs(secret_dir, mode=0o700, exist_ok=True)
    os.chmod(secret_dir, 0o700)
    path = os.path.join(secret_dir, "keys")
    if keys is None:
        if os.path.lexists(path):
            os.unlink(path)
        return
    fd, staging = tempfile.mkstemp(prefix=".keys-", dir=secret_dir)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(keys)
        os.chmod(staging, 0o400)
        os.replace(staging, path)
    except BaseException:
        if os.path.lexists(staging):
            os.unlink(staging)
        raise


def _prune(host_dir: str, current: str) -> None:
    versions = [e for e in os.scandir(host_dir) if e.name.startswith("v-") and e.is_dir(follow_symlinks=False)]
    versions.sort(key=lambda e: e.stat().st_mtime, reverse=True)
    kept = {current}
    for entry in versions:
        if entry.name in kept:
            continue
        if len(kept) < KEEP_VERSIONS:
            kept.add(entry.name)
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
    for entry in os.scandir(host_dir):
        if entry.name.startswith(".staging-"):
            shutil.rmtree(entry.path, ignore_errors=True)
