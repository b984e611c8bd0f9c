"""Upgrades never restart a loaded model by themselves: containers made by an earlier release
(what it put on them is recorded in tests/fixtures/releases/<commit>.json by record.py, from the
real engine) are planned as `noop` by this one when their config did not change, and recreated,
naming the setting, when it did."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.container import ADDED_RECORD_KEYS as ADDED_KEYS
from orchestrator.plan import NOOP, RECREATE, Observed, plan_up
from orchestrator.labels import LABEL_HASH, LABEL_INSTANCE, LABEL_OWNER
from tests.builders import container_of, containers_of, load_data, resolve_data

RELEASES = Path(__file__).resolve().parents[1] / "fixtures" / "releases"
RECORDINGS = sorted(RELEASES.glob("*.json"))
SECRETS = {"UPGRADE_FIXTURE_TOKEN": "fixture-token-value"}
IMAGE_ID = "sha256:" + "ab" * 32


def recorded(path: Path) -> dict:
    return json.loads(path.read_text())


def observed(release: dict) -> list[Observed]:
    """The containers as `up` observes them: labels, running, the image they were made from."""
    rows = []
    for c in release["containers"]:
        labels = c["Config"]["Labels"]
        rows.append(Observed(id=c["Name"], name=c["Name"].lstrip("/"), instance=labels[LABEL_INSTANCE],
                             owner=labels[LABEL_OWNER], state="running", status="Up 2 hours (healthy)",
                             image_id=IMAGE_ID, config_hash=labels[LABEL_HASH], labels=labels))
    return rows


def desired(release: dict, *, edit=None, env=SECRETS):
    """This release's resolution of the same file, placed where the recording had it."""
    data = load_data(RELEASES / "upgrade.toml")
    if edit:
        edit(data)
    path = Path(release["config_dir"]) / "upgrade.toml"
    return resolve_data(data, path, project="upgrade-fixture", env=env).instances


def plan(release: dict, **kwargs):
    specs = desired(release, **kwargs)
    return {a.instance: a for a in plan_up(specs, observed(release), containers=containers_of(specs),
                                           image_ids={"vllm-orch/standin:latest": IMAGE_ID})}


def test_there_is_a_recording_of_the_first_release():
    assert "8a54adf.json" in [p.name for p in RECORDINGS]


@pytest.mark.parametrize("recording", RECORDINGS, ids=lambda p: p.stem)
def test_unchanged_config_plans_no_change_for_an_earlier_release(recording):
    release = recorded(recording)
    actions = plan(release)
    assert {name: a.kind for name, a in actions.items()} == {"plain": NOOP, "secrets": NOOP, "gpu": NOOP}, \
        {name: a.reasons for name, a in actions.items()}


@pytest.mark.parametrize("recording", RECORDINGS, ids=lambda p: p.stem)
def test_a_changed_setting_recreates_only_its_instance_and_names_it(recording):
    def edit(data):
        data["instance"]["plain"]["server"]["max_model_len"] = 512

    actions = plan(recorded(recording), edit=edit)
    assert actions["plain"].kind == RECREATE and actions["secrets"].kind == NOOP
    assert "command: --max-model-len 256 -> 512" in actions["plain"].reasons


@pytest.mark.parametrize("recording", RECORDINGS, ids=lambda p: p.stem)
def test_a_changed_secret_recreates_without_showing_it(recording):
    actions = plan(recorded(recording), env={"UPGRADE_FIXTURE_TOKEN": "rotated-token"})
    assert actions["secrets"].kind == RECREATE
    assert actions["secrets"].reasons == ("a secret value changed",)
    assert "rotated-token" not in json.dumps([a.to_json() for a in actions.values()])
    assert actions["plain"].kind == NOOP


def test_every_recorded_setting_is_known_or_declared_as_added():
    """A key added to the record must say what containers made without it had (ADDED_KEYS),
    or every container of the earlier release would be recreated by the upgrade."""
    release = recorded(RELEASES / "8a54adf.json")
    old_keys = set()
    for c in release["containers"]:
        old_keys |= set(json.loads(c["Config"]["Labels"]["io.vllm-orch.spec"]))
    new_keys = set(container_of(desired(release)[0]).to_json())
    assert new_keys - old_keys <= set(ADDED_KEYS), new_keys - old_keys - set(ADDED_KEYS)


def test_an_added_setting_left_at_its_default_does_not_recreate(monkeypatch):
    """What a future release adding a setting relies on: absent from the record and at its
    declared default is no change; set to something else, it is one, named."""
    from orchestrator.container import ContainerSpec

    release = recorded(RELEASES / "8a54adf.json")
    original = ContainerSpec.to_json
    monkeypatch.setattr(ContainerSpec, "to_json", lambda self: {**original(self), "cpuset": None})
    monkeypatch.setitem(ADDED_KEYS, "cpuset", lambda container: None)
    assert {a.kind for a in plan(release).values()} == {NOOP}
    monkeypatch.setattr(ContainerSpec, "to_json", lambda self: {**original(self), "cpuset": "0-3"})
    actions = plan(release)
    assert actions["plain"].kind == RECREATE and actions["plain"].reasons == ("cpuset: (unset) -> 0-3",)
