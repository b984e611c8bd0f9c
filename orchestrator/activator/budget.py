"""Who must leave before an on-demand instance starts: pure, least recently used first.

The rule is the shared-GPU rule `validate` applies to instances that run together: on each GPU
the gpu_memory_utilization shares of the instances holding it sum to at most 1. On-demand
instances may be configured past that (that is their point): only the ones running count (one
asleep at level 1 has moved its weights to CPU memory and dropped its KV cache). A resident (not
on demand) instance always counts and is never chosen; one with requests in flight neither.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from orchestrator.value import Value

EPSILON = 1e-9


class Holder(Value):
    """An instance holding part of the budget now."""

    name: str
    gpus: tuple[str, ...]
    share: float
    last_used: float  # monotonic seconds of its last request (or start)
    busy: bool = False  # requests in flight: never stopped for room
    movable: bool = True  # on demand (a resident is not)
    why: str = ""  # why it cannot be moved, when not for the reasons above (e.g. "starting")


class NoRoom(Exception):
    """The start cannot fit: what holds the room cannot be moved (resident, or busy)."""


def to_free(gpus: Iterable[str], share: float | None, holders: Iterable[Holder]) -> list[str]:
    """The holders to put to sleep or stop, least recently used first, so that `share` fits on
    each of `gpus`; [] when it fits already. NoRoom (naming why) when it cannot be made to fit."""
    wanted = tuple(gpus)
    if share is None or not wanted:
        return []
    holders = list(holders)
    used: dict[str, float] = {g: 0.0 for g in wanted}
    for holder in holders:
        for gpu in holder.gpus:
            if gpu in used:
                used[gpu] += holder.share
    chosen: list[str] = []
    candidates = sorted((h for h in holders if h.movable and not h.busy and set(h.gpus) & set(wanted)),
                        key=lambda h: h.last_used)
    for holder in candidates:
        if all(used[g] + share <= 1.0 + EPSILON for g in wanted):
            break
        chosen.append(holder.name)
        for gpu in holder.gpus:
            if gpu in used:
                used[gpu] -= holder.share
    short = [g for g in wanted if used[g] + share > 1.0 + EPSILON]
    if short:
        left = [h for h in holders if h.name not in chosen and set(h.gpus) & set(short)]
        why = ", ".join(f"{h.name} ({h.why or ('not on demand' if not h.movable else 'requests in flight')})"
                        for h in left)
        raise NoRoom(f"no room on {', '.join(short)} for a share of {share:g}: held by {why or 'nothing known'}")
    return chosen


def usage(holders: Iterable[Holder]) -> Mapping[str, float]:
    used: dict[str, float] = {}
    for holder in holders:
        for gpu in holder.gpus:
            used[gpu] = used.get(gpu, 0.0) + holder.share
    return used
