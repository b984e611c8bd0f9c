"""What `vllm-orch watch` decides about each container, as a pure function of what it saw and when.

Docker's own restart policy ignores `unhealthy`, and a vLLM whose engine died can keep its API
process up: the container runs and serves nothing. `decide` turns each round's observations into
restarts, with these rules:
- Only a running container that Docker's health check calls `unhealthy` counts. Docker says
  `starting` through the container's start period (`health_start_period`: model loading), so
  failures before it ends are not counted; and `unhealthy` only after `retries` failed checks.
- It is restarted once it has been unhealthy for longer than its `restart_unhealthy_after`
  (0: never), measured from the first round that saw it so.
- Restarts in a row (without the instance staying healthy for `healthy_reset_s` in between) are
  spaced by an exponential backoff (`backoff_s`, doubled each time, at most `backoff_max_s`);
  after `max_restarts` of them the instance is reported as crash-looping and left alone until it
  is healthy again (or watch is restarted): a broken model is not hammered.
The rounds' memory (`Tracked`) is per instance and container id: a container `up` recreated
starts afresh.
"""

from __future__ import annotations

from orchestrator.value import Value

RESTART, GIVE_UP = "restart", "give-up"


class Policy(Value):
    backoff_s: float = 60.0
    backoff_max_s: float = 1800.0
    max_restarts: int = 5
    healthy_reset_s: float = 600.0

    def backoff(self, restarts: int) -> float:
        """Seconds after the last restart before the next one, `restarts` having happened in a row."""
        if restarts <= 0:
            return 0.0
        return min(self.backoff_s * 2 ** (restarts - 1), self.backoff_max_s)


class Seen(Value):
    """One container of ours as one round saw it."""

    instance: str
    container: str  # its id
    state: str
    health: str  # healthy | unhealthy | starting | "" (no health check)
    after_s: int  # restart_unhealthy_after (0: never)


class Tracked(Value, frozen=False):
    container: str
    unhealthy_since: float | None = None
    healthy_since: float | None = None
    restarts: int = 0  # in a row, reset by staying healthy for healthy_reset_s
    last_restart: float | None = None
    gave_up: bool = False


class Decision(Value):
    kind: str  # RESTART | GIVE_UP
    instance: str
    container: str
    reason: str


def decide(tracked: dict[str, Tracked], seen: list[Seen], now: float, policy: Policy) -> list[Decision]:
    """This round's decisions; updates `tracked` (instance -> memory) in place."""
    decisions: list[Decision] = []
    present = {s.instance for s in seen}
    for gone in [name for name in tracked if name not in present]:
        del tracked[gone]
    for item in seen:
        memory = tracked.get(item.instance)
        if memory is None or memory.container != item.container:
            memory = tracked[item.instance] = Tracked(item.container)
        if item.state != "running" or item.health != "unhealthy":
            memory.unhealthy_since = None
            if item.state == "running" and item.health == "healthy":
                memory.healthy_since = memory.healthy_since if memory.healthy_since is not None else now
                if now - memory.healthy_since >= policy.healthy_reset_s:
                    memory.restarts, memory.gave_up = 0, False
                elif memory.gave_up:
                    memory.gave_up = False  # healthy again: watch may help it next time
            else:
                memory.healthy_since = None
            continue
        memory.healthy_since = None
        if memory.unhealthy_since is None:
            memory.unhealthy_since = now
        if item.after_s <= 0 or memory.gave_up:
            continue
        failing = now - memory.unhealthy_since
        if failing <= item.after_s:
            continue
        if memory.restarts >= policy.max_restarts:
            memory.gave_up = True
            decisions.append(Decision(GIVE_UP, item.instance, item.container,
                                      f"unhealthy again after {memory.restarts} restarts in a row: crash loop, "
                                      "not restarted again until it is healthy (see `vllm-orch logs "
                                      f"{item.instance} --restarts`)"))
            continue
        if memory.last_restart is not None and now < memory.last_restart + policy.backoff(memory.restarts):
            continue
        decisions.append(Decision(RESTART, item.instance, item.container,
                                  f"/health failing for {failing:.0f}s (restart_unhealthy_after = {item.after_s}s)"))
    return decisions


def restarted(tracked: dict[str, Tracked], instance: str, now: float) -> None:
    """Count a restart that was carried out."""
    memory = tracked[instance]
    memory.restarts += 1
    memory.last_restart = now
    memory.unhealthy_since = None
    memory.healthy_since = None
