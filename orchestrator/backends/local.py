"""The local backend: each instance is a process on this machine (the in-container launcher).

This is the contract's shell runner done again: `vllm-orch launch` runs inside the infer-dev
container at boot and starts every enabled instance with the contract's command (pixi or plain
python), `CUDA_VISIBLE_DEVICES` from gpu_ids and its output appended to its log file.

* background = true: the process gets its own session (it outlives the launcher and the
  launcher's terminal); a record in the state directory names it for `ps`, `down` and the next
  `launch`.
* background = false: the launcher waits for it before it goes on to the next instance, as the
  shell runner did, and forwards SIGTERM/SIGINT (SIGHUP as SIGTERM) to it. The launcher's exit
  code is the first non-zero exit code of its foreground instances (a signal N counts as 128+N,
  as in a shell), 0 when all of them exited 0; a start failure (command not found: 127,
  not executable: 126) counts too. Later instances are still launched after a failure, so one
  broken instance does not keep the others of a booting container down; a signal to the
  launcher stops it from launching more.

Identity. A pid alone names whatever process has that number now. Each record holds the pid,
the process's start time (field 22 of /proc/<pid>/stat, clock ticks since boot) and the boot id;
a process is ours only when all three match. Signals go through a pidfd opened *before* that
check, so a process that exits and whose pid is reused between the check and the signal cannot
be hit either. The argv is recorded too, for `ps` and to say that the config changed; it is not
part of the identity (a process may rewrite its title).

Stopping: SIGTERM to the instance's process; once it is gone, SIGTERM to whatever it left in its
session (a wrapper such as pixi that does not forward signals leaves python there); after the
timeout, SIGKILL to all of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import select
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping

from orchestrator.backends.base import LOCAL, Removal, Say, quiet
from orchestrator.errors import OrchestratorError
from orchestrator.run_lock import default_state_dir, ensure_dir, exclusive
from orchestrator.spec import InstanceSpec
from orchestrator.value import Value, field
from orchestrator.waiter import probe_many

USER_ENV = "AUTO_INFER_VLLM_USER"
RECORD_VERSION = 1
KILL_GRACE_S = 5.0  # after SIGKILL, how long to wait for the kernel to reap before reporting
POLL_S = 0.05
_WILDCARD_HOSTS = {"", "0.0.0.0", "::"}

Out = Callable[[str], None]


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


# ----------------------------------------------------------------------------- environment and user
class RunAs(Value):
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def resolve_user(env: Mapping[str, str], out: Out) -> RunAs | None:
    """AUTO_INFER_VLLM_USER, as the old runner had it: when root and the user exists, instances
    run as that user; otherwise one notice and they run as the current user."""
    wanted = env.get(USER_ENV, "").strip()
    if not wanted:
        return None
    current = _current_user()
    try:
        entry = pwd.getpwuid(int(wanted)) if wanted.isdigit() else pwd.getpwnam(wanted)
    except (KeyError, ValueError):
        out(f"vllm-orch launch: {USER_ENV}={wanted}: no such user; instances run as {current}")
        return None
    if entry.pw_uid == os.geteuid():
        return None  # already that user
    if os.geteuid() != 0:
        out(f"vllm-orch launch: {USER_ENV}={wanted}: switching users needs root; instances run as {current}")
        return None
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def process_environment(spec: InstanceSpec, project: str, base: Mapping[str, str] = os.environ,
                        run_as: RunAs | None = None) -> dict[str, str]:
    """The launcher's environment + the instance's env (PYTHONUNBUFFERED=1) + CUDA_VISIBLE_DEVICES
    from gpu_ids ("all" leaves whatever is set alone) + the secrets, revealed. Never print it."""
    env = dict(base)
    env.update(dict(spec.env))
    env.update(spec.gpu.process_env())
    env.update(dict(spec.secrets))
    env["VLLM_ORCH_PROJECT"] = project
    env["VLLM_ORCH_INSTANCE"] = spec.name
    if run_as is not None:
        env.update(HOME=run_as.home, USER=run_as.name, LOGNAME=run_as.name)
    return env


def connect_url(spec: InstanceSpec) -> str:
    host = spec.host if spec.host and spec.host not in _WILDCARD_HOSTS else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{spec.port}"


def _port_in_use(spec: InstanceSpec) -> bool:
    host = spec.host if spec.host and spec.host not in _WILDCARD_HOSTS else "127.0.0.1"
    try:
        with socket.create_connection((host, spec.port), timeout=0.2):
            return True
    except OSError:
        return False


def _exit_cause(log_file: str) -> str | None:
    from orchestrator.status import failure_cause

    return failure_cause(log_file)


def exit_status(returncode: int) -> int:
    """Popen's returncode -> a shell's: killed by signal N -> 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def format_uptime(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


# ----------------------------------------------------------------------------- the backend
class _Stopping(Value, frozen=False):
    record: Record
    handle: ProcessHandle
    started: float
    result: str = "stopped"
    signal: str = "SIGTERM"
    members_termed: bool = False
    exit_code: int | None = None
    done_at: float | None = None
    extra: list[str] = field(factory=list)


START, RUNNING, DISABLED = "start", "running", "disabled"


class LaunchStep(Value):
    instance: str
    kind: str  # START | RUNNING (left as it is) | DISABLED
    detail: str  # "background" / "foreground", the running pid, or the setting that disables it
    waits: tuple = ()  # start_order.StartAfter: it starts once these answer /health

    def describe(self) -> str:
        text = {START: f"start {self.instance} ({self.detail})",
                RUNNING: f"leave {self.instance}: already running ({self.detail})",
                DISABLED: f"skip {self.instance}: disabled ({self.detail})"}[self.kind]
        return text + "".join(f"; {edge.describe()}" for edge in self.waits)

    def to_json(self) -> dict[str, Any]:
        return {"instance": self.instance, "action": self.kind, "detail": self.detail,
                "start_after": [edge.to_json() for edge in self.waits]}


def plan_launch(instances: list[InstanceSpec], selected: set[str] | None,
                running: Callable[[str], int | None]) -> list[LaunchStep]:
    """The launch, decided: config order, except that an instance which shares a GPU with an
    earlier background one (start_order.py) is held back while the instances after it that wait
    for nobody start; held-back ones start, in config order, before the next foreground instance
    (which the launcher then waits for) and at the end. Pure but for `running` (name -> pid)."""
    from orchestrator.start_order import start_order, waits_for

    specs = [s for s in instances if selected is None or s.name in selected]
    steps = [LaunchStep(s.name, DISABLED, s.disabled_by or "") for s in specs if not s.enabled]
    specs = [s for s in specs if s.enabled]
    waits = waits_for(start_order((s.name, s.gpu) for s in specs if s.background))
    queue, held, order = list(specs), [], []
    while queue or held:
        if queue and queue[0].name in waits:
            held.append(queue.pop(0))
        elif queue and queue[0].background:
            order.append(queue.pop(0))
        elif held:
            order.append(held.pop(0))
        else:
            order.append(queue.pop(0))
    for spec in order:
        pid = running(spec.name)
        if pid is not None:
            steps.append(LaunchStep(spec.name, RUNNING, f"pid {pid}"))
        else:
            steps.append(LaunchStep(spec.name, START, "background" if spec.background else "foreground",
                                    tuple(waits.get(spec.name, ()))))
    return steps


class StopResult(Value):
    """One instance's line of `down --backend local`, in the shape base.Removal's results share
    with Docker's ActionResult."""

    doc: dict  # name, pid, ok, result (stopped | killed | not running | failed), signal, seconds, exit_code

    @property
    def ok(self) -> bool:
        return self.doc.get("ok", True)

    engine_lost = False  # no engine to lose
    error_exit_code = 0  # a failure is the generic exit 1

    def to_json(self) -> dict[str, Any]:
        return self.doc


class LocalBackend:
    """One process per instance on this machine (base.Backend), recorded in the state directory."""

    name: ClassVar[str] = LOCAL
    status_columns: ClassVar[tuple[str, ...]] = ("name", "state", "pid", "health", "gpus", "url", "model", "uptime")

    def __init__(self, state_dir: Path | None = None):
        self.state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self.store = StateStore(self.state_dir)

    # ------------------------------------------------------------------ the Backend verbs
    def observe(self, project: str) -> list[Record]:
        """base.Backend.observe: the records of the project whose processes are still alive."""
        return [r for r in self.store.records(project) if r.is_alive()]

    def plan(self, project, selected: set[str] | None, observed: list[Record]) -> list[LaunchStep]:
        """base.Backend.plan: what `launch` will do, in the order it will do it (plan_launch);
        an instance with a live process in `observed` is left running."""
        pids = {r.instance: r.pid for r in observed}
        return plan_launch(project.resolved.instances, selected, pids.get)

    def apply(self, project, plan: list[LaunchStep], *, out: Out, health_timeout: float = 1800.0,
              named: bool = False) -> int:
        """base.Backend.apply: start the steps' instances in their order; each record is checked
        again under the lock, so one launched meanwhile is left running. `named`: the user named
        the instances, so a disabled one among them is reported (otherwise skipped quietly).
        Returns the launcher's exit code: the first non-zero exit code of a foreground instance
        or a failed start. An instance that shares a GPU with an earlier background one starts
        once that one answers /health (start_order.py); when it does not, it is not launched."""
        steps = plan
        for step in steps:
            if step.kind == DISABLED and named:
                out(f"{step.instance}: disabled in the config ({step.detail}); not launched")
        steps = [s for s in steps if s.kind != DISABLED]
        if not steps:
            out("vllm-orch launch: no enabled instance; nothing launched")
            return 0
        specs = {spec.name: spec for spec in project.resolved.instances}
        failed: dict[str, str] = {}  # instance -> why it is not serving
        deadline = time.monotonic() + health_timeout
        run_as = resolve_user(os.environ, out)
        code = 0
        for index, step in enumerate(steps):
            spec = specs[step.instance]
            if step.waits:
                blocked = self._await_chain(project, spec, list(step.waits), failed, deadline, out)
                if blocked:
                    failed[spec.name] = "it was not launched"
                    out(f"{spec.name}: not launched: {blocked}")
                    code = code or 1
                    continue
            result, interrupted = self._launch_one(project, spec, run_as, out)
            if result:
                failed[spec.name] = f"it exited with code {result}"
                code = code or result
            if interrupted:
                rest = [s.instance for s in steps[index + 1:]]
                if rest:
                    out(f"vllm-orch launch: interrupted; not launched: {', '.join(rest)}")
                break
        return code

    def remove(self, project: str, selected: set[str] | None, *, config_file: str | None = None,
               timeout: float | None = None, report: Say = quiet, say: Say = quiet) -> Removal:
        """base.Backend.remove: down() with SIGKILL after `timeout` seconds (None: 60). Every
        process of the project is stopped, whichever config launched it (`config_file` is
        Docker's); there is no run lock to wait for (each record has its own)."""
        results = [StopResult(r) for r in self.down(project, selected, timeout=60.0 if timeout is None else timeout,
                                                    out=report)]
        failed = [r for r in results if not r.ok]
        failure = (f"{len(failed)} instance(s) could not be stopped: "
                   + ", ".join(str(r.doc.get("name")) for r in failed)) if failed else ""
        return Removal(results, "stopped", failure)

    def status(self, project: str, instances: list[InstanceSpec]) -> list[dict[str, Any]]:
        """base.Backend.status: one row per configured instance (config order), then one per
        record whose instance is no longer in the config. state: running | exited (launched, now
        gone) | not started | disabled."""
        records = {r.instance: r for r in self.store.records(project)}
        rows: list[dict[str, Any]] = []
        alive: dict[str, bool] = {name: r.is_alive() for name, r in records.items()}
        for spec in instances:
            record = records.pop(spec.name, None)
            rows.append(self._row(spec.name, record, alive.get(spec.name, False), spec))
        for name, record in records.items():
            rows.append(self._row(name, record, alive[name], None))
        running = [row for row in rows if row["state"] == "running"]
        for row, healthy in zip(running, probe_many([row["url"] for row in running])):
            row["health"] = "healthy" if healthy else "starting"
        return rows

    def log_file(self, spec: InstanceSpec) -> Path:
        """base.Backend.log_file: the file the process's output is appended to."""
        return Path(spec.log_file)

    def missing_log(self, spec: InstanceSpec, path: Path) -> str:
        """base.Backend.missing_log."""
        return f"no log yet for {spec.name!r} ({path}): it has not been started"

    # ------------------------------------------------------------------ launch
    def plan_launch(self, project, selected: set[str] | None) -> list[LaunchStep]:
        """plan() on what runs now: what `launch --dry-run` prints."""
        return self.plan(project, selected, self.observe(project.name))

    def launch(self, project, selected: set[str] | None, *, out: Out, health_timeout: float = 1800.0) -> int:
        """Decide, then act: plan_launch(), then apply() (see there for the exit code)."""
        return self.apply(project, self.plan_launch(project, selected), out=out, health_timeout=health_timeout,
                          named=selected is not None)

    def _await_chain(self, project, spec: InstanceSpec, edges: list, failed: dict[str, str], deadline: float,
                     out: Out) -> str:
        """Wait until every instance `spec` waits for answers /health; "" when they all do, else
        why `spec` must not start."""
        from orchestrator.waiter import probe_health

        for edge in edges:
            why = f"it waits for {edge.after} (both on {edge.shared}), which"
            if edge.after in failed:
                return f"{why} did not start: {failed[edge.after]}"
            record = self.store.read(project.name, edge.after)
            if record is None:
                return f"{why} did not start"
            out(f"{edge.describe()} (waiting for {record.url}/health)")
            while not probe_health(record.url):
                if not record.is_alive():
                    cause = _exit_cause(record.log_file)
                    failed[edge.after] = "it exited" + (f": {cause}" if cause else f" (log {record.log_file})")
                    if cause:
                        out(f"{edge.after}: {cause}")
                    return f"{why} exited before it answered /health" + (f": {cause}" if cause else "")
                if time.monotonic() > deadline:
                    failed[edge.after] = "it did not answer /health in time"
                    return f"{why} did not answer /health within the timeout (launch --timeout)"
                time.sleep(0.5)
            out(f"{edge.after}: healthy; starting {spec.name}")
        return ""

    def _launch_one(self, project, spec: InstanceSpec, run_as: RunAs | None, out: Out) -> tuple[int, bool]:
        with self.store.lock(project.name):
            existing = self.store.read(project.name, spec.name)
            if existing is not None:
                if existing.is_alive():
                    note = ""
                    if list(existing.argv) != list(spec.command):
                        note = (" with another command than the config's now; "
                                f"`vllm-orch down --backend local {spec.name}` and launch again to apply it")
                    out(f"{spec.name}: already running (pid {existing.pid}){note}")
                    return 0, False
                # A record whose process is gone (or is another process now) is simply replaced.
            if _port_in_use(spec):
                out(f"{spec.name}: warning: something already answers on port {spec.port}; "
                    "the server will probably fail to bind it")
            try:
                log = self._open_log(spec, run_as)
            except OSError as exc:
                out(f"{spec.name}: cannot open its log file {spec.log_file}: {exc.strerror or exc}")
                return 1, False
            except OrchestratorError as exc:  # a symlink, FIFO or foreign file where the log goes
                out(f"{spec.name}: {exc}")
                return 1, False
            try:
                with log:
                    popen = self._spawn(project, spec, run_as, log)
            except OSError as exc:
                code = 127 if isinstance(exc, FileNotFoundError) else 126
                out(f"{spec.name}: cannot start {spec.command[0]!r}: {exc.strerror or exc} (exit {code})")
                return code, False
            handle = ProcessHandle.for_child(popen)
            record = Record(
                project=project.name, instance=spec.name, pid=popen.pid, start_time=handle.start_time,
                boot_id=boot_id(), argv=list(spec.command), started_at=time.time(), background=spec.background,
                log_file=spec.log_file, port=spec.port, url=connect_url(spec), gpus=spec.gpu.describe(),
                model=spec.served_model or "", user=run_as.name if run_as else _current_user(),
                config_file=str(getattr(project.resolved, "config_file", "")), launcher_pid=os.getpid(),
            )
            self.store.write(record)
        if spec.background:
            out(f"{spec.name}: started in the background (pid {popen.pid}, gpus {spec.gpu.describe()}, "
                f"log {spec.log_file})")
            handle.close()
            return 0, False
        out(f"{spec.name}: running in the foreground (pid {popen.pid}, gpus {spec.gpu.describe()}, "
            f"log {spec.log_file})")
        try:
            returncode, interrupted = self._wait_foreground(popen, handle)
        finally:
            handle.close()
            self.store.discard(record)
        code = exit_status(returncode)
        out(f"{spec.name}: exited with code {code}")
        cause = _exit_cause(spec.log_file) if code and not interrupted else None
        if cause:
            out(f"{spec.name}: {cause}")
        return code, interrupted

    @staticmethod
    def _open_log(spec: InstanceSpec, run_as: RunAs | None):
        """Open the log for appending (directories created) and stamp the start in it."""
        from orchestrator import log_files

        owner = (run_as.uid, run_as.gid) if run_as is not None else None
        handle = os.fdopen(log_files.open_for_append(spec.log_file, owner=owner), "ab", buffering=0)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        handle.write(f"{stamp} vllm-orch: starting instance {spec.name}: {shlex.join(spec.command)}\n".encode())
        return handle

    @staticmethod
    def _spawn(project, spec: InstanceSpec, run_as: RunAs | None, log) -> subprocess.Popen:
        """Exec form only (an argv list, no shell); own session; stdin from /dev/null; stdout
        and stderr appended to the log."""
        env = process_environment(spec, project.name, os.environ, run_as)
        kwargs: dict[str, Any] = {}
        if run_as is not None:
            kwargs.update(user=run_as.uid, group=run_as.gid, extra_groups=list(run_as.groups))
        return subprocess.Popen(
            list(spec.command), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=env, close_fds=True, start_new_session=True, **kwargs,
        )

    def _wait_foreground(self, popen: subprocess.Popen, handle: ProcessHandle) -> tuple[int, bool]:
        """Wait for a foreground instance, forwarding the launcher's SIGTERM/SIGINT (and SIGHUP,
        as SIGTERM) to it. Handlers can only be set in the main thread; elsewhere it just waits."""
        received: list[int] = []

        def forward(signum: int, _frame) -> None:
            received.append(signum)
            handle.send(signal.SIGTERM if signum == signal.SIGHUP else signum)

        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                previous[signum] = signal.signal(signum, forward)
        try:
            returncode = popen.wait()
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)
        return returncode, bool(received)

    # ------------------------------------------------------------------ ps
    def ps(self, project) -> list[dict[str, Any]]:
        """status() of a project object."""
        return self.status(project.name, project.resolved.instances)

    def _row(self, name: str, record: Record | None, alive: bool, spec: InstanceSpec | None) -> dict[str, Any]:
        if record is not None and alive:
            state = "running"
        elif record is not None:
            state = "exited"
        elif spec is not None and not spec.enabled:
            state = "disabled"
        else:
            state = "not started"
        use_record = record is not None and (alive or spec is None)
        return {
            "name": name,
            "state": state,
            "pid": record.pid if record is not None and alive else None,
            "health": "",
            "gpus": record.gpus if use_record else spec.gpu.describe(),
            "url": record.url if use_record else connect_url(spec),
            "model": (record.model if use_record else spec.served_model) or "",
            "uptime": format_uptime(time.time() - record.started_at) if record is not None and alive else "",
            "port": record.port if use_record else spec.port,
            "log_file": record.log_file if use_record else spec.log_file,
            "background": record.background if record is not None else (spec.background if spec else None),
            "user": record.user if record is not None else "",
            "configured": spec is not None,
            "cause": _exit_cause(record.log_file) if record is not None and not alive else None,
        }

    # ------------------------------------------------------------------ down
    def down(self, project: str, selected: set[str] | None, *, timeout: float, out: Out) -> list[dict[str, Any]]:
        """Stop the launched instances of the project named `project`: all of them, orphans
        included, when none are named. Each result: name, pid, ok, result (stopped
        | killed | not running | failed), signal, seconds, exit_code (known only when this
        process launched it). No result at all: nothing to stop (the caller says so)."""
        records = self.store.records(project)
        if selected is not None:
            records = [r for r in records if r.instance in selected]
        results: list[dict[str, Any]] = []
        for name in sorted((selected or set()) - {r.instance for r in records}):
            out(f"{name}: not running")
            results.append({"name": name, "pid": None, "ok": True, "result": "not running"})
        stopping: list[_Stopping] = []
        for record in records:
            handle = record.handle()
            if handle is None:
                self.store.discard(record)
                out(f"{record.instance}: not running (pid {record.pid} is gone or is another process now; "
                    "record removed, nothing signalled)")
                results.append({"name": record.instance, "pid": record.pid, "ok": True, "result": "not running"})
                continue
            try:
                handle.send(signal.SIGTERM)
            except PermissionError:
                handle.close()
                out(f"{record.instance}: FAILED: not allowed to signal pid {record.pid} (started by {record.user})")
                results.append({"name": record.instance, "pid": record.pid, "ok": False, "result": "failed",
                                "detail": "permission denied"})
                continue
            stopping.append(_Stopping(record, handle, time.monotonic()))
        results += [self._result(s, out) for s in self._await_stopped(stopping, timeout)]
        return results

    def _await_stopped(self, stopping: list[_Stopping], timeout: float) -> list[_Stopping]:
        start = time.monotonic()
        pending = list(stopping)
        killed_at: float | None = None
        while pending:
            now = time.monotonic()
            for item in list(pending):
                if item.handle.alive():
                    continue
                if item.exit_code is None:
                    item.exit_code = item.handle.reap()
                members = session_members(item.record.pid, item.record.start_time)
                if members and not item.members_termed:
                    item.members_termed = True
                    item.extra.append(f"{len(members)} leftover process(es) in its session")
                    self._signal_members(members, signal.SIGTERM)
                elif not members:
                    item.done_at = now
                    pending.remove(item)
            if not pending:
                break
            if killed_at is None and now - start >= timeout:
                killed_at = now
                for item in pending:
                    item.result, item.signal = "killed", "SIGKILL"
                    item.handle.send(signal.SIGKILL)
                    self._signal_members(session_members(item.record.pid, item.record.start_time), signal.SIGKILL)
            elif killed_at is not None and now - killed_at >= KILL_GRACE_S:
                for item in pending:
                    item.result = "failed"
                    item.done_at = now
                break
            time.sleep(POLL_S)
        for item in stopping:
            item.handle.close()
        return stopping

    @staticmethod
    def _signal_members(members: list[ProcStat], signum: int) -> None:
        for member in members:
            handle = ProcessHandle.open(member.pid, member.start_time, "")
            if handle is not None:
                with contextlib.suppress(PermissionError):
                    handle.send(signum)
                handle.close()

    def _result(self, item: _Stopping, out: Out) -> dict[str, Any]:
        seconds = round((item.done_at or time.monotonic()) - item.started, 2)
        name, pid = item.record.instance, item.record.pid
        extra = f"; {', '.join(item.extra)}" if item.extra else ""
        if item.result == "failed":
            out(f"{name}: FAILED: pid {pid} still running {seconds:.1f}s after SIGKILL{extra}")
        else:
            self.store.discard(item.record)
            code = f", exit code {item.exit_code}" if item.exit_code is not None else ""
            out(f"{name}: {item.result} (pid {pid}, {item.signal}, {seconds:.1f}s{code}{extra})")
        return {"name": name, "pid": pid, "ok": item.result != "failed", "result": item.result,
                "signal": item.signal, "seconds": seconds, "exit_code": item.exit_code}
