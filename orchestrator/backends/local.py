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

The jobs, one module each: local_state.py (records and process identity), local_plan.py (the
launch order), local_process.py (user, environment, URL), local_stop.py (stopping); this module
is the backend that joins them: launching and `ps`.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from orchestrator.backends.base import LOCAL, Removal, Say, quiet
from orchestrator.backends.local_plan import DISABLED, RUNNING, START, LaunchStep, plan_launch
from orchestrator.backends.local_process import (
    USER_ENV,
    Out,
    RunAs,
    _current_user,
    _exit_cause,
    _port_in_use,
    connect_url,
    exit_status,
    format_uptime,
    process_environment,
    resolve_user,
)
from orchestrator.backends.local_state import ProcessHandle, Record, StateStore, boot_id, proc_stat, session_members
from orchestrator.backends.local_stop import stop_processes
from orchestrator.errors import OrchestratorError
from orchestrator.run_lock import default_state_dir
from orchestrator.spec import InstanceSpec
from orchestrator.value import Value
from orchestrator.waiter import probe_many

if TYPE_CHECKING:
    from orchestrator.project import Project
    from orchestrator.resolve import Resolved

# What other modules and tests reach through this one (the backend's own parts).
__all__ = ["DISABLED", "RUNNING", "START", "USER_ENV", "LaunchRun", "LaunchStep", "LocalBackend", "ProcessHandle", "Record",
           "StopResult", "boot_id", "plan_launch", "proc_stat", "session_members", "stop_processes"]


class StopResult(Value):
    """One instance's line of `down --backend local`, in the shape base.Removal's results share
    with Docker's ActionResult."""

    doc: dict  # name, pid, ok, result (stopped | killed | not running | failed), signal, seconds, exit_code

    @property
    def instance(self) -> str:
        return str(self.doc.get("name", ""))

    @property
    def ok(self) -> bool:
        return bool(self.doc.get("ok", True))

    engine_lost = False  # no engine to lose
    error_exit_code = 0  # a failure is the generic exit 1

    def to_json(self) -> dict[str, Any]:
        return self.doc


class LaunchRun(Value):
    """The options of one launch, read by apply."""

    out: Out = quiet  # the launcher's lines (the boot hook's output)
    health_timeout: float = 1800.0  # seconds an instance waits for the one before it on its GPU
    named: bool = False  # the user named the instances: say so for a disabled one among them


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

    def plan(self, project: Project, selected: set[str] | None, observed: list[Record],
             request: LaunchRun | None = None) -> list[LaunchStep]:
        """base.Backend.plan: what `launch` will do, in the order it will do it (plan_launch);
        an instance with a live process in `observed` is left running."""
        pids = {r.instance: r.pid for r in observed}
        return plan_launch(project.resolved.instances, selected, pids.get)

    def preflight(self, project: Project, plan: list[LaunchStep], request: LaunchRun) -> list[str]:
        """base.Backend.preflight: nothing before the launch. The launcher meets each instance's
        problems (a port in use, a command not found) as it starts it, and reports them there:
        one broken instance must not keep the others of a booting container down."""
        return []

    def apply(self, project: Project, plan: list[LaunchStep], request: LaunchRun) -> int:
        """base.Backend.apply: start the steps' instances in their order; each record is checked
        again under the lock, so one launched meanwhile is left running. `named`: the user named
        the instances, so a disabled one among them is reported (otherwise skipped quietly).
        Returns the launcher's exit code: the first non-zero exit code of a foreground instance
        or a failed start. An instance that shares a GPU with an earlier background one starts
        once that one answers /health (start_order.py); when it does not, it is not launched."""
        out, health_timeout, named = request.out, request.health_timeout, request.named
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

    def status(self, project: str, resolved: Resolved | None) -> list[dict[str, Any]]:
        """base.Backend.status: one row per configured instance (config order), then one per
        record whose instance is no longer in the config. state: running | exited (launched, now
        gone) | not started | disabled."""
        records = {r.instance: r for r in self.store.records(project)}
        rows: list[dict[str, Any]] = []
        alive: dict[str, bool] = {name: r.is_alive() for name, r in records.items()}
        for spec in resolved.instances if resolved else []:
            record = records.pop(spec.name, None)
            rows.append(self._row(spec.name, record, alive.get(spec.name, False), spec))
        for name, record in records.items():
            rows.append(self._row(name, record, alive[name], None))
        running = [row for row in rows if row["state"] == "running"]
        for row, healthy in zip(running, probe_many([row["url"] for row in running])):
            row["health"] = "healthy" if healthy else "starting"
        return rows

    def log_file(self, resolved: Resolved, spec: InstanceSpec) -> Path:
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
        return self.apply(project, self.plan_launch(project, selected),
                          LaunchRun(out, health_timeout=health_timeout, named=selected is not None))

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
            for number, old in previous.items():
                signal.signal(number, old)
        return returncode, bool(received)

    # ------------------------------------------------------------------ ps
    def ps(self, project) -> list[dict[str, Any]]:
        """status() of a project object."""
        return self.status(project.name, project.resolved)

    def _row(self, name: str, record: Record | None, alive: bool, spec: InstanceSpec | None) -> dict[str, Any]:
        if record is not None and alive:
            state = "running"
        elif record is not None:
            state = "exited"
        elif spec is not None and not spec.enabled:
            state = "disabled"
        else:
            state = "not started"
        # What it runs with: the record's while it runs (or once it is no longer configured), else the config's.
        model: str | None
        if record is not None and (alive or spec is None):
            gpus, url, model, port, log_file = record.gpus, record.url, record.model, record.port, record.log_file
        elif spec is not None:
            gpus, url, model, port, log_file = (spec.gpu.describe(), connect_url(spec), spec.served_model, spec.port,
                                                spec.log_file)
        else:
            raise ValueError("a ps row needs a record or a configured instance")
        return {
            "name": name,
            "state": state,
            "pid": record.pid if record is not None and alive else None,
            "health": "",
            "gpus": gpus,
            "url": url,
            "model": model or "",
            "uptime": format_uptime(time.time() - record.started_at) if record is not None and alive else "",
            "port": port,
            "log_file": log_file,
            "background": record.background if record is not None else (spec.background if spec else None),
            "user": record.user if record is not None else "",
            "configured": spec is not None,
            "cause": _exit_cause(record.log_file) if record is not None and not alive else None,
        }

    # ------------------------------------------------------------------ down
    def down(self, project: str, selected: set[str] | None, *, timeout: float, out: Out) -> list[dict[str, Any]]:
        """local_stop.stop_processes: stop the project's launched instances (see there)."""
        return stop_processes(self.store, project, selected, timeout=timeout, out=out)
