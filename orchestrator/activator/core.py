"""The activator's decisions: one shared start per instance, held requests, idle stops, room.

Every side effect goes through a `Control` (control.DockerControl: the engine, /health,
/metrics, vLLM's sleep routes), so the tests drive this module with fakes. Threads: the HTTP
server calls `acquire` from one thread per request; `tick` runs every second from one loop.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Protocol

from orchestrator.activator.budget import Holder, NoRoom, to_free
from orchestrator.activator.state import OnDemand, State

STOPPED, STARTING, RUNNING, SLEEPING, STOPPING, FAILED = "stopped", "starting", "running", "sleeping", "stopping", "failed"
RETRY_AFTER_S = 10
# After a failed start, the same instance is not started again for this long: requests meanwhile
# get the failure at once (a 503 with Retry-After), not a fresh doomed cold start each.
BACKOFF_S = 10.0
# Before a stop or sleep the agent says `maint` this long first, so HAProxy (agent-inter 0.5 s)
# sends nothing new to it; requests that reached it meanwhile keep it running.
DRAIN_S = 1.2


class Control(Protocol):
    """What the activator does to an instance (control.DockerControl; fakes in the tests)."""

    def observe(self) -> dict[str, str]: ...  # instance -> "running" | "sleeping" | "stopped"
    def start(self, inst: OnDemand) -> None: ...
    def stop(self, inst: OnDemand) -> None: ...
    def sleep(self, inst: OnDemand) -> None: ...
    def wake(self, inst: OnDemand) -> None: ...
    def healthy(self, inst: OnDemand) -> bool: ...
    def exited(self, inst: OnDemand) -> str | None: ...  # why it is not running any more, or None
    def busy(self, inst: OnDemand) -> float | None: ...  # requests running + waiting (None: unknown)
    def finished(self, inst: OnDemand) -> float | None: ...  # requests finished so far (None: not exported)
    def lock(self) -> object: ...  # the project's run lock (a context manager)


class StartFailed(Exception):
    """The instance did not come up: every request waiting for it gets this message."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after  # seconds until a new start is tried (None: at once)


class HoldTimeout(Exception):
    """Still starting when the request's hold ran out: a 503 with Retry-After."""


class Start:
    """One start (or wake) of one instance, shared by every request that waits for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: str | None = None


class Tracked:
    def __init__(self, spec: OnDemand, phase: str, now: float):
        self.spec = spec
        self.phase = phase
        self.last_request = now  # monotonic; a start counts as use
        self.last_request_wall: float | None = None  # time.time() of the last request seen
        self.in_flight = 0  # requests this activator forwards now
        self.busy = 0.0  # requests running + waiting, from its /metrics at the last tick
        self.finished: float | None = None  # its request counter at the last tick
        self.start: Start | None = None
        self.stopped: threading.Event | None = None  # set when a stop / sleep under way ends
        self.draining = False  # STOPPING, but still in the drain before the stop: a request cancels it
        self.last_start_s: float | None = None
        self.last_start_kind = ""  # "cold" | "wake"
        self.failed_at: float | None = None  # monotonic; the last failed start's end
        self.last_error: str | None = None  # the last failed start's message


class Stats:
    """Counters for the activator's /metrics, per model."""

    def __init__(self) -> None:
        self.starts: dict[str, int] = {}
        self.stops: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.cold_s: dict[str, float] = {}  # the last cold start's seconds
        self.wake_s: dict[str, float] = {}

    def bump(self, table: dict[str, int], model: str) -> None:
        table[model] = table.get(model, 0) + 1


class Activator:
    def __init__(self, state: State, control: Control, *, clock: Callable[[], float] = time.monotonic,
                 poll_s: float = 0.1, drain_s: float = DRAIN_S, say: Callable[[str], None] = lambda line: None):
        self.control = control
        self._say = say  # one line per start, failure and stop: the activator's log (`logs activator`)
        self.clock = clock
        self.poll_s = poll_s
        self.drain_s = drain_s
        self.stats = Stats()
        self._lock = threading.RLock()
        self.state = state
        self.tracked: dict[str, Tracked] = {}
        self.reload(state)

    # ------------------------------------------------------------------ state
    def reload(self, state: State) -> None:
        """A new state file: new instances start where the engine says they are."""
        seen = self.control.observe()
        with self._lock:
            self.state = state
            now = self.clock()
            fresh: dict[str, Tracked] = {}
            for spec in state.instances:
                old = self.tracked.get(spec.name)
                if old is not None:
                    old.spec = spec
                    fresh[spec.name] = old
                else:
                    fresh[spec.name] = Tracked(spec, seen.get(spec.name, STOPPED), now)
            self.tracked = fresh

    def models(self) -> set[str]:
        return {name for t in self.tracked.values() for name in (t.spec.model, *t.spec.aliases)}

    # ------------------------------------------------------------------ the slow path
    def acquire(self, model: str, hold_s: float | None = None) -> Tracked:
        """An instance of `model` that answers /health, started (or woken) if need be; the
        caller must `release` it. Raises KeyError (not on demand here), HoldTimeout, StartFailed."""
        deadline = self.clock() + (self.state.hold_s if hold_s is None else hold_s)
        while True:
            with self._lock:
                mine = self._serving(model)
                if not mine:
                    raise KeyError(model)
                ready = [t for t in mine if t.phase == RUNNING]
                chosen = min(ready, key=lambda t: t.in_flight) if ready else None
                if chosen is not None:
                    chosen.in_flight += 1
                    self._used(chosen)
            if chosen is not None:
                # HAProxy sends a request here only when it has no server up for the model: one
                # we think runs may have been stopped or recreated behind our back (`up`, by hand).
                if self.control.healthy(chosen.spec):
                    return chosen
                self.resync()
                if chosen.phase == RUNNING:  # the engine says it runs: loaded, slow to answer
                    return chosen
                self.release(chosen)
                continue
            with self._lock:
                mine = self._serving(model)
                if any(t.phase == RUNNING for t in mine):
                    continue  # started meanwhile (another request's start just ended)
                draining = next((t for t in mine if t.phase == STOPPING and t.draining), None)
                if draining is not None:
                    # A request during the drain: the stop is called off (it still runs and has
                    # its model loaded), and this request is forwarded to it.
                    draining.phase = RUNNING
                    draining.in_flight += 1
                    self._used(draining)
                    return draining
                starting = next((t for t in mine if t.phase == STARTING and t.start), None)
                stopping = next((t for t in mine if t.phase == STOPPING and t.stopped), None)
                if starting is None and stopping is None:
                    # A sleeping one wakes in seconds; else a stopped one; a failed one only once
                    # its backoff is over (another replica of the model is preferred meanwhile).
                    now = self.clock()
                    fresh = [t for t in mine if t.phase != FAILED or t.failed_at is None
                             or now - t.failed_at >= BACKOFF_S]
                    if not fresh:
                        last = max(mine, key=lambda t: t.failed_at if t.failed_at is not None else now)
                        left = BACKOFF_S - (now - (last.failed_at if last.failed_at is not None else now))
                        raise StartFailed(f"{last.last_error} (not tried again for {left:.0f}s)", retry_after=left)
                    chosen = (next((t for t in fresh if t.phase == SLEEPING), None)
                              or next((t for t in fresh if t.phase != FAILED), None) or fresh[0])
                    starting = self._begin(chosen)
            if starting is None:
                assert stopping is not None and stopping.stopped is not None
                # A request during a stop: wait for the stop to end, then start it again.
                if not stopping.stopped.wait(max(0.0, deadline - self.clock())):
                    raise HoldTimeout(model)
                continue
            start = starting.start
            assert start is not None
            if not start.done.wait(max(0.0, deadline - self.clock())):
                raise HoldTimeout(model)
            if start.error is not None:
                raise StartFailed(start.error, retry_after=BACKOFF_S)

    def _serving(self, model: str) -> list[Tracked]:
        """Under the lock: the instances of `model`, else those with it as another served name (the
        gateway routes a name that is some model's own to that model)."""
        own = [t for t in self.tracked.values() if t.spec.model == model]
        return own or [t for t in self.tracked.values() if model in t.spec.aliases]

    def release(self, tracked: Tracked) -> None:
        with self._lock:
            tracked.in_flight -= 1
            self._used(tracked)

    def say(self, line: str) -> None:
        """A line of the log, never under the lock (a blocked stdout must not stall requests) and
        never raising (a log that cannot be written must not leave a start half-done)."""
        try:
            self._say(line)
        except Exception:  # noqa: BLE001 - the log is best effort
            pass

    def _used(self, tracked: Tracked) -> None:
        tracked.last_request = self.clock()
        tracked.last_request_wall = time.time()

    def _begin(self, tracked: Tracked) -> Tracked:
        """Under the lock: mark it starting and start it in its own thread (shared by all waiters)."""
        tracked.start = Start()
        waking = tracked.phase == SLEEPING
        tracked.phase = STARTING
        self._used(tracked)
        threading.Thread(target=self._bring_up, args=(tracked, tracked.start, waking), daemon=True,
                         name=f"start-{tracked.spec.name}").start()
        return tracked

    def _bring_up(self, tracked: Tracked, start: Start, waking: bool) -> None:
        spec, began = tracked.spec, self.clock()
        self.say(f"{spec.name} ({spec.model}): {'waking' if waking else 'starting'} for a request")
        try:
            with self.control.lock():  # type: ignore[attr-defined]
                self._make_room(tracked)
                if waking:
                    self.control.wake(spec)
                else:
                    self.control.start(spec)
            self._await_health(spec, began)
        except Exception as exc:  # the engine, a sleep call, no room: every waiter must hear, never hang
            error: str | None = f"{spec.name} ({spec.model}) did not start: {exc}"
            if not isinstance(exc, NoRoom):
                # A start that timed out may still be loading: stop it, so it neither holds its
                # share nor comes up later unasked (and unannounced).
                try:
                    self.control.stop(spec)
                except Exception:  # already gone, or the engine fails: the error above says enough
                    pass
        else:
            error = None
        with self._lock:
            if error is None:
                tracked.phase = RUNNING
                tracked.last_start_s = round(self.clock() - began, 2)
                tracked.last_start_kind = "wake" if waking else "cold"
                self.stats.bump(self.stats.starts, spec.model)
                (self.stats.wake_s if waking else self.stats.cold_s)[spec.model] = tracked.last_start_s
                self._used(tracked)
                line = (f"{spec.name} ({spec.model}): serving after {tracked.last_start_s:g} s "
                        f"({tracked.last_start_kind} start)")
            else:
                tracked.phase = FAILED
                tracked.failed_at, tracked.last_error = self.clock(), error
                self.stats.bump(self.stats.failures, spec.model)
                line = error
            start.error = error
            tracked.start = None
            start.done.set()
        self.say(line)

    def _await_health(self, spec: OnDemand, began: float) -> None:
        while True:
            if self.control.healthy(spec):
                return
            why = self.control.exited(spec)
            if why is not None:
                raise StartFailed(why)
            if self.clock() - began > spec.start_timeout_s:
                raise StartFailed(f"no answer on /health within {spec.start_timeout_s:g}s")
            time.sleep(self.poll_s)

    def _make_room(self, tracked: Tracked) -> None:
        spec = tracked.spec
        with self._lock:
            # One starting (or stopping) now holds its share and cannot be put down: it counts
            # as unmovable, so two concurrent starts never both run past the budget.
            holders = [Holder(t.spec.name, t.spec.gpus, t.spec.share, t.last_request,
                              busy=t.in_flight > 0 or t.busy > 0, movable=t.phase == RUNNING,
                              why="" if t.phase == RUNNING else t.phase)
                       for t in self.tracked.values()
                       if t is not tracked and t.spec.share is not None and t.phase in (RUNNING, STARTING, STOPPING)]
            holders += [Holder(r.name, r.gpus, r.share, 0.0, movable=False)
                        for r in self.state.residents if r.share is not None]
        for name in to_free(spec.gpus, spec.share, holders):
            if not self._put_down(self.tracked[name], "room"):
                raise NoRoom(f"no room on {', '.join(spec.gpus)} for a share of {spec.share:g}: "
                             f"held by {name} (requests arrived while it was being put down)")

    # ------------------------------------------------------------------ idle
    def resync(self) -> None:
        """What the engine says, for the instances not in a start or stop of ours (one stopped
        or started by hand, or by `up` recreating it)."""
        seen = self.control.observe()
        with self._lock:
            failed = [t for n, t in self.tracked.items() if t.phase == FAILED and seen.get(n) == RUNNING]
        # A failed one the engine says runs is RUNNING only once it answers /health (running is
        # not serving: it may be the start that timed out, still loading or wedged).
        answering = {t.spec.name for t in failed if self.control.healthy(t.spec)}
        with self._lock:
            for name, tracked in self.tracked.items():
                if tracked.phase in (RUNNING, STOPPED, SLEEPING, FAILED) and name in seen:
                    if tracked.phase == FAILED and (seen[name] != RUNNING or name not in answering):
                        continue
                    if seen[name] != tracked.phase:
                        tracked.phase = seen[name]

    def tick(self) -> None:
        """Once a second: each running instance's load from /metrics; idle ones leave."""
        now = self.clock()
        with self._lock:
            running = [t for t in self.tracked.values() if t.phase == RUNNING]
            asleep = [t for t in self.tracked.values() if t.phase == SLEEPING]
        for tracked in asleep:  # a request that reached it just before it slept waits there: wake it
            if (self.control.busy(tracked.spec) or 0) > 0:
                with self._lock:
                    if tracked.phase == SLEEPING:
                        self._begin(tracked)
        for tracked in running:
            busy = self.control.busy(tracked.spec)
            finished = self.control.finished(tracked.spec)
            with self._lock:
                # No answer from /metrics (None) is no proof of idleness: it counts as busy.
                tracked.busy = 1.0 if busy is None else busy
                # Requests that came and went between two ticks move the counter, not the gauges.
                moved = finished is not None and tracked.finished is not None and finished != tracked.finished
                tracked.finished = finished
                if tracked.in_flight > 0 or tracked.busy > 0 or moved:
                    self._used(tracked)
                    continue
                idle = self._idle(tracked, now)
            if idle:
                with self.control.lock():  # type: ignore[attr-defined]
                    self._put_down(tracked, "idle")

    def _idle(self, tracked: Tracked, now: float) -> bool:
        """Under the lock: no request for its idle_stop_after (0: never idle)."""
        limit = tracked.spec.idle_stop_after
        return limit > 0 and tracked.in_flight == 0 and now - tracked.last_request > limit

    def _put_down(self, tracked: Tracked, why: str) -> bool:
        """Sleep (where it has sleep mode) or stop one instance; never one with requests in flight.
        True when it went down (its share is free), False when it stays as it was."""
        with self._lock:
            if tracked.phase != RUNNING or tracked.in_flight > 0:
                return False
            # The tick decided before it waited for the run lock: a request since then keeps it.
            if why == "idle" and not self._idle(tracked, self.clock()):
                return False
            tracked.phase = STOPPING
            tracked.draining = True
            tracked.stopped = threading.Event()
        spec, phase = tracked.spec, STOPPED
        if self.drain_s > 0:
            time.sleep(self.drain_s)  # the agent answers `maint` now: HAProxy stops sending to it
        load = self.control.busy(spec) if self.drain_s > 0 else 0.0
        with self._lock:
            tracked.draining = False
            # Requests arrived meanwhile (to it, or held here: acquire set it RUNNING): it stays.
            if tracked.phase != STOPPING or tracked.in_flight > 0 or load is None or load > 0:
                tracked.phase = RUNNING
                assert tracked.stopped is not None
                tracked.stopped.set()
                tracked.stopped = None
                self._used(tracked)
                return False
        done = False
        try:
            if spec.sleep:
                try:
                    self.control.sleep(spec)
                    phase = SLEEPING
                except Exception:  # no sleep after all (routes missing): a stop frees it too
                    self.control.stop(spec)
            else:
                self.control.stop(spec)
            done = True
        finally:
            with self._lock:
                tracked.phase = phase
                self.stats.bump(self.stats.stops, spec.model)
                assert tracked.stopped is not None
                tracked.stopped.set()
                tracked.stopped = None
        if done:
            reason = f"idle for {spec.idle_stop_after:g} s" if why == "idle" else "to make room for another model"
            self.say(f"{spec.name} ({spec.model}): {'asleep' if phase == SLEEPING else 'stopped'}, {reason}")
        return True

    # ------------------------------------------------------------------ HAProxy's agent check
    def agent_answer(self, name: str) -> str:
        """`ready up` while the instance serves; `maint` while it sleeps, starts or stops, so
        HAProxy sends its model's requests to the activator (its backup server) meanwhile."""
        import re

        with self._lock:
            # HAProxy sends the server's name: the instance's, with characters outside
            # [A-Za-z0-9_.-] as `_` (gateway/haproxy.server_name).
            tracked = self.tracked.get(name) or next(
                (t for n, t in self.tracked.items() if re.sub(r"[^A-Za-z0-9_.-]", "_", n) == name), None)
            return "ready up\n" if tracked is not None and tracked.phase == RUNNING else "maint\n"

    def snapshot(self) -> list[dict]:
        with self._lock:
            return [{"name": t.spec.name, "model": t.spec.model, "phase": t.phase, "in_flight": t.in_flight,
                     "last_request": t.last_request_wall, "last_start_s": t.last_start_s,
                     "last_start_kind": t.last_start_kind, "last_error": t.last_error} for t in self.tracked.values()]
