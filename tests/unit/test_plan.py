"""Deciding what `up` does: create, recreate (with reasons), start, leave alone, orphans."""

from __future__ import annotations

from orchestrator.plan import CREATE, NOOP, ORPHAN, RECREATE, REMOVE, START, Observed, plan_up
from tests.builders import containers_of, instances, observed_for

CONFIG = """
[docker]
image = "img:1"
[instance.a.server]
port = 8001
max_model_len = {mml}
[instance.b.server]
port = 8002
"""


def specs(tmp_path, mml: int = 4096):
    return instances(CONFIG.format(mml=mml), tmp_path)


def kinds(actions):
    return {a.instance: a.kind for a in actions}


def test_fresh_project_creates_everything(tmp_path):
    desired = specs(tmp_path)
    actions = plan_up(desired, [], containers=containers_of(desired), image_ids={"img:1": "sha256:aaa"})
    assert kinds(actions) == {"a": CREATE, "b": CREATE}


def test_second_up_changes_nothing(tmp_path):
    desired = specs(tmp_path)
    actions = plan_up(desired, [observed_for(s) for s in desired], containers=containers_of(desired), image_ids={"img:1": "sha256:aaa"})
    assert kinds(actions) == {"a": NOOP, "b": NOOP}


def test_changed_flag_recreates_only_that_instance_and_says_why(tmp_path):
    before = specs(tmp_path, mml=4096)
    after = specs(tmp_path, mml=8192)
    actions = plan_up(after, [observed_for(s) for s in before], containers=containers_of(after), image_ids={"img:1": "sha256:aaa"})
    assert kinds(actions) == {"a": RECREATE, "b": NOOP}
    reasons = [a for a in actions if a.instance == "a"][0].reasons
    assert "command: --max-model-len 4096 -> 8192" in reasons


def test_rebuilt_image_recreates(tmp_path):
    desired = specs(tmp_path)
    actions = plan_up(desired, [observed_for(s) for s in desired], containers=containers_of(desired), image_ids={"img:1": "sha256:bbb"})
    assert kinds(actions) == {"a": RECREATE, "b": RECREATE}
    assert "was rebuilt" in actions[0].reasons[0]


def test_stopped_container_is_started(tmp_path):
    desired = specs(tmp_path)
    observed = [observed_for(desired[0], state="exited"), observed_for(desired[1])]
    assert kinds(plan_up(desired, observed, containers=containers_of(desired), image_ids={})) == {"a": START, "b": NOOP}


def test_orphans_are_reported_and_removed_only_when_asked(tmp_path):
    desired = specs(tmp_path)
    gone = Observed("id-old", "fleet-old", "old", "vllm-orch", "running", "Up", "", "x", {})
    observed = [observed_for(s) for s in desired] + [gone]
    assert kinds(plan_up(desired, observed, containers=containers_of(desired), image_ids={}))["old"] == ORPHAN
    assert kinds(plan_up(desired, observed, containers=containers_of(desired), image_ids={}, remove_orphans=True))["old"] == REMOVE


def test_selected_names_limit_the_plan_and_skip_orphan_handling(tmp_path):
    desired = specs(tmp_path)
    gone = Observed("id-old", "fleet-old", "old", "vllm-orch", "running", "Up", "", "x", {})
    actions = plan_up(desired, [gone], containers=containers_of(desired), image_ids={}, selected={"b"})
    assert kinds(actions) == {"b": CREATE}


def test_disabled_instance_with_a_container_is_removed(tmp_path):
    desired = specs(tmp_path)
    observed = [observed_for(s) for s in desired]
    now = instances(CONFIG.format(mml=4096) + "[instance.b.control]\nenabled = false\n", tmp_path)
    assert kinds(plan_up(now, observed, containers=containers_of(now), image_ids={})) == {"a": NOOP, "b": REMOVE}


ON_DEMAND = CONFIG + """
[instance.a.docker]
on_demand = true
"""


def test_an_on_demand_instance_is_created_not_started_and_then_left_as_it_is(tmp_path):
    from orchestrator.plan import ON_DEMAND_NOTE, start_after, starts_on_demand

    desired = instances(ON_DEMAND.format(mml=4096), tmp_path)
    actions = plan_up(desired, [], containers=containers_of(desired), image_ids={})
    created = [a for a in actions if a.instance == "a"][0]
    assert created.kind == CREATE and ON_DEMAND_NOTE in created.reasons and starts_on_demand(created)
    assert all(edge.instance != "a" for edge in start_after(actions))
    for state in ("created", "exited", "running"):  # stopped, stopped by the activator, running
        again = plan_up(desired, [observed_for(s, state=state) for s in desired], containers=containers_of(desired), image_ids={})
        assert kinds(again)["a"] == NOOP, state
    changed = instances(ON_DEMAND.format(mml=8192), tmp_path)
    recreated = plan_up(changed, [observed_for(s, state="running") for s in desired], containers=containers_of(changed), image_ids={})
    action = [a for a in recreated if a.instance == "a"][0]
    assert action.kind == RECREATE and starts_on_demand(action)
