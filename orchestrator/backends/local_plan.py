"""The launcher's plan: which instances `launch` starts, leaves running or skips, in the order it
starts them (instances sharing a GPU wait for each other's /health). Pure."""

from __future__ import annotations

from typing import Any, Callable

from orchestrator.spec import InstanceSpec
from orchestrator.value import Value

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
    queue, held, order = list(specs), list[InstanceSpec](), list[InstanceSpec]()
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
