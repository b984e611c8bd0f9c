"""The activator's state file: what `up` tells it (instances, models, addresses, GPU shares).

Written by `up` (workflow.write_state) as JSON, atomically; read by the activator whenever its
modification time changes, so a changed config needs no restart of the activator.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from orchestrator.value import Value, field

ACTIVATOR_NAME = "activator"  # its container's suffix, `ps` row and `logs` name
STATE_FILE = "state.json"
DEFAULT_HOLD_S = 300.0  # how long a request waits for a start before a 503 with Retry-After


class OnDemand(Value):
    """One on-demand instance as the activator knows it."""

    name: str
    model: str
    address: str  # host:port the activator reaches it at
    container: str  # the container's name (ownership is checked by labels too)
    aliases: tuple[str, ...] = ()  # its other served names (a request may name any of them)
    sleep: bool = False  # sleep/wake instead of stop/start (enable_sleep_mode)
    idle_stop_after: int = 900  # seconds; 0: never
    gpus: tuple[str, ...] = ()  # the budget's keys: GPU ids, or ("host",) without GPUs
    share: float | None = None  # gpu_memory_utilization on each of them (None: not counted)
    log_file: str = ""
    start_timeout_s: float = 900.0
    stop_timeout_s: int = 30

    def to_json(self) -> dict[str, Any]:
        # Empty aliases are left out: an activator image older than them reads the file as before.
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()
                if not (k == "aliases" and not v)}


class Resident(Value):
    """An instance that is not on demand but shares the budget (it is never stopped for room)."""

    name: str
    gpus: tuple[str, ...] = ()
    share: float | None = None


class State(Value):
    project: str
    engine_address: str = ""
    hold_s: float = DEFAULT_HOLD_S
    instances: tuple[OnDemand, ...] = ()
    residents: tuple[Resident, ...] = ()
    keys_file: str = field(default="", repr=False)  # the gateway's API-key file ("" : open)

    def to_json(self) -> dict[str, Any]:
        return {"project": self.project, "engine_address": self.engine_address, "hold_s": self.hold_s,
                "keys_file": self.keys_file, "instances": [i.to_json() for i in self.instances],
                "residents": [{"name": r.name, "gpus": list(r.gpus), "share": r.share} for r in self.residents]}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "State":
        def tup(d: dict[str, Any]) -> dict[str, Any]:
            return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}

        return cls(project=str(doc["project"]), engine_address=str(doc.get("engine_address", "")),
                   hold_s=float(doc.get("hold_s", DEFAULT_HOLD_S)), keys_file=str(doc.get("keys_file", "")),
                   instances=tuple(OnDemand(**tup(i)) for i in doc.get("instances", [])),
                   residents=tuple(Resident(**tup(r)) for r in doc.get("residents", [])))


def write(path: str, state: State) -> bool:
    """Write the file atomically; False when it already said the same (nothing written)."""
    text = json.dumps(state.to_json(), indent=1, sort_keys=True) + "\n"
    try:
        with open(path) as handle:
            if handle.read() == text:
                return False
    except OSError:
        pass
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".state-")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return True


def read(path: str) -> State:
    with open(path) as handle:
        return State.from_json(json.load(handle))
