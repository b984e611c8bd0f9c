"""The launcher's state: which process is ours (pid + start time + boot id, signalled through a
pidfd) and the records in the state directory that name them, one file per instance."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

from orchestrator.run_lock import ensure_dir, exclusive
from orchestrator.value import Value

RECORD_VERSION = 1

# ----------------------------------------------------------------------------- state directory
def _file_name(name: str) -> str:
    """Any project or instance name -> one safe path component (TOML keys may hold '/')."""
    quoted = urllib.parse.quote(name, safe="")
    return "%2E" + quoted[1:] if quoted.startswith(".") else quoted or "%00"


# ----------------------------------------------------------------------------- /proc
class ProcStat(Value):
    pid: int
    state: str  # R, S, D, Z, X, ...
    pgid: int
    session: int
    start_time: int  # clock ticks after boot

    @property
    def exited(self) -> bool:
        return self.state in ("Z", "X", "x")


def proc_stat(pid: int) -> ProcStat | None:
    """The fields of /proc/<pid>/stat we need; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, NotADirectoryError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(")") + 2:].split()
    return ProcStat(pid=pid, state=fields[0], pgid=int(fields[2]), session=int(fields[3]),
                    start_time=int(fields[19]))


_BOOT_ID: str | None = None


def boot_id() -> str:
    global _BOOT_ID
    if _BOOT_ID is None:
        try:
            _BOOT_ID = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        except OSError:
            _BOOT_ID = ""
    return _BOOT_ID


def session_members(session: int, not_before: int) -> list[ProcStat]:
    """Live processes in the session a launched instance leads. Only processes started no
    earlier than the leader can belong to it (a session id is the leader's pid)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = proc_stat(int(entry))
        if stat and stat.session == session and stat.start_time >= not_before and not stat.exited:
            members.append(stat)
    return members


class ProcessHandle:
    """A process verified to be the one a record names. Holds a pidfd where the kernel has
    them, so signals reach that process or nobody, never a successor with the same pid."""

    def __init__(self, pid: int, start_time: int, fd: int | None):
        self.pid = pid
        self.start_time = start_time
        self.fd = fd

    @classmethod
    def open(cls, pid: int, start_time: int, boot: str) -> "ProcessHandle | None":
        if pid <= 1 or (boot and boot != boot_id()):
            return None
        fd = None
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return None
        except (AttributeError, OSError):
            fd = None  # no pidfds (old kernel): fall back to kill() after the same check
        stat = proc_stat(pid)
        if stat is None or stat.start_time != start_time or stat.exited:
            if fd is not None:
                os.close(fd)
            return None
        return cls(pid, start_time, fd)

    @classmethod
    def for_child(cls, popen: subprocess.Popen) -> "ProcessHandle":
        """Our own child: not yet waited for, so its pid cannot have been reused."""
        stat = proc_stat(popen.pid)
        try:
            fd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):
            fd = None
        return cls(popen.pid, stat.start_time if stat else 0, fd)

    def alive(self) -> bool:
        if self.fd is not None:
            poller = select.poll()
            poller.register(self.fd, select.POLLIN)
            return not poller.poll(0)  # a pidfd turns readable when its process exits
        stat = proc_stat(self.pid)
        return stat is not None and stat.start_time == self.start_time and not stat.exited

    def send(self, signum: int) -> bool:
        """Signal the process; False when it has already gone."""
        try:
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, signum)
            else:
                if not self.alive():
                    return False
                os.kill(self.pid, signum)
            return True
        except ProcessLookupError:
            return False

    def reap(self) -> int | None:
        """Exit code when the process is our own child (a launcher in this same process), else None."""
        try:
            if self.fd is not None and hasattr(os, "P_PIDFD"):
                result = os.waitid(os.P_PIDFD, self.fd, os.WEXITED | os.WNOHANG)
                if result is None:
                    return None
                return result.si_status if result.si_code == os.CLD_EXITED else 128 + result.si_status
        except (ChildProcessError, OSError):
            return None
        return None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# ----------------------------------------------------------------------------- records
class Record(Value, frozen=False):
    """What the state directory holds for one launched instance."""

    project: str
    instance: str
    pid: int
    start_time: int
    boot_id: str
    argv: list[str]
    started_at: float  # epoch seconds
    background: bool
    log_file: str
    port: int
    url: str
    gpus: str
    model: str
    user: str
    config_file: str
    launcher_pid: int
    version: int = RECORD_VERSION

    def handle(self) -> ProcessHandle | None:
        return ProcessHandle.open(self.pid, self.start_time, self.boot_id)

    def is_alive(self) -> bool:
        handle = self.handle()
        if handle is None:
            return False
        handle.close()
        return True

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Record":
        known = cls._field_names
        return cls(**{k: v for k, v in doc.items() if k in known})


class StateStore:
    """<root>/<project>/<instance>.json, written atomically, plus a lock file per project."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def project_dir(self, project: str) -> Path:
        return self.root / _file_name(project)

    def path(self, project: str, instance: str) -> Path:
        return self.project_dir(project) / f"{_file_name(instance)}.json"

    @contextlib.contextmanager
    def lock(self, project: str) -> Iterator[None]:
        with exclusive(ensure_dir(self.project_dir(project)) / ".lock"):
            yield

    def read(self, project: str, instance: str) -> Record | None:
        return self._load(self.path(project, instance))

    def _load(self, path: Path) -> Record | None:
        try:
            return Record.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError):
            return None  # unreadable or from another version: treated as no record

    def records(self, project: str) -> list[Record]:
        directory = self.project_dir(project)
        if not directory.is_dir():
            return []
        # Dot files are the lock and half-written temporaries, never records.
        found = (self._load(p) for p in sorted(directory.glob("*.json")) if not p.name.startswith("."))
        return [r for r in found if r is not None]

    def write(self, record: Record) -> None:
        path = self.path(record.project, record.instance)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(record.as_dict(), handle, indent=1)
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def discard(self, record: Record) -> None:
        """Remove the record only if it still names that same process (a newer launch may have
        replaced it meanwhile)."""
        with self.lock(record.project):
            current = self.read(record.project, record.instance)
            if current and (current.pid, current.start_time) == (record.pid, record.start_time):
                with contextlib.suppress(FileNotFoundError):
                    self.path(record.project, record.instance).unlink()
