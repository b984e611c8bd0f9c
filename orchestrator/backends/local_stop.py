"""Stopping launched processes (`down --backend local`): SIGTERM, then what the instance left in
its session, SIGKILL after the timeout; each record is discarded once its process is gone."""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Any

from orchestrator.backends.local_process import Out
from orchestrator.backends.local_state import ProcessHandle, ProcStat, Record, StateStore, session_members
from orchestrator.value import Value, field

KILL_GRACE_S = 5.0  # after SIGKILL, how long to wait for the kernel to reap before reporting
POLL_S = 0.05

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



def stop_processes(store: StateStore, project: str, selected: set[str] | None, *, timeout: float, out: Out) -> list[dict[str, Any]]:
    """Stop the launched instances of the project named `project`: all of them, orphans
    included, when none are named. Each result: name, pid, ok, result (stopped
    | killed | not running | failed), signal, seconds, exit_code (known only when this
    process launched it). No result at all: nothing to stop (the caller says so)."""
    records = store.records(project)
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
            store.discard(record)
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
    results += [_result(store, s, out) for s in _await_stopped(stopping, timeout)]
    return results

def _await_stopped(stopping: list[_Stopping], timeout: float) -> list[_Stopping]:
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
                _signal_members(members, signal.SIGTERM)
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
                _signal_members(session_members(item.record.pid, item.record.start_time), signal.SIGKILL)
        elif killed_at is not None and now - killed_at >= KILL_GRACE_S:
            for item in pending:
                item.result = "failed"
                item.done_at = now
            break
        time.sleep(POLL_S)
    for item in stopping:
        item.handle.close()
    return stopping

def _signal_members(members: list[ProcStat], signum: int) -> None:
    for member in members:
        handle = ProcessHandle.open(member.pid, member.start_time, "")
        if handle is not None:
            with contextlib.suppress(PermissionError):
                handle.send(signum)
            handle.close()

def _result(store: StateStore, item: _Stopping, out: Out) -> dict[str, Any]:
    seconds = round((item.done_at or time.monotonic()) - item.started, 2)
    name, pid = item.record.instance, item.record.pid
    extra = f"; {', '.join(item.extra)}" if item.extra else ""
    if item.result == "failed":
        out(f"{name}: FAILED: pid {pid} still running {seconds:.1f}s after SIGKILL{extra}")
    else:
        store.discard(item.record)
        code = f", exit code {item.exit_code}" if item.exit_code is not None else ""
        out(f"{name}: {item.result} (pid {pid}, {item.signal}, {seconds:.1f}s{code}{extra})")
    return {"name": name, "pid": pid, "ok": item.result != "failed", "result": item.result,
            "signal": item.signal, "seconds": seconds, "exit_code": item.exit_code}
