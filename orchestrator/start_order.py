"""Which instances must start one after another because they share a GPU. Pure: data in, data out.

vLLM sizes its KV cache from the GPU memory that is free when it starts. Two servers starting
together on one GPU both see it free; the second then dies for want of the memory the first
took (vllm-project/vllm#10533). So an instance that shares a GPU with an instance started earlier
in the same run (config order), or with one that an earlier run started and that is still
loading, waits until that one answers /health; one that shares a GPU with a container this run
removes (an orphan, a disabled instance) waits until it is gone and its memory free. Every other
instance starts at once, in parallel, as before.

"all" shares with every instance that uses GPUs; "none" shares with nothing. Host GPU ids are
compared as written: the same GPU named once by index and once by UUID is not recognised.
"""

from __future__ import annotations

from typing import Any, Iterable

from orchestrator.spec import GpuRequest
from orchestrator.value import Value


class StartAfter(Value):
    """`instance` starts only once `after` answers /health (or, with `removal`, once `after`'s
    container is removed); `shared` names what they share."""

    instance: str
    after: str
    shared: str  # "GPU 0", "GPUs 0,1", "all GPUs"
    removal: bool = False

    def describe(self) -> str:
        if self.removal:
            return f"start {self.instance} after removing {self.after}: both on {self.shared}"
        return f"start {self.instance} after {self.after}: both on {self.shared}"

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"instance": self.instance, "after": self.after, "shared": self.shared,
                               "reason": self.describe()}
        if self.removal:
            doc["removal"] = True
        return doc


def shared_gpus(a: GpuRequest, b: GpuRequest) -> str | None:
    """What two GPU requests have in common, in words; None when they cannot meet on a GPU."""
    if a.mode == "none" or b.mode == "none":
        return None
    if a.mode == "all" and b.mode == "all":
        return "all GPUs"
    if a.mode == "all" or b.mode == "all":
        common = list(b.ids if a.mode == "all" else a.ids)
    else:
        common = [i for i in a.ids if i in b.ids]
    if not common:
        return None
    return ("GPUs " if len(common) > 1 else "GPU ") + ",".join(map(str, common))


def start_order(starting: Iterable[tuple[str, GpuRequest]],
                loading: Iterable[tuple[str, GpuRequest]] = (),
                removing: Iterable[tuple[str, GpuRequest]] = ()) -> list[StartAfter]:
    """For instances about to start (in config order): each waits for the earlier ones it shares a
    GPU with. Only the direct waits are kept: on one GPU, a, b, c give "b after a" and "c after
    b" (c after a follows). Instances on disjoint GPUs get no entry and start in parallel.
    `loading`: instances already running but not yet healthy (still taking their memory); an
    instance sharing a GPU with one waits for it too, unless an instance it waits for already does.
    `removing`: containers this run removes; an instance sharing a GPU with one waits for the
    removal, unless an instance it waits for already does."""
    starting, loading, removing = list(starting), list(loading), list(removing)
    edges: list[StartAfter] = []
    before: dict[str, set[str]] = {}  # instance -> everything that must be healthy before it starts
    for index, (name, gpu) in enumerate(starting):
        direct: list[StartAfter] = []
        for earlier, earlier_gpu in reversed(starting[:index]):  # nearest first
            shared = shared_gpus(earlier_gpu, gpu)
            if shared and not any(earlier in before[d.after] for d in direct):
                direct.append(StartAfter(name, earlier, shared))
        before[name] = set().union(*({d.after} | before[d.after] for d in direct)) if direct else set()
        # Instances that are not started here: still loading, or about to be removed.
        others = [(other, other_gpu, False) for other, other_gpu in loading]
        others += [(other, other_gpu, True) for other, other_gpu in removing]
        for other, other_gpu, removal in others:
            shared = shared_gpus(other_gpu, gpu)
            if shared and other not in before[name]:
                direct.append(StartAfter(name, other, shared, removal=removal))
                before[name].add(other)
        edges += reversed(direct)
    return edges


def waits_for(edges: Iterable[StartAfter]) -> dict[str, list[StartAfter]]:
    """instance -> the edges it waits on."""
    found: dict[str, list[StartAfter]] = {}
    for edge in edges:
        found.setdefault(edge.instance, []).append(edge)
    return found
