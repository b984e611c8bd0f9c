"""Deciding what `up` does: create, recreate (with reasons), start, leave alone, orphans."""

from __future__ import annotations

import json

from orchestrator.config.loader import load_config
from orchestrator.plan import CREATE, NOOP, ORPHAN, RECREATE, REMOVE, START, Observed, plan_up
from orchestrator.resolve import LABEL_SPEC, resolve

CONFIG = """
[docker]
image = "img:1"
[instance.a.server]
port = 8001
max_model_len = {mml}
[instance.b.server]
port = 8002
"""


def specs(write_toml, mml: int = 4096):
    path = write_toml(CONFIG.format(mml=mml))
    return resolve(load_config(path, env={}).data, config_path=path, host_env={}).instances


def observed_for(spec, state: str = "running", image_id: str = "sha256:aaa") -> Observed:
    container = spec.container
    return Observed(
        id=f"id-{spec.name}", name=container.name, instance=spec.name, owner="vllm-orch", state=state,
        status="Up 1 minute" if state == "running" else "Exited (0) 1 minute ago", image_id=image_id,
        config_hash=container.config_hash(),
        labels={LABEL_SPEC: json.dumps(container.to_json())},
    )


def kinds(actions):
    return {a.instance: a.kind for a in actions}


def test_fresh_project_creates_everything(write_toml):
    actions = plan_up(specs(write_toml), [], image_ids={"img:1": "sha256:aaa"})
    assert kinds(actions) == {"a": CREATE, "b": CREATE}


def test_second_up_changes_nothing(write_toml):
    desired = specs(write_toml)
    actions = plan_up(desired, [observed_for(s) for s in desired], image_ids={"img:1": "sha256:aaa"})
    assert kinds(actions) == {"a": NOOP, "b": NOOP}


def test_changed_flag_recreates_only_that_instance_and_says_why(write_toml):
    before = specs(write_toml, mml=4096)
    after = specs(write_toml, mml=8192)
    actions = plan_up(after, [observed_for(s) for s in before], image_ids={"img:1": "sha256:aaa"})
    assert kinds(actions) == {"a": RECREATE, "b": NOOP}
    reasons = [a for a in actions if a.instance == "a"][0].reasons
    assert "command: --max-model-len 4096 -> 8192" in reasons


def test_rebuilt_image_recreates(write_toml):
    desired = specs(write_toml)
    actions = plan_up(desired, [observed_for(s) for s in desired], image_ids={"img:1": "sha256:bbb"})
    assert kinds(actions) == {"a": RECREATE, "b": RECREATE}
    assert "was rebuilt" in actions[0].reasons[0]


def test_stopped_container_is_started(write_toml):
    desired = specs(write_toml)
    observed = [observed_for(desired[0], state="exited"), observed_for(desired[1])]
    assert kinds(plan_up(desired, observed, image_ids={})) == {"a": START, "b": NOOP}


def test_orphans_are_reported_and_removed_only_when_asked(write_toml):
    desired = specs(write_toml)
    gone = Observed("id-old", "fleet-old", "old", "vllm-orch", "running", "Up", "", "x", {})
    observed = [observed_for(s) for s in desired] + [gone]
    assert kinds(plan_up(desired, observed, image_ids={}))["old"] == ORPHAN
    assert kinds(plan_up(desired, observed, image_ids={}, remove_orphans=True))["old"] == REMOVE


def test_selected_names_limit_the_plan_and_skip_orphan_handling(write_toml):
    desired = specs(write_toml)
    gone = Observed("id-old", "fleet-old", "old", "vllm-orch", "running", "Up", "", "x", {})
    actions = plan_up(desired, [gone], image_ids={}, selected={"b"})
    assert kinds(actions) == {"b": CREATE}


def test_disabled_instance_with_a_container_is_removed(write_toml):
    desired = specs(write_toml)
    observed = [observed_for(s) for s in desired]
    path = write_toml(CONFIG.format(mml=4096) + "[instance.b.control]\nenabled = false\n")
    now = resolve(load_config(path, env={}).data, config_path=path, host_env={}).instances
    assert kinds(plan_up(now, observed, image_ids={})) == {"a": NOOP, "b": REMOVE}
