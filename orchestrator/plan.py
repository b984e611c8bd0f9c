"""Decide, don't act: desired specs + observed containers -> actions, each with its reasons.

Pure functions only; `backends/docker.py` carries the actions out. That split is what lets
`up --dry-run` say `recreate chat: command: --max-model-len 4096 -> 8192` and lets tests check
decisions without an engine.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from orchestrator.labels import LABEL_CONFIG, LABEL_GPUS
from orchestrator.container import ADDED_RECORD_KEYS, ContainerSpec, config_digest
from orchestrator.errors import OrchestratorError
from orchestrator.spec import GpuRequest, InstanceSpec
from orchestrator.start_order import StartAfter, start_order
from orchestrator.value import Value, field

CREATE, RECREATE, START, NOOP, REMOVE, ORPHAN = "create", "recreate", "start", "noop", "remove", "orphan"
CHANGES = (CREATE, RECREATE, START, REMOVE)
# An on-demand instance (`[docker] on_demand`): `up` creates its container and never starts it;
# the activator starts it on the first request for its model.
ON_DEMAND_NOTE = "created, started on first request"
ON_DEMAND_LEFT = "left stopped: on demand, started on first request"


class Observed(Value):
    """One container of ours as the engine's list call reports it (no per-container inspect)."""

    id: str
    name: str
    instance: str
    owner: str
    state: str  # created | running | paused | restarting | exited | dead
    status: str  # the engine's human text, e.g. "Up 3 minutes (healthy)"
    image_id: str
    config_hash: str
    labels: dict[str, str] = field(hash=False, factory=dict)

    @property
    def running(self) -> bool:
        return self.state in ("running", "restarting")

    @property
    def health(self) -> str:
        for word in ("healthy", "unhealthy", "health: starting"):
            if f"({word})" in self.status:
                return word.replace("health: ", "")
        return ""

    @property
    def spec_json(self) -> dict[str, Any] | None:
        from orchestrator.labels import LABEL_SPEC

        try:
            return json.loads(self.labels.get(LABEL_SPEC, ""))
        except ValueError:
            return None


def owned_elsewhere(observed: Iterable[Observed], config_file: str) -> list[Observed]:
    """Containers of the project that another config file made: two files both called
    fleet.toml are two projects' worth of loaded models, not one. A container without the
    label (made before it was recorded) counts as this config's."""
    return [o for o in observed if o.labels.get(LABEL_CONFIG) not in (None, "", config_file)]


def ownership_message(project: str, foreign: list[Observed], config_file: str) -> str:
    other = foreign[0].labels[LABEL_CONFIG]
    names = ", ".join(o.name for o in foreign[:4]) + (", ..." if len(foreign) > 4 else "")
    return (f"project {project!r} on this engine belongs to {other} ({names}), not to {config_file}: "
            f"give this config its own project ([docker] project = \"...\" or -p NAME), "
            f"or take those containers over deliberately with `up --adopt` (they are recreated)")


class Action(Value):
    kind: str
    instance: str
    reasons: tuple[str, ...] = ()
    spec: InstanceSpec | None = None
    observed: Observed | None = None
    rendering: ContainerSpec | None = None  # the spec's Docker container (Resolved.containers)

    @property
    def desired(self) -> InstanceSpec:
        """The spec a create / recreate / start brings about (those always carry one)."""
        if self.spec is None:
            raise OrchestratorError(f"instance {self.instance!r}: internal error: {self.kind} without a spec")
        return self.spec

    @property
    def container(self) -> ContainerSpec:
        """The Docker rendering of `desired` (every spec `up` plans has one)."""
        container = self.rendering
        if container is None:
            raise OrchestratorError(f"instance {self.instance!r}: internal error: {self.kind} without a container")
        return container

    @property
    def current(self) -> Observed:
        """The container a start / recreate / remove acts on (those always observed one)."""
        if self.observed is None:
            raise OrchestratorError(f"instance {self.instance!r}: internal error: {self.kind} without a container")
        return self.observed

    def describe(self) -> str:
        text = f"{self.kind} {self.instance}"
        return text + (": " + "; ".join(self.reasons) if self.reasons else "")

    def to_json(self) -> dict[str, Any]:
        return {"action": self.kind, "instance": self.instance, "reasons": list(self.reasons)}


def plan_up(
    desired: Iterable[InstanceSpec],
    observed: Iterable[Observed],
    *,
    containers: Mapping[str, ContainerSpec],
    image_ids: dict[str, str],
    selected: set[str] | None = None,
    remove_orphans: bool = False,
) -> list[Action]:
    """What `up` must do. `containers`: each desired instance's Docker rendering, by name
    (Resolved.containers); `image_ids` maps image names to their current ids on the host.
    Containers of another config file are the caller's to refuse (`owned_elsewhere`); any
    left in `observed` are adopted: recreated with this config's identity."""
    desired = list(desired)
    observed_by_name: dict[str, Observed] = {}
    for container in observed:
        observed_by_name.setdefault(container.instance, container)
    configured = {spec.name for spec in desired}
    actions: list[Action] = []
    for spec in desired:
        if selected is not None and spec.name not in selected:
            continue
        current = observed_by_name.get(spec.name)
        rendering = containers.get(spec.name)
        if not spec.enabled:
            if current is not None:
                actions.append(Action(REMOVE, spec.name, (f"disabled ({spec.disabled_by})",), spec, current,
                                      rendering))
            continue
        if rendering is None:
            raise OrchestratorError(f"instance {spec.name!r}: internal error: no Docker rendering")
        on_demand = spec.workload is not None and spec.workload.on_demand
        if current is None:
            actions.append(Action(CREATE, spec.name, ("not created yet",) + ((ON_DEMAND_NOTE,) if on_demand else ()),
                                  spec, None, rendering))
            continue
        reasons = explain_change(current, rendering, image_ids)
        if reasons:
            actions.append(Action(RECREATE, spec.name, tuple(reasons) + ((ON_DEMAND_LEFT,) if on_demand else ()),
                                  spec, current, rendering))
        elif on_demand:
            # Stopped, running or asleep: the activator's to decide (orchestrator/activator/), not `up`'s.
            actions.append(Action(NOOP, spec.name, (f"on demand ({'running' if current.running else 'stopped'}): "
                                                    "left as it is",), spec, current, rendering))
        elif not current.running:
            actions.append(Action(START, spec.name, (f"was {current.state}",), spec, current, rendering))
        else:
            actions.append(Action(NOOP, spec.name, ("up to date",), spec, current, rendering))
    if selected is None:
        for name, current in observed_by_name.items():
            if name not in configured:
                kind = REMOVE if remove_orphans else ORPHAN
                actions.append(Action(kind, name, ("no longer in the config",), None, current))
    return actions


def is_loading(action: Action) -> bool:
    """Left running by an earlier run but not healthy yet: its server is still taking its memory."""
    return (action.kind == NOOP and action.observed is not None and action.observed.running
            and action.observed.health == "starting")


def start_after(actions: Iterable[Action]) -> list[StartAfter]:
    """Which of the instances these actions start must wait for another on a shared GPU: one
    started in this run, one still loading since an earlier run, or a container this run removes
    (until it is gone, its memory free)."""
    actions = list(actions)
    return start_order(((a.instance, a.desired.gpu) for a in actions
                        if a.kind in (CREATE, RECREATE, START) and not starts_on_demand(a)),
                       loading=((a.instance, a.spec.gpu) for a in actions if is_loading(a) and a.spec),
                       removing=((a.instance, gpu) for a in actions if a.kind == REMOVE
                                 for gpu in [removed_gpus(a)] if gpu is not None))


def starts_on_demand(action: Action) -> bool:
    """A create / recreate `up` leaves stopped: the instance is on demand (the activator starts it)."""
    workload = action.spec.workload if action.spec is not None else None
    return action.kind in (CREATE, RECREATE) and workload is not None and workload.on_demand


def removed_gpus(action: Action) -> GpuRequest | None:
    """The GPUs of a container about to be removed: its spec's, or for an orphan what its label
    recorded (None when that cannot be read: it is then not waited for)."""
    if action.spec is not None:
        return action.spec.gpu
    recorded = action.observed.labels.get(LABEL_GPUS) if action.observed is not None else None
    try:
        return GpuRequest.parse(recorded) if recorded else None
    except ValueError:
        return None


# Our own labels are bookkeeping derived from the settings compared anyway (URL, GPUs, config
# path): comparing them would recreate containers whenever a release adds one.
_OWN_LABEL_PREFIX = "io.vllm-orch."


def explain_change(current: Observed, container: ContainerSpec, image_ids: dict[str, str]) -> list[str]:
    """Why the running container no longer matches the desired one (an instance's Docker
    rendering; [] when it does), one reason per setting whose effect differs. Settings the
    container's record lacks count as their old default; settings this release does not know
    are ignored."""
    reasons: list[str] = []
    old = current.spec_json
    if old is None:  # no record to compare with (made by hand, or a damaged label)
        if current.config_hash != container.config_hash():
            reasons.append("spec changed (the container has no readable record of its settings)")
    else:
        if container.secrets_as_files and "secret_files" not in old and old.get("secret_env"):
            # Made by a release that put the secrets in the environment: compared with today's
            # config delivered that way, so the upgrade alone recreates nothing; a changed
            # setting or secret value recreates it, into the file form.
            container = container.secrets_in_env()
        new = container.to_json()
        owner, mine = old.get("labels", {}).get(LABEL_CONFIG), new.get("labels", {}).get(LABEL_CONFIG)
        if owner and owner != mine:
            reasons.append(f"adopted: made by {owner}, now {mine}'s")
        for key, value in new.items():
            if key in old:
                reasons += diff_specs(_comparable(key, old[key]), _comparable(key, value), key)
            else:
                default = ADDED_RECORD_KEYS[key](container) if key in ADDED_RECORD_KEYS else value
                reasons += diff_specs(_comparable(key, default), _comparable(key, value), key)
        for key in [k for k in old if k not in new and k in ADDED_RECORD_KEYS]:
            # Set when the container was made, unset now: an option added later leaves the record then.
            reasons += diff_specs(_comparable(key, old[key]), _comparable(key, ADDED_RECORD_KEYS[key](container)), key)
        if not reasons and not secrets_unchanged(old, current.config_hash, container):
            reasons.append("a secret value changed")
    image_id = image_ids.get(container.image)
    if image_id and current.image_id and image_id != current.image_id:
        reasons.append(f"image {container.image} was rebuilt ({_short(current.image_id)} -> {_short(image_id)})")
    return reasons


def _comparable(key: str, value: Any) -> Any:
    if key == "labels" and isinstance(value, dict):
        return {k: v for k, v in value.items() if not k.startswith(_OWN_LABEL_PREFIX)}
    return value


def secrets_unchanged(record: dict[str, Any], recorded_hash: str, container: Any) -> bool:
    """Every release labels a container with its settings record (secrets masked) and a sha256
    of that record plus digests of the secret values. Re-hashing the record with today's secret
    digests gives the same hash exactly when no secret value changed, whatever the release."""
    return config_digest(record, container.secret_env) == recorded_hash


def _short(image_id: str) -> str:
    return image_id.split(":")[-1][:12]


def diff_specs(old: Any, new: Any, path: str = "") -> list[str]:
    """Readable differences between two spec documents, one line per changed field."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines: list[str] = []
        for key in list(old) + [k for k in new if k not in old]:
            lines += diff_specs(old.get(key), new.get(key), f"{path}.{key}" if path else key)
        return lines
    if old == new:
        return []
    if isinstance(old, list) and isinstance(new, list) and all(isinstance(t, str) for t in old + new):
        return [f"{path}: {change}" for change in _token_changes(old, new)]
    return [f"{path}: {_show(old)} -> {_show(new)}"]


def _token_changes(old: list[str], new: list[str]) -> list[str]:
    changes = []
    import difflib  # only when something changed

    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for op, a1, a2, b1, b2 in matcher.get_opcodes():
        if op == "replace":
            # Name the flag whose value changed: "--max-model-len 4096 -> 8192".
            flag = old[a1 - 1] + " " if a1 > 0 and old[a1 - 1].startswith("-") else ""
            changes.append(f"{flag}{' '.join(old[a1:a2])} -> {' '.join(new[b1:b2])}")
        elif op == "delete":
            changes.append(f"removed {' '.join(old[a1:a2])}")
        elif op == "insert":
            changes.append(f"added {' '.join(new[b1:b2])}")
    return changes


def _show(value: Any) -> str:
    if value is None:
        return "(unset)"
    return json.dumps(value) if not isinstance(value, str) else value
