"""The Docker backend's decisions and engine calls, against the in-memory engine of
fake_engine.py (a stand-in for unit tests: tests/integration runs the same paths on the real
engine). What a user would notice: which containers `up` makes, replaces, starts and leaves
alone, what `down` touches, that a refused plan changes nothing, and what each command costs in
engine calls."""

from __future__ import annotations

import socket
from pathlib import Path
import time

import pytest

from orchestrator.backends import docker as docker_backend
from orchestrator.backends import docker_apply
from orchestrator.backends.docker import ContainerRun, DockerBackend
from orchestrator.backends.engine import EngineError, EngineTimeout, EngineUnreachable
from orchestrator.backends.engine_body import PROBE_EXPIRES, PROBE_OWNER, create_body
from orchestrator.compose import OWNER_COMPOSE
from orchestrator.errors import DockerUnavailable, OrchestratorError, PreflightError
from orchestrator.plan import CREATE, NOOP, RECREATE, REMOVE, START, Action, plan_up
from orchestrator.labels import LABEL_CONFIG, LABEL_INSTANCE, LABEL_OWNER, LABEL_PROJECT, OWNER_UP
from tests.builders import config, container_labels, container_of, containers_of, instances, observed_for
from tests.unit.fake_engine import FakeEngine

IMAGES = {"img:1": "sha256:" + "a" * 64}
NO_GPUS = 'gpu_ids = "none"'  # GPU instances make preflight run a probe; tested on their own below
OURS = (f"{LABEL_PROJECT}=fleet", f"{LABEL_OWNER}={OWNER_UP}")  # observe's label filter


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(IMAGES)


@pytest.fixture
def backend(engine) -> DockerBackend:
    return DockerBackend(engine=engine)


def fleet(tmp_path, *names: str, env=None, **settings):
    """The specs of a small fleet without GPUs (see tests/builders.config)."""
    return instances(config(*names, control=settings.pop("control", NO_GPUS), **settings), tmp_path, env=env)


def made_by_up(engine: FakeEngine, spec, *, state: str = "running", exit_code: int = 0) -> str:
    """A container of the spec as an earlier `up` left it on the engine."""
    return engine.add(container_of(spec).name, body=create_body(container_of(spec)), state=state, exit_code=exit_code)


def up(backend: DockerBackend, specs, *, project: str = "fleet", remove_orphans: bool = False):
    """What `vllm-orch up` does with the backend: observe, plan, preflight, apply."""
    observed = backend.observe(project)
    image_ids = backend.image_ids(container_of(s).image for s in specs)
    actions = plan_up(specs, observed, containers=containers_of(specs), image_ids=image_ids, remove_orphans=remove_orphans)
    backend.preflight(None, actions, ContainerRun(image_ids))  # the project is asked only about GPUs
    return actions, {r.action.instance: r for r in backend.run_actions(actions)}


def calls_on(engine: FakeEngine, *refs: str) -> list[str]:
    """The names of the calls made on these containers (ids or names), in order."""
    return [call[0] for call in engine.calls if call[1] in refs]


# ---------------------------------------------------------------------- observe
def test_observe_reads_what_up_wrote_from_one_list_call(tmp_path, engine, backend):
    a, b = fleet(tmp_path, "a", "b")
    made_by_up(engine, a)
    made_by_up(engine, b, state="exited", exit_code=137)
    observed = {o.instance: o for o in backend.observe("fleet")}
    assert engine.calls == [("containers", None, OURS)]
    assert observed["a"].replace(id="id-a", status="Up 1 minute") == observed_for(a, image_id=IMAGES["img:1"])
    assert observed["a"].running and observed["a"].health == "starting"
    assert observed["a"].spec_json == container_of(a).to_json()
    assert not observed["b"].running and observed["b"].status.startswith("Exited (137)")
    assert observed["b"].config_hash == container_of(b).config_hash() and observed["b"].labels == container_labels(b)


def test_observe_keeps_to_the_project_and_to_containers_up_made(tmp_path, engine, backend):
    (a,) = fleet(tmp_path, "a")
    made_by_up(engine, a)
    engine.add("other-a", labels={LABEL_PROJECT: "other", LABEL_OWNER: OWNER_UP, LABEL_INSTANCE: "a"})
    engine.add("fleet-exported", labels={LABEL_PROJECT: "fleet", LABEL_OWNER: OWNER_COMPOSE, LABEL_INSTANCE: "x"})
    engine.add("fleet-b")  # a stranger's container that merely has a name like ours
    assert [o.name for o in backend.observe("fleet")] == ["fleet-a"]
    assert sorted(o.name for o in backend.observe("fleet", owner=None)) == ["fleet-a", "fleet-exported"]


def test_a_lost_engine_is_exit_3_naming_the_address_and_an_engine_error_is_one_line(engine, backend):
    engine.fail("containers", EngineError(500, "driver failed"), times=1)
    with pytest.raises(OrchestratorError, match=r"^Docker engine error: driver failed$"):
        backend.observe("fleet")
    engine.disconnect()
    with pytest.raises(DockerUnavailable, match=r"cannot reach the Docker engine at tcp://fake-engine:2376: .*dockerd") as lost:
        backend.observe("fleet")
    assert lost.value.exit_code == 3


# ---------------------------------------------------------------------- image_ids
def test_image_ids_inspect_each_distinct_image_once(tmp_path, engine, backend):
    specs = fleet(tmp_path, "a", "b", "c")
    assert backend.image_ids(container_of(s).image for s in specs) == {"img:1": IMAGES["img:1"]}
    assert engine.calls == [("inspect_image", "img:1")]


def test_a_missing_image_is_a_preflight_error_naming_the_fix(engine, backend):
    with pytest.raises(PreflightError, match=r"image 'vllm/vllm-openai:v9' not found on this Docker host "
                                             r"\(build it, .*`docker pull vllm/vllm-openai:v9`\)") as refused:
        backend.image_ids(["img:1", "vllm/vllm-openai:v9"])
    assert refused.value.exit_code == 4


# ---------------------------------------------------------------------- preflight
def test_a_foreign_container_holding_the_name_refuses_the_plan_and_nothing_is_created(tmp_path, engine, backend):
    specs = fleet(tmp_path, "a", "b")
    engine.add("fleet-b", image="img:1")  # someone's own container, no labels of ours
    with pytest.raises(PreflightError, match=r"instance 'b': a container named fleet-b exists and is not managed "
                                             r"by this project \(rename or remove it, or set \[docker\] project\)"):
        up(backend, specs)
    assert engine.writes() == [] and engine.names() == ["fleet-b"]


def test_conflicts_are_reported_in_config_order_whatever_order_the_engine_lists(tmp_path, engine, backend):
    specs = fleet(tmp_path, "a", "b")
    engine.add("fleet-b")
    engine.add("fleet-a")
    with pytest.raises(PreflightError, match="instance 'a': a container named fleet-a"):
        up(backend, specs)


@pytest.mark.parametrize("published_on, state, refused", [
    ("0.0.0.0", "running", True),  # the wildcard holds every address, ours too
    ("127.0.0.1", "running", True),
    ("10.1.2.3", "running", False),  # another address of the host
    ("0.0.0.0", "exited", False),  # a stopped container publishes nothing
])
def test_a_port_published_by_another_container_refuses_the_plan(tmp_path, engine, backend, published_on, state, refused):
    specs = fleet(tmp_path, "a")  # publishes 127.0.0.1:8001
    engine.add("someone-elses-server", ports=[(published_on, 8001)], state=state)
    if not refused:
        up(backend, specs)
        assert engine.by_name("fleet-a").state == "running"
        return
    with pytest.raises(PreflightError, match=r"instance 'a': host port 127.0.0.1:8001 is published by container "
                                             r"someone-elses-server; set \[instance.a.docker\] publish_port"):
        up(backend, specs)
    assert engine.writes() == []


def test_a_port_published_by_a_paused_container_refuses_the_plan(tmp_path, engine, backend):
    specs = fleet(tmp_path, "a")
    engine.add("paused-server", ports=[("0.0.0.0", 8001)], state="paused")
    with pytest.raises(PreflightError, match="host port 127.0.0.1:8001 is published by container paused-server"):
        up(backend, specs)


def test_on_a_local_engine_a_port_held_by_any_process_refuses_the_plan(tmp_path):
    """A local engine's host ports are this machine's: one bound by a plain process (no
    container lists it) is found by binding it."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        engine = FakeEngine(IMAGES, address="unix:///var/run/docker.sock")
        specs = fleet(tmp_path, "a", first_port=port)
        with pytest.raises(PreflightError, match=rf"instance 'a': host port 127.0.0.1:{port} is not free"):
            up(DockerBackend(engine=engine), specs)
    assert engine.writes() == []


def test_a_missing_host_path_refuses_the_plan(tmp_path, engine, backend):
    specs = fleet(tmp_path, "a", "b", docker='volumes = ["/no/such/models:/models:ro"]')
    with pytest.raises(PreflightError, match=r"instance 'a': host path /no/such/models does not exist"):
        up(backend, specs)
    assert engine.writes() == []


def test_an_unset_secret_refuses_the_plan_without_creating_anything(tmp_path, engine, backend):
    settings = dict(docker='secret_env = ["HF_TOKEN"]')
    with pytest.raises(PreflightError, match=r"instance 'a': secret HF_TOKEN is not set in the environment"):
        up(backend, fleet(tmp_path, "a", **settings))
    assert engine.writes() == []
    up(backend, fleet(tmp_path, "a", env={"HF_TOKEN": "hf_x"}, **settings))
    body = engine.by_name("fleet-a").body
    assert "hf_x" not in str(body) and "HF_TOKEN_PATH=/run/secrets/HF_TOKEN" in body["Env"]
    (mount,) = [m for m in body["HostConfig"]["Mounts"] if m["Target"] == "/run/secrets/HF_TOKEN"]
    assert Path(mount["Source"]).read_text() == "hf_x"  # written before the create


def test_the_container_being_replaced_does_not_hold_its_own_name_or_port(tmp_path, engine, backend):
    (old,) = fleet(tmp_path, "a", server="max_model_len = 4096")
    old_id = made_by_up(engine, old)
    (new,) = fleet(tmp_path, "a", server="max_model_len = 8192")
    actions, results = up(backend, [new])
    assert [a.kind for a in actions] == [RECREATE] and results["a"].ok and results["a"].detail == "recreated"
    replacement = engine.by_name("fleet-a")
    assert replacement.id != old_id and old_id not in engine.containers_by_id
    assert "8192" in replacement.body["Cmd"]


def test_a_gpu_instance_on_an_engine_without_the_nvidia_runtime_is_refused_and_the_probe_removed(tmp_path, engine, backend):
    (spec,) = fleet(tmp_path, "a", control='gpu_ids = "0"')
    engine.fail("start", EngineError(500, 'could not select device driver "nvidia" with capabilities: [[gpu]]'))
    with pytest.raises(PreflightError, match=r"instance 'a' asks for GPUs \(gpu_ids = '0'\) but this Docker host has "
                                             r"no NVIDIA runtime .*install the NVIDIA container toolkit"):
        up(backend, [spec])
    # Only the throwaway probe was made, and it is gone; the instance was never created.
    assert [call[0] for call in engine.writes()] == ["create", "start", "remove"]
    assert engine.calls[[c[0] for c in engine.calls].index("create")][1] is None  # the probe has no name
    assert engine.names() == []


def test_every_preflight_problem_is_reported_at_once_and_nothing_is_created(tmp_path, engine, backend):
    """Issue 20, part 3: one `up` names them all (a missing image, a port another container
    publishes, a missing host path, a name another container holds), not one per attempt."""
    text = config("a", "b", control=NO_GPUS, docker='volumes = ["/no/such/models:/models:ro"]')
    text = text.replace('[instance.b.server]', '[instance.b.docker]\nimage = "not-built:1"\n\n[instance.b.server]')
    specs = instances(text, tmp_path)
    engine.add("someone-elses-server", ports=[("0.0.0.0", 8001)])
    engine.add("fleet-b")
    image_ids = backend.image_ids((container_of(s).image for s in specs), missing_ok=True)
    assert image_ids == {"img:1": IMAGES["img:1"]}  # the missing image is left to the preflight
    actions = plan_up(specs, backend.observe("fleet"), containers=containers_of(specs), image_ids=image_ids)
    with pytest.raises(PreflightError) as refused:
        backend.preflight(None, actions, ContainerRun(image_ids))
    assert refused.value.exit_code == 4
    assert refused.value.problems == [
        "image 'not-built:1' not found on this Docker host (build it, e.g. scripts/build-images.sh for the "
        "bundled images, or `docker pull not-built:1`)",
        "instance 'a': host path /no/such/models does not exist",
        "instance 'b': host path /no/such/models does not exist",
        "instance 'a': host port 127.0.0.1:8001 is published by container someone-elses-server; "
        "set [instance.a.docker] publish_port",
        "instance 'b': a container named fleet-b exists and is not managed by this project "
        "(rename or remove it, or set [docker] project)",
    ]
    assert str(refused.value).endswith("(and 4 more)")
    assert engine.writes() == []


def test_without_missing_ok_every_missing_image_is_named(engine, backend):
    with pytest.raises(PreflightError) as refused:
        backend.image_ids(["img:1", "x:1", "y:2"])
    assert [p.split(" not found")[0] for p in refused.value.problems] == ["image 'x:1'", "image 'y:2'"]


# ---------------------------------------------------------------------- apply
def test_a_fresh_up_creates_and_starts_each_instance_with_the_body_of_its_spec(tmp_path, engine, backend):
    specs = fleet(tmp_path, "a", "b", "c")
    actions, results = up(backend, specs)
    assert [a.kind for a in actions] == [CREATE] * 3
    assert all(r.ok and r.detail == "created" for r in results.values())
    for spec in specs:
        container = engine.by_name(container_of(spec).name)
        assert container.state == "running" and container.body == create_body(container_of(spec))
        assert calls_on(engine, container_of(spec).name, container.id) == ["create", "start"]
    # One list call to observe, one inspect for the one image, one list call for names and ports.
    assert engine.count("containers") == 2 and engine.count("inspect_image") == 1 and len(engine.calls) == 9


def test_a_second_up_with_nothing_changed_makes_no_write_call(tmp_path, engine, backend):
    specs = fleet(tmp_path, "a", "b", "c")
    up(backend, specs)
    engine.calls.clear()
    actions, results = up(backend, fleet(tmp_path, "a", "b", "c"))
    assert [a.kind for a in actions] == [NOOP] * 3 and results == {}
    assert engine.calls == [("containers", None, OURS), ("inspect_image", "img:1")]


def test_recreate_stops_within_the_recorded_stop_timeout_waits_removes_then_creates(tmp_path, engine, backend):
    (old,) = fleet(tmp_path, "a", docker="stop_timeout = 17", server="max_model_len = 4096")
    old_id = made_by_up(engine, old)
    (new,) = fleet(tmp_path, "a", docker="stop_timeout = 17", server="max_model_len = 8192")
    up(backend, [new])
    new_id = engine.by_name("fleet-a").id
    assert calls_on(engine, old_id, "fleet-a", new_id) == ["stop", "wait", "remove", "create", "start"]
    assert ("stop", old_id, 17) in engine.calls


def test_a_stopped_container_is_started_again_keeping_its_id(tmp_path, engine, backend):
    (spec,) = fleet(tmp_path, "a")
    kept = made_by_up(engine, spec, state="exited", exit_code=137)
    actions, results = up(backend, [spec])
    assert [a.kind for a in actions] == [START] and results["a"].ok and results["a"].detail == "started"
    assert engine.writes() == [("start", kept)]
    assert engine.by_name("fleet-a").id == kept and engine.by_name("fleet-a").state == "running"


def test_orphans_are_stopped_and_removed_only_when_asked_and_their_exit_code_is_reported(tmp_path, engine, backend):
    a, gone = fleet(tmp_path, "a", "gone")
    made_by_up(engine, a)
    gone_id = made_by_up(engine, gone, exit_code=137)  # a server that had to be killed
    up(backend, [a])
    assert gone_id in engine.containers_by_id and engine.writes() == []
    actions, results = up(backend, [a], remove_orphans=True)
    assert {x.instance: x.kind for x in actions} == {"a": NOOP, "gone": REMOVE}
    assert results["gone"].ok and results["gone"].exit_code == 137 and results["gone"].detail == "stopped and removed"
    assert calls_on(engine, gone_id) == ["stop", "wait", "remove"] and engine.names() == ["fleet-a"]


def test_a_failed_create_fails_that_instance_only(tmp_path, engine, backend):
    specs = fleet(tmp_path, "a", "b", "c")
    engine.fail("create", EngineError(500, "invalid mount config"), target="fleet-b")
    _, results = up(backend, specs)
    assert not results["b"].ok and results["b"].detail == "instance 'b': create failed: invalid mount config"
    assert results["b"].error_exit_code == 1 and not results["b"].engine_lost
    assert results["a"].ok and results["c"].ok and engine.names() == ["fleet-a", "fleet-c"]


def test_an_image_removed_after_preflight_fails_its_instances_with_the_fix(tmp_path, engine, backend):
    specs = fleet(tmp_path, "a")
    observed = backend.observe("fleet")
    actions = plan_up(specs, observed, containers=containers_of(specs), image_ids=backend.image_ids(["img:1"]))
    backend.preflight(None, actions, ContainerRun(backend.image_ids(["img:1"])))
    del engine.images["img:1"]  # `docker rmi` while `up` ran
    [result] = backend.run_actions(actions)
    assert not result.ok and result.error_exit_code == 4
    assert "image 'img:1' is no longer on this Docker host" in result.detail and "nothing was created" in result.detail


def test_an_engine_lost_mid_apply_leaves_results_that_say_so(tmp_path, engine, backend, monkeypatch):
    monkeypatch.setattr(docker_apply, "MAX_WORKERS", 1)  # one at a time, in plan order
    specs = fleet(tmp_path, "a", "b", "c")
    engine.fail("start", EngineUnreachable("connection reset by peer"), target="fleet-b")
    _, results = up(backend, specs)
    assert results["a"].ok and not results["a"].engine_lost
    for name in ("b", "c"):
        assert not results[name].ok and results[name].engine_lost and results[name].error_exit_code == 3
        assert results[name].detail.startswith("cannot reach the Docker engine at tcp://fake-engine:2376")
    assert [r.to_json()["ok"] for r in results.values()] == [True, False, False]


def test_a_hung_stop_fails_that_instance_and_the_others_go_on(tmp_path, engine, backend):
    a, b = fleet(tmp_path, "a", "b", server="max_model_len = 4096")
    a_id, _ = made_by_up(engine, a), made_by_up(engine, b)
    engine.fail("stop", EngineTimeout("no answer to POST /containers/x/stop within 180s"), target=a_id)
    _, results = up(backend, fleet(tmp_path, "a", "b", server="max_model_len = 8192"))
    assert not results["a"].ok and results["a"].detail == "container fleet-a: no answer to POST /containers/x/stop within 180s"
    assert not results["a"].engine_lost
    assert results["b"].ok and results["b"].detail == "recreated"


def test_a_failed_action_says_whether_it_changed_the_engine_before_failing(tmp_path, engine, backend):
    """`changed` per action in `up --json`/`down --json`: a provisioning tool (the Ansible module)
    reports `changed: false` for a failed run only when no failure got part-way."""
    a, b = fleet(tmp_path, "a", "b", server="max_model_len = 4096")
    a_id, b_id = made_by_up(engine, a), made_by_up(engine, b)
    engine.fail("stop", EngineTimeout("no answer"), target=a_id)  # a: nothing happened
    engine.fail("create", EngineError(500, "invalid mount config"), target="fleet-b")  # b: the old one is gone
    engine.fail("create", EngineError(500, "invalid mount config"), target="fleet-c")  # c: nothing happened
    engine.fail("start", EngineError(500, "port is already allocated"), target="fleet-d")  # d: made, not started
    specs = fleet(tmp_path, "a", "b", "c", "d", "e", server="max_model_len = 8192")
    _, results = up(backend, specs)
    assert {name: (r.ok, r.to_json()["changed"]) for name, r in results.items()} == {
        "a": (False, False), "b": (False, True), "c": (False, False), "d": (False, True), "e": (True, True)}
    assert a_id in engine.containers_by_id and b_id not in engine.containers_by_id
    assert engine.by_name("fleet-c") is None and engine.by_name("fleet-d").state == "created"


def test_a_container_removed_by_someone_else_meanwhile_counts_as_removed(tmp_path, engine, backend):
    (spec,) = fleet(tmp_path, "a")
    made_by_up(engine, spec, state="exited")
    [observed] = backend.observe("fleet")
    engine.remove(observed.id)  # `docker rm` by hand, between observe and apply
    [result] = backend.run_actions([Action(REMOVE, "a", ("down",), None, observed)])
    assert result.ok and result.exit_code is None


# ---------------------------------------------------------------------- down
def test_down_removes_only_this_projects_containers_that_up_made(tmp_path, engine, backend):
    a, b = fleet(tmp_path, "a", "b")
    made_by_up(engine, a)
    made_by_up(engine, b, state="exited")
    engine.add("other-a", labels={LABEL_PROJECT: "other", LABEL_OWNER: OWNER_UP, LABEL_INSTANCE: "a"})
    engine.add("fleet-exported", labels={LABEL_PROJECT: "fleet", LABEL_OWNER: OWNER_COMPOSE, LABEL_INSTANCE: "a"})
    engine.add("fleet-c")  # no labels: not ours, whatever its name
    results, left = backend.down("fleet", None)
    assert sorted(r.action.instance for r in results if r.ok) == ["a", "b"] and left == {}
    assert engine.names() == ["fleet-c", "fleet-exported", "other-a"]
    assert engine.count("stop") == 1  # the exited one is only waited for and removed


def test_down_of_one_config_leaves_the_containers_another_config_file_made(tmp_path, engine, backend):
    mine = str(tmp_path / "fleet.toml")
    theirs = "/srv/team-b/fleet.toml"
    for name, config_file in (("a", mine), ("b", theirs), ("c", None)):  # c: made before the label existed
        labels = {LABEL_PROJECT: "fleet", LABEL_OWNER: OWNER_UP, LABEL_INSTANCE: name}
        if config_file:
            labels[LABEL_CONFIG] = config_file
        engine.add(f"fleet-{name}", labels=labels)
    results, left = backend.down("fleet", None, config_file=mine)
    assert sorted(r.action.instance for r in results) == ["a", "c"]
    assert left == {theirs: ["fleet-b"]} and engine.names() == ["fleet-b"]


def test_down_of_named_instances_leaves_the_others(tmp_path, engine, backend):
    for spec in fleet(tmp_path, "a", "b"):
        made_by_up(engine, spec)
    results, _ = backend.down("fleet", {"b"})
    assert [r.action.instance for r in results] == ["b"] and engine.names() == ["fleet-a"]


# ---------------------------------------------------------------------- one-off containers
def test_run_once_returns_the_output_and_removes_its_container(engine):
    engine.probe = lambda body: (3, b"out\n", b"err\n")
    backend = DockerBackend(engine=engine)
    assert backend.run_once("img:1", ["/usr/bin/python3", "-c", "pass"], timeout=30) == (3, "out\n", "err\n")
    assert engine.names() == []
    [create] = [c for c in engine.calls if c[0] == "create"]
    assert create[1] is None  # an engine-chosen name: probes never take one of ours
    assert [c[0] for c in engine.calls] == ["containers", "create", "start", "wait", "logs", "logs", "remove"]
    assert engine.calls[-1][2] is True  # removed with force, whatever state it is in


def test_run_once_probe_is_network_less_labelled_and_expires(engine):
    bodies = []
    engine.probe = lambda body: (bodies.append(body), (0, b"", b""))[1]
    before = int(time.time())
    DockerBackend(engine=engine).run_once("img:1", ["/bin/true"], timeout=30)
    [body] = bodies
    assert body["HostConfig"]["NetworkMode"] == "none"
    assert body["Labels"][LABEL_OWNER] == PROBE_OWNER and LABEL_PROJECT not in body["Labels"]
    expires = int(body["Labels"][PROBE_EXPIRES])
    assert before + 30 < expires <= int(time.time()) + 30 + docker_backend.PROBE_GRACE_S


def test_a_probe_that_does_not_finish_is_removed_and_reported(engine, backend):
    engine.fail("wait", EngineTimeout("no answer"))
    assert backend.run_once("img:1", ["/bin/sleep", "1000"], timeout=5) == (-1, "", "no answer within 5s")
    assert engine.names() == []


def test_probes_left_by_a_killed_run_are_removed_by_the_next_run_once_they_expire(engine, backend):
    now = int(time.time())
    expired = engine.add("left-by-a-killed-run", labels={LABEL_OWNER: PROBE_OWNER, PROBE_EXPIRES: str(now - 5)},
                         state="exited")
    in_use = engine.add("another-runs-probe", labels={LABEL_OWNER: PROBE_OWNER, PROBE_EXPIRES: str(now + 600)})
    unrelated = engine.add("user-job", labels={PROBE_EXPIRES: str(now - 5)})  # not a probe of ours
    backend.run_once("img:1", ["/bin/true"], timeout=30)
    assert expired not in engine.containers_by_id
    assert in_use in engine.containers_by_id and unrelated in engine.containers_by_id
    assert engine.calls[0] == ("containers", None, (f"{LABEL_OWNER}={PROBE_OWNER}",))


def test_run_once_of_a_missing_image_is_a_preflight_error(engine, backend):
    with pytest.raises(PreflightError, match=r"image 'nope:1' not found on this Docker host"):
        backend.run_once("nope:1", ["/bin/true"])
    assert engine.names() == []
