"""Log files opened as root without being turned against the host.

vllm-orch runs as root and its log directories are often shared (the contract's default
`log_dir` is the world-writable /tmp). A symlink or hard link planted where a log file will be,
or a FIFO or a directory, must not make it append to, chown, chmod or print someone else's file.
So: the last path component is opened with O_NOFOLLOW (and O_NONBLOCK, so a FIFO cannot hang
us), every decision is made on the opened descriptor (fstat, fchown, fchmod), never on the
path again, and a file that is not a plain, singly-linked file owned by us or by the user the
server runs as is refused. (A directory component swapped for a symlink is not defended: the
directories are the config's own.)
"""

from __future__ import annotations

import os
import stat

from orchestrator.errors import OrchestratorError

_WRITE = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class UnsafeLogFile(OrchestratorError):
    """The path where a log file belongs holds something that is not our log file."""


def open_for_append(path: str, *, owner: tuple[int, int] | None = None, shared: bool = False) -> int:
    """A descriptor appending to the log file at `path` (created 0644 with its directory).
    `owner` (uid, gid): hand the file to the user the server runs as; `shared`: make it 0666,
    for a named user whose uid only the image knows."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd = _open(path, _WRITE)
    try:
        _check(fd, path, allowed_owners={os.geteuid(), *([owner[0]] if owner else [])})
        if owner is not None:
            os.fchown(fd, owner[0], owner[1])
        if shared:
            os.fchmod(fd, 0o666)
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def prepare(path: str, *, owner: tuple[int, int] | None = None, shared: bool = False) -> None:
    """Make sure the log file exists as a safe plain file (before it is bind-mounted)."""
    os.close(open_for_append(path, owner=owner, shared=shared))


def prepare_directory(path: str, *, owner: tuple[int, int] | None = None, shared: bool = False) -> None:
    """A directory of ours at `path` (the per-instance caches), made with its parents, handed to
    the server's user through the opened descriptor: a symlink or someone else's directory in
    its place is refused, not chowned."""
    os.makedirs(path, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raise UnsafeLogFile(f"{path} is not a directory of ours (a symbolic link?); refusing to use it") from None
    try:
        info = os.fstat(fd)
        if info.st_uid not in {os.geteuid(), *([owner[0]] if owner else [])}:
            raise UnsafeLogFile(f"{path} belongs to uid {info.st_uid}, not to this run; refusing to take it over")
        if owner is not None:
            os.fchown(fd, owner[0], owner[1])
        if shared:
            os.fchmod(fd, 0o777)
    finally:
        os.close(fd)


def open_for_reading(path: str) -> int:
    """A descriptor reading the log file at `path`; FileNotFoundError when there is none yet."""
    fd = _open(path, _READ)
    try:
        _check(fd, path, allowed_owners=None)
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open(path: str, flags: int) -> int:
    try:
        return os.open(path, flags, 0o644)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafeLogFile(f"log file {path} is a symbolic link; refusing to follow it "
                                "(remove it; vllm-orch writes log files itself)") from None
        if os.path.isdir(path):
            raise UnsafeLogFile(f"log file {path} is a directory, not a file") from None
        raise UnsafeLogFile(f"cannot open log file {path}: {exc.strerror or exc}") from None


def _check(fd: int, path: str, allowed_owners: set[int] | None) -> None:
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise UnsafeLogFile(f"log file {path} is a directory, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise UnsafeLogFile(f"log file {path} is not a plain file; refusing to use it")
    if info.st_nlink > 1:
        raise UnsafeLogFile(f"log file {path} has {info.st_nlink} hard links; refusing to write "
                            "through it (remove it; vllm-orch writes log files itself)")
    if allowed_owners is not None and info.st_uid not in allowed_owners:
        raise UnsafeLogFile(f"log file {path} belongs to uid {info.st_uid}, not to this run; refusing "
                            "to take it over (remove it, or choose another log_host_dir)")
