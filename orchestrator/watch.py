"""`vllm-orch watch`: the host's supervisor of one project, in the foreground (for systemd).

Each round: one engine list call (our containers of this project and config only: labels, as
`down` finds them), supervise.decide, and for each restart it decides: take the project's run
lock (so an `up` that is creating or starting containers finishes first, and nothing here races
it), look again (the container must still be the same one, and still unhealthy), write the
record (restart_log.py: time, reason, the log's last lines), then restart it.

How: the engine's restart of the same container (stop with its own stop timeout, then start). It
keeps the container's id, its writable layer, its bind mounts and caches (compiled graphs, the
Hugging Face cache) and its log file, so the restart costs the model's load and nothing else; a
recreate would also cost a create and lose whatever the container wrote, and is `up`'s job when
the config changed, not the supervisor's.
"""

from __future__ import annotations

import time
from typing import Callable

from orchestrator import restart_log
from orchestrator.app import Inputs, open_project
from orchestrator.backends.base import Say, backend_for
from orchestrator.backends.base import quiet as _quiet
from orchestrator.errors import OrchestratorError
from orchestrator.labels import LABEL_LOG
from orchestrator.plan import Observed, owned_elsewhere
from orchestrator.supervise import GIVE_UP, RESTART, Decision, Policy, Seen, Tracked, decide, restarted
from orchestrator.targets import DOCKER

DEFAULT_INTERVAL_S = 5.0


def watch(inputs: Inputs, *, policy: Policy, interval: float = DEFAULT_INTERVAL_S, say: Say = _quiet,
          stopping: Callable[[], bool] = lambda: False, rounds: int | None = None,
          clock: Callable[[], float] = time.monotonic) -> int:
    """Supervise until `stopping()` says so (SIGTERM) or after `rounds`; returns the restarts done."""
    from orchestrator.run_lock import sole_watcher

    project = open_project(inputs, target=DOCKER, strict=False, checks=False)
    backend = backend_for(DOCKER)
    tracked: dict[str, Tracked] = {}
    done = 0
    with sole_watcher(project.name, backend.engine.address):
        say(f"watching project {project.name!r} (every {interval:g}s; restarts after each instance's "
            "restart_unhealthy_after)")
        round_number = 0
        while not stopping():
            project = _reread(inputs, project, say)
            specs = {s.name: s for s in project.resolved.instances}
            observed = [o for o in backend.observe(project.name)
                        if not owned_elsewhere([o], project.resolved.config_file) and o.instance in specs]
            seen = [Seen(o.instance, o.id, o.state, o.health, _after(specs[o.instance])) for o in observed]
            for decision in decide(tracked, seen, clock(), policy):
                if decision.kind == GIVE_UP:
                    say(f"{decision.instance}: {decision.reason}")
                    _record(observed, decision, restarted_=False)
                elif decision.kind == RESTART and _restart(backend, project.name, decision, specs, say):
                    restarted(tracked, decision.instance, clock())
                    done += 1
            round_number += 1
            if rounds is not None and round_number >= rounds:
                break
            _sleep(interval, stopping)
    say("watch stopped")
    return done


def _after(spec) -> int:
    workload = spec.workload
    return workload.restart_unhealthy_after if workload is not None else 0


def _reread(inputs: Inputs, current, say: Say):
    """The config as it is now (a changed restart_unhealthy_after counts from the next round);
    the last good one while the file does not load (said once per round)."""
    try:
        return open_project(inputs, target=DOCKER, strict=False, checks=False)
    except OrchestratorError as exc:
        say(f"config not reloaded ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            "keeping the last good one")
        return current


def _restart(backend, project: str, decision: Decision, specs: dict, say: Say) -> bool:
    """Restart the container under the project's run lock, if it is still the one decided on and
    still unhealthy; record it first (so the record holds the log lines from before)."""
    from orchestrator.backends.engine import EngineError, EngineTimeout

    with backend.lock(project, say):
        now = {o.id: o for o in backend.observe(project)}
        current = now.get(decision.container)
        if current is None or current.state != "running" or current.health != "unhealthy":
            say(f"{decision.instance}: not restarted (changed while waiting for the run lock)")
            return False
        _record([current], decision, restarted_=True)
        spec = specs.get(decision.instance)
        grace = spec.workload.stop_timeout if spec is not None and spec.workload is not None else None
        say(f"{decision.instance}: restarting container {current.name} ({decision.reason})")
        try:
            backend.call(lambda engine: engine.restart(current.id, grace_s=grace))
        except (EngineError, EngineTimeout) as exc:
            say(f"{decision.instance}: restart failed: {exc}")
            return False
    return True


def _record(observed: list[Observed], decision: Decision, *, restarted_: bool) -> None:
    from orchestrator.logs import tail_lines

    for container in observed:
        if container.id != decision.container:
            continue
        log_file = container.labels.get(LABEL_LOG, "")
        if not log_file:
            return
        try:
            lines = tail_lines(log_file, restart_log.MAX_LOG_LINES)
        except OrchestratorError:
            lines = []
        restart_log.append(log_file, {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "action": "restart" if restarted_ else "gave up",
            "instance": decision.instance,
            "container": container.name,
            "container_id": container.id[:12],
            "reason": decision.reason,
            "log_tail": lines,
        })


def _sleep(seconds: float, stopping: Callable[[], bool]) -> None:
    """Sleep in short steps, so SIGTERM ends the wait within a fifth of a second."""
    end = time.monotonic() + seconds
    while not stopping() and time.monotonic() < end:
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))
