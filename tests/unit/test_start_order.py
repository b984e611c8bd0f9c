"""Shared GPUs start in turn: the decision as data (start_order.py) and how apply() follows it."""

from __future__ import annotations

import threading
import time

import pytest

from orchestrator.backends.docker import ActionResult, ContainerRun, DockerBackend
from orchestrator.errors import InstanceFailed
from orchestrator.spec import GpuRequest
from orchestrator.start_order import shared_gpus, start_order


def gpus(value) -> GpuRequest:
    return GpuRequest.parse(value)


def order(*instances: tuple[str, object]) -> list[str]:
    return [edge.describe() for edge in start_order((name, gpus(value)) for name, value in instances)]


def test_disjoint_gpus_start_together():
    assert order(("a", "0"), ("b", "1"), ("c", "2,3"), ("d", "none")) == []


def test_one_gpu_is_a_chain_in_config_order():
    assert order(("a", "0"), ("b", "0"), ("c", 0)) == ["start b after a: both on GPU 0", "start c after b: both on GPU 0"]


def test_overlapping_sets_wait_for_each_earlier_neighbour():
    assert order(("a", "0,1"), ("b", "1,2"), ("c", "3"), ("d", "2,3")) == [
        "start b after a: both on GPU 1",
        "start d after b: both on GPU 2",
        "start d after c: both on GPU 3",
    ]


def test_all_meets_every_gpu_user_and_none_meets_nothing():
    assert order(("a", "0"), ("n", "none"), ("b", "1"), ("every", "all"), ("z", "none")) == [
        "start every after a: both on GPU 0",
        "start every after b: both on GPU 1",
    ]
    assert order(("x", "all"), ("y", "all")) == ["start y after x: both on all GPUs"]
    assert order(("x", "all"), ("y", "2,5")) == ["start y after x: both on GPUs 2,5"]


def test_a_wait_implied_by_the_chain_is_not_repeated():
    # c shares GPU 0 with a and b; b already waits for a, so c waits for b alone.
    edges = start_order([("a", gpus("0")), ("b", gpus("0,1")), ("c", gpus("0,1"))])
    assert [(e.instance, e.after) for e in edges] == [("b", "a"), ("c", "b")]
    assert edges[1].to_json() == {"instance": "c", "after": "b", "shared": "GPUs 0,1",
                                  "reason": "start c after b: both on GPUs 0,1"}


@pytest.mark.parametrize("a, b, shared", [
    ("0", "0", "GPU 0"), ("0,1", "1,0", "GPUs 0,1"), ("0", "1", None), ("none", "all", None), ("all", "3", "GPU 3"),
])
def test_shared_gpus_in_words(a, b, shared):
    assert shared_gpus(gpus(a), gpus(b)) == shared


# --------------------------------------------------------------------------- apply follows the order
class RecordingBackend(DockerBackend):
    """DockerBackend with the engine calls replaced by a log of what started when (the real
    engine runs the same order in tests/integration/test_start_order.py)."""

    def __init__(self):
        super().__init__(engine=object())
        self.events: list[str] = []
        self.lock = threading.Lock()

    def apply_one(self, action, steps):
        with self.lock:
            self.events.append(f"start {action.instance}")
        time.sleep(0.05)
        return ActionResult(action, True, "created")


def actions(*instances: tuple[str, str]):
    from orchestrator.plan import CREATE, Action
    from orchestrator.spec import InstanceSpec

    return [Action(CREATE, name, ("new",), InstanceSpec(name=name, enabled=True, background=True, log_file="/l",
                                                           gpu=gpus(value), server={}))
            for name, value in instances]


def test_apply_starts_a_chain_in_turn_and_the_rest_at_once():
    backend = RecordingBackend()
    plan = actions(("a", "0"), ("b", "0"), ("c", "1"))

    def healthy(action):
        with backend.lock:
            backend.events.append(f"healthy {action.instance}")

    notes: list[str] = []
    results = backend.run_actions(plan, start_after=start_order((a.instance, a.spec.gpu) for a in plan),
                            await_healthy=healthy, progress=notes.append)
    assert [r.action.instance for r in results] == ["a", "b", "c"] and all(r.ok for r in results)
    events = backend.events
    assert events.index("healthy a") < events.index("start b")
    assert events.index("start c") < events.index("healthy a")  # c did not wait for anyone
    assert "healthy b" not in events  # nothing waits for b: no wait here (that is --wait's job)
    assert notes == ["start b after a: both on GPU 0"]


def test_a_failure_early_in_a_chain_fails_the_rest_without_starting_them():
    backend = RecordingBackend()
    plan = actions(("a", "0"), ("b", "0"), ("c", "0"), ("d", "1"))

    def healthy(action):
        raise InstanceFailed(f"instance {action.instance!r} exited (Exited (1))")

    results = {r.action.instance: r for r in backend.run_actions(
        plan, start_after=start_order((a.instance, a.spec.gpu) for a in plan), await_healthy=healthy)}
    assert sorted(backend.events) == ["start a", "start d"]
    assert results["a"].ok and str(results["a"].health_error) == "instance 'a' exited (Exited (1))"
    assert not results["b"].ok and results["b"].detail == (
        "not started: it waits for a (both on GPU 0), which did not start: instance 'a' exited (Exited (1))")
    assert not results["c"].ok and results["c"].detail.startswith("not started: it waits for b (both on GPU 0)")
    assert results["d"].ok


def test_what_this_run_starts_is_ordered_after_what_it_removes_and_starts():
    from orchestrator.plan import NOOP, REMOVE, START, start_after

    a, b, c, d = actions(("a", "0"), ("b", "0"), ("c", "0"), ("d", "0"))
    plan = [a.replace(kind=NOOP), b, c.replace(kind=REMOVE), d.replace(kind=START)]
    # a: left as it is (not loading); c: removed, so b waits until it is gone
    assert [e.describe() for e in start_after(plan)] == ["start b after removing c: both on GPU 0",
                                                         "start d after b: both on GPU 0"]


# --------------------------------------------------------------------------- instances still loading
def running(instance: str, health: str = "health: starting"):
    """A container an earlier run left running, as `up` observes it (Docker's health in brackets)."""
    from orchestrator.plan import Observed

    return Observed(id=instance, name=instance, instance=instance, owner="vllm-orch", state="running",
                    status=f"Up 1 minute ({health})" if health else "Up 1 minute", image_id="", config_hash="")


def test_an_instance_still_loading_from_an_earlier_run_is_waited_for():
    """Adding a server to a GPU whose first server is still loading must not start them together."""
    loading = [("old", gpus("0"))]
    edges = start_order([("new", gpus("0")), ("later", gpus("0")), ("other", gpus("1"))], loading=loading)
    assert [e.describe() for e in edges] == ["start new after old: both on GPU 0", "start later after new: both on GPU 0"]


def test_the_plan_counts_only_running_unhealthy_instances_as_loading():
    from orchestrator.plan import CREATE, NOOP, start_after

    old, new = actions(("old", "0"), ("new", "0"))
    for status, waits in (("health: starting", True), ("healthy", False), ("unhealthy", False), ("", False)):
        plan = [old.replace(kind=NOOP, observed=running("old", status)), new.replace(kind=CREATE)]
        assert bool(start_after(plan)) is waits, status


def test_apply_waits_for_a_loading_instance_without_touching_it():
    from orchestrator.plan import NOOP, start_after

    backend = RecordingBackend()
    old, new, free = actions(("old", "0"), ("new", "0"), ("free", "1"))
    old = old.replace(kind=NOOP, observed=running("old"))
    plan = [old, new, free]

    def healthy(action):
        with backend.lock:
            backend.events.append(f"healthy {action.instance}")

    results = backend.run_actions(plan, start_after=start_after(plan), await_healthy=healthy)
    assert [r.action.instance for r in results] == ["new", "free"] and all(r.ok for r in results)
    assert "start old" not in backend.events  # left as it is
    assert backend.events.index("healthy old") < backend.events.index("start new")


def test_a_loading_instance_that_dies_keeps_the_next_one_from_starting():
    from orchestrator.plan import NOOP, start_after

    backend = RecordingBackend()
    old, new = actions(("old", "0"), ("new", "0"))
    old = old.replace(kind=NOOP, observed=running("old"))

    def healthy(action):
        raise InstanceFailed(f"instance {action.instance!r} exited (Exited (1))")

    (result,) = backend.run_actions([old, new], start_after=start_after([old, new]), await_healthy=healthy)
    assert backend.events == [] and not result.ok
    assert result.detail == ("not started: it waits for old (both on GPU 0), which did not become healthy: "
                             "instance 'old' exited (Exited (1))")


# --------------------------------------------------------------------------- containers being removed
def test_an_instance_waits_for_the_removal_of_a_container_on_its_gpu():
    edges = start_order([("new", gpus("0")), ("next", gpus("0")), ("free", gpus("1"))],
                        removing=[("gone", gpus("0,2"))])
    assert [e.describe() for e in edges] == ["start new after removing gone: both on GPU 0",
                                             "start next after new: both on GPU 0"]
    assert edges[0].to_json()["removal"] is True and "removal" not in edges[1].to_json()


def test_the_plan_reads_an_orphans_gpus_from_its_label():
    from orchestrator.plan import CREATE, ORPHAN, REMOVE, Action, Observed, start_after

    orphan = Observed(id="x", name="p-old", instance="old", owner="vllm-orch", state="running", status="Up",
                      image_id="", config_hash="", labels={"io.vllm-orch.gpus": "0"})
    (new,) = actions(("new", "0"))
    plan = [new.replace(kind=CREATE), Action(REMOVE, "old", ("no longer in the config",), None, orphan)]
    assert [e.describe() for e in start_after(plan)] == ["start new after removing old: both on GPU 0"]
    kept = [new, Action(ORPHAN, "old", ("no longer in the config",), None, orphan)]  # left running: nothing to wait for
    assert start_after(kept) == []
    unreadable = orphan.replace(labels={"io.vllm-orch.gpus": "?"})
    assert start_after([new, Action(REMOVE, "old", (), None, unreadable)]) == []


def test_apply_starts_after_the_removal_and_does_not_await_health_of_the_removed():
    from orchestrator.plan import REMOVE

    backend = RecordingBackend()
    new, old = actions(("new", "0"), ("old", "0"))
    plan = [new, old.replace(kind=REMOVE)]
    awaited: list[str] = []
    results = backend.apply(None, plan, ContainerRun(await_healthy=lambda a: awaited.append(a.instance)))
    assert all(r.ok for r in results) and awaited == []
    assert backend.events == ["start old", "start new"]  # (the recording backend logs every action as "start")


def test_a_failed_removal_keeps_the_instance_on_its_gpu_from_starting():
    from orchestrator.plan import REMOVE

    class FailingRemoval(RecordingBackend):
        def apply_one(self, action, steps):
            if action.kind == REMOVE:
                return ActionResult(action, False, "the engine refused")
            return super().apply_one(action, steps)

    backend = FailingRemoval()
    new, old = actions(("new", "0"), ("old", "0"))
    plan = [new, old.replace(kind=REMOVE)]
    results = {r.action.instance: r for r in backend.apply(None, plan, ContainerRun())}
    assert backend.events == [] and not results["new"].ok
    assert results["new"].detail == ("not started: old (both on GPU 0) could not be removed and may still hold "
                                     "the GPU's memory: the engine refused")
