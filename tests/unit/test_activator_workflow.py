"""The activator's part of `up`'s preflight: what stops `up` before anything changes."""

from __future__ import annotations

from types import SimpleNamespace

from orchestrator.activator import workflow
from orchestrator.project import open_project
from tests.unit.test_activator import CONFIG


class Backend(SimpleNamespace):
    def image_ids(self, images, missing_ok=False):
        return {image: "sha256:1" for image in images} if self.has_image else {}


def test_a_remote_engine_and_a_missing_image_are_both_reported_before_any_change(write_toml):
    project = open_project(write_toml(CONFIG), env={}, strict=False, on_host=False)
    remote = Backend(engine=SimpleNamespace(address="tcp://10.0.0.7:2375"), has_image=False)
    problems = workflow.preflight(project, remote)
    assert len(problems) == 2
    assert "image 'vllm-orch/activator:latest' not found" in problems[0]
    assert problems[1] == ("on-demand instances need a local Docker engine (the activator runs next to it), "
                           "not tcp://10.0.0.7:2375")
    local = Backend(engine=SimpleNamespace(address="unix:///var/run/docker.sock"), has_image=True)
    assert workflow.preflight(project, local) == []


def test_an_activator_that_is_not_running_is_made_again_and_a_running_one_is_left():
    import json

    from orchestrator.activator import service
    from orchestrator.labels import LABEL_SPEC

    wanted = service.Wanted("p", "/c.toml", "/s/state.json", ("/s:/s:ro",), ports=(41001, 41002))
    observed = {"Id": "x", "ImageID": "sha256:1", "Labels": {LABEL_SPEC: json.dumps(service.record(wanted))}}
    assert service.plan(wanted, {**observed, "State": "running"}, "sha256:1").kind == service.NOOP
    # Its port taken after a reboot: it exits at once and Docker restarts it, in a loop.
    step = service.plan(wanted, {**observed, "State": "restarting"}, "sha256:1")
    assert step.kind == service.RECREATE and step.reasons == ("was restarting: made again on free ports",)


def test_gpu_ids_all_shares_the_budget_with_an_instance_on_one_named_gpu(write_toml):
    from orchestrator.activator.budget import Holder, to_free
    from orchestrator.activator.workflow import build_state

    text = CONFIG.replace('[instance.chat.server]', '[instance.chat.control]\ngpu_ids = "all"\n[instance.chat.server]')
    text = text.replace('[instance.embed.server]', '[instance.embed.control]\ngpu_ids = "0"\n[instance.embed.server]')
    text = text.replace('enable_sleep_mode = true', 'gpu_memory_utilization = 0.6')
    state = build_state(open_project(write_toml(text), env={}, strict=False, on_host=False), "unix:///x.sock")
    chat, embed = sorted(state.instances, key=lambda i: i.name)
    assert chat.gpus == ("all", "0") and embed.gpus == ("0",)
    # Starting chat (all GPUs, 0.6) must move embed (0.6 of GPU 0) out of the way.
    holder = Holder("embed", embed.gpus, embed.share, last_used=1.0, busy=False, movable=True)
    assert to_free(chat.gpus, chat.share, [holder]) == ["embed"]


def test_the_activator_is_the_same_whether_up_runs_from_a_login_shell_or_from_cron(write_toml, monkeypatch,
                                                                                     tmp_path):
    import os

    from orchestrator.activator import service

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("VLLM_ORCH_STATE_DIR", raising=False)
    project = open_project(write_toml(CONFIG), env={}, strict=False, on_host=False)
    backend = Backend(engine=SimpleNamespace(address="unix:///var/run/docker.sock"), has_image=True)
    running = {"State": "running", "Labels": {service.LABEL_PORTS: "41001,41002"}}
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run-user"))
    from_shell = service.record(workflow._wanted(project, backend, running))
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    from_cron = service.record(workflow._wanted(project, backend, running))
    assert from_shell == from_cron
