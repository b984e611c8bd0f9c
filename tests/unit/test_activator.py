"""The activator's decisions with a fake Control: budget (LRU), the state file, agent answers,
one shared start per instance, a failing start for every waiter, idle stops."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest

from orchestrator.activator import state as state_file
from orchestrator.activator.budget import Holder, NoRoom, to_free
from orchestrator.activator.core import SLEEPING, STOPPED, Activator, HoldTimeout, StartFailed
from orchestrator.activator.state import OnDemand, Resident, State


class FakeControl:
    """Instances as dicts of phases; starts take `delay` seconds to answer /health."""

    def __init__(self, delay: float = 0.2, fail: str | None = None, failing: set[str] | None = None):
        self.failing = failing  # the instances `fail` applies to (None: all)
        self.phase: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []
        self.delay = delay
        self.fail = fail
        self.up_at: dict[str, float] = {}
        self.load: dict[str, float | None] = {}
        self.done: dict[str, float] = {}  # vllm:request_success_total; absent: not exported

    def observe(self):
        return dict(self.phase)

    def start(self, inst):
        self.calls.append(("start", inst.name))
        self.phase[inst.name] = "running"
        self.up_at[inst.name] = time.monotonic() + self.delay

    def stop(self, inst):
        self.calls.append(("stop", inst.name))
        self.phase[inst.name] = "stopped"

    def sleep(self, inst):
        self.calls.append(("sleep", inst.name))
        self.phase[inst.name] = "sleeping"

    def wake(self, inst):
        self.calls.append(("wake", inst.name))
        self.phase[inst.name] = "running"
        self.up_at[inst.name] = time.monotonic()

    def _fails(self, name):
        return self.fail is not None and (self.failing is None or name in self.failing)

    def healthy(self, inst):
        return not self._fails(inst.name) and self.phase.get(inst.name) == "running" and time.monotonic() >= self.up_at[inst.name]

    def exited(self, inst):
        return f"Exited (1); last log line: {self.fail}" if self._fails(inst.name) else None

    def busy(self, inst):
        return self.load.get(inst.name, 0.0)

    def finished(self, inst):
        return self.done.get(inst.name)

    def lock(self):
        return contextlib.nullcontext()


def inst(name: str, model: str, **kw) -> OnDemand:
    return OnDemand(name=name, model=model, address="127.0.0.1:1", container=f"p-{name}", **kw)


def activator(*instances: OnDemand, control: FakeControl | None = None, residents=(), hold_s: float = 10) -> Activator:
    return Activator(State(project="p", instances=instances, residents=residents, hold_s=hold_s),
                     control or FakeControl(), poll_s=0.01, drain_s=0)


def test_budget_frees_the_least_recently_used_first_and_only_what_is_needed():
    holders = [Holder("old", ("0",), 0.5, 1.0), Holder("new", ("0",), 0.4, 5.0)]
    assert to_free(("0",), 0.5, holders) == ["old"]
    assert to_free(("0",), 0.1, holders) == []
    assert to_free(("0",), 0.9, holders) == ["old", "new"]
    assert to_free(("1",), 0.9, holders) == []


def test_budget_never_moves_a_resident_or_a_busy_instance():
    with pytest.raises(NoRoom, match="resident_x \\(not on demand\\)"):
        to_free(("0",), 0.5, [Holder("resident_x", ("0",), 0.6, 0.0, movable=False)])
    with pytest.raises(NoRoom, match="requests in flight"):
        to_free(("0",), 0.5, [Holder("busy", ("0",), 0.6, 0.0, busy=True)])


def test_the_state_file_round_trips_and_is_written_only_when_it_changes(tmp_path):
    state = State(project="p", engine_address="unix:///x", instances=(inst("a", "m1", gpus=("0",), share=0.5),),
                  residents=(Resident("r", ("0",), 0.3),))
    path = str(tmp_path / "activator" / "state.json")
    assert state_file.write(path, state) is True
    assert state_file.write(path, state) is False
    assert state_file.read(path) == state


def test_concurrent_requests_share_one_start_and_the_agent_follows_the_phase():
    control = FakeControl(delay=0.3)
    act = activator(inst("a", "m1"), control=control)
    assert act.agent_answer("a") == "maint\n"
    got: list[str] = []

    def one():
        tracked = act.acquire("m1")
        got.append(tracked.spec.name)
        act.release(tracked)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert got == ["a"] * 8
    assert control.calls == [("start", "a")]
    assert act.agent_answer("a") == "ready up\n"
    assert act.stats.starts == {"m1": 1} and "m1" in act.stats.cold_s


def test_a_failing_start_reaches_every_waiter_with_the_last_log_line():
    act = activator(inst("a", "m1"), control=FakeControl(fail="CUDA out of memory"))
    errors: list[str] = []

    def one():
        try:
            act.acquire("m1")
        except StartFailed as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert len(errors) == 3 and all("a (m1) did not start" in e and "CUDA out of memory" in e for e in errors)


def test_a_hold_past_its_limit_is_a_timeout_not_a_hang():
    act = activator(inst("a", "m1"), control=FakeControl(delay=5))
    started = time.monotonic()
    with pytest.raises(HoldTimeout):
        act.acquire("m1", hold_s=0.2)
    assert time.monotonic() - started < 1


def test_idle_instances_stop_or_sleep_but_never_with_requests_in_flight():
    now = [0.0]
    control = FakeControl(delay=0)
    act = Activator(State(project="p", instances=(inst("a", "m1", idle_stop_after=10),
                                                   inst("b", "m2", idle_stop_after=10, sleep=True))),
                    control, clock=lambda: now[0], poll_s=0.01, drain_s=0)
    for model in ("m1", "m2"):
        act.release(act.acquire(model))
    control.load["a"] = 1.0
    now[0] = 20.0
    act.tick()
    assert ("stop", "a") not in control.calls  # busy per its /metrics
    assert act.tracked["b"].phase == SLEEPING and act.agent_answer("b") == "maint\n"
    control.load["a"] = 0.0
    now[0] = 40.0
    act.tick()
    assert act.tracked["a"].phase == STOPPED


def test_a_start_makes_room_by_stopping_the_least_recently_used_on_its_gpu():
    control = FakeControl(delay=0)
    act = activator(inst("a", "m1", gpus=("0",), share=0.6), inst("b", "m2", gpus=("0",), share=0.6),
                    inst("c", "m3", gpus=("0",), share=0.3), control=control)
    act.release(act.acquire("m1"))
    act.release(act.acquire("m3"))
    act.release(act.acquire("m2"))
    assert ("stop", "a") in control.calls and ("stop", "c") not in control.calls
    assert act.tracked["c"].phase == "running" and act.tracked["b"].phase == "running"


def test_a_resident_on_the_gpu_is_never_stopped_for_room():
    act = activator(inst("a", "m1", gpus=("0",), share=0.6), residents=(Resident("r", ("0",), 0.6),))
    with pytest.raises(StartFailed, match="not on demand"):
        act.acquire("m1")


def test_haproxy_gives_on_demand_models_the_activator_as_backup_and_an_agent_check():
    from orchestrator.gateway.haproxy import render
    from orchestrator.gateway.routes import Route
    from orchestrator.gateway.settings import GatewaySpec

    gateway = GatewaySpec(project="p", config_file="/c.toml", port=8000, publish_address="127.0.0.1", policy="prefix",
                          image="gw", max_body_kib=256, host_dir="/d", log_file="/l", restart="no",
                          activator="127.0.0.1:9001", agent_port=9002, on_demand=("a",))
    cfg = render(gateway, [Route("m1", "a", "127.0.0.1:8001"), Route("m2", "b", "127.0.0.1:8002")])["haproxy.cfg"].decode()
    m1, m2 = cfg.split("backend model_m1")[1].split("backend model_m2")
    assert "server a 127.0.0.1:8001 agent-check agent-addr 127.0.0.1 agent-port 9002" in m1
    assert "server vllm-orch:activator 127.0.0.1:9001 backup" in m1
    assert "agent-check" not in m2 and "activator" not in m2


def test_an_instance_stopped_behind_its_back_is_started_again_not_forwarded_to():
    control = FakeControl(delay=0)
    act = activator(inst("a", "m1"), control=control)
    act.release(act.acquire("m1"))
    control.phase["a"] = "stopped"  # `docker stop`, or `up` recreating it
    tracked = act.acquire("m1")
    act.release(tracked)
    assert control.calls == [("start", "a"), ("start", "a")] and tracked.phase == "running"


CONFIG = """
[docker]
image = "img"
project = "p"
[instance.control]
gpu_ids = "none"
[instance.server]
model = "/models/m"
[gateway]
port = 9000
api_key = "k-1"
[instance.chat.docker]
on_demand = true
idle_stop_after = 60
[instance.chat.server]
served_model_name = "chat"
port = 8001
gpu_memory_utilization = 0.6
[instance.embed.docker]
on_demand = true
[instance.embed.server]
served_model_name = "embed"
port = 8002
enable_sleep_mode = true
[instance.always.server]
served_model_name = "always"
port = 8003
gpu_memory_utilization = 0.3
"""


def test_the_state_up_writes_names_the_on_demand_instances_their_budget_and_the_residents(write_toml):
    from orchestrator.activator.workflow import build_state
    from orchestrator.project import open_project

    project = open_project(write_toml(CONFIG), env={}, strict=False, on_host=False)
    state = build_state(project, "unix:///var/run/docker.sock")
    by_name = {i.name: i for i in state.instances}
    assert set(by_name) == {"chat", "embed"}
    assert by_name["chat"].address == "127.0.0.1:8001" and by_name["chat"].idle_stop_after == 60
    assert by_name["chat"].gpus == ("host",) and by_name["chat"].share == 0.6
    assert by_name["embed"].share is None and by_name["embed"].sleep is True  # no share set: not counted
    assert state.residents == (Resident("always", ("host",), 0.3),)
    assert state.keys_file.endswith("/secret/keys") and "k-1" not in str(state.to_json())


def test_ps_says_stopped_on_demand_starting_and_sleeping_from_the_activators_view(write_toml, monkeypatch):
    from orchestrator.activator import service, workflow
    from orchestrator.project import open_project

    project = open_project(write_toml(CONFIG), env={}, strict=False, on_host=False)
    monkeypatch.setattr(service, "snapshot", lambda observed: [
        {"name": "embed", "phase": "sleeping", "last_request": 1.5, "last_start_s": 2.0}])
    backend = type("B", (), {"last_rows": []})()
    rows = [{"name": "chat", "state": "exited", "cause": "x"}, {"name": "embed", "state": "running"},
            {"name": "always", "state": "exited"}]
    workflow.decorate_rows(rows, project, backend)
    assert [r["state"] for r in rows] == ["stopped (on demand)", "sleeping", "exited"]
    assert rows[0]["cause"] is None and rows[1]["last_request"] == 1.5 and "on_demand" not in rows[2]


def test_concurrent_starts_never_run_past_the_budget_the_second_fails_naming_the_holder():
    control = FakeControl(delay=0.5)
    act = activator(inst("chat", "chat", gpus=("0",), share=0.6), inst("coder", "coder", gpus=("0",), share=0.6),
                    control=control)
    first = threading.Thread(target=lambda: act.release(act.acquire("chat")))
    first.start()
    time.sleep(0.1)  # chat is starting (not yet answering /health)
    with pytest.raises(StartFailed, match=r"no room .* chat \(starting\)"):
        act.acquire("coder")
    first.join(5)
    assert control.calls == [("start", "chat")] and act.tracked["chat"].phase == "running"


def test_a_holder_that_a_drain_keeps_running_fails_the_start_instead_of_overcommitting():
    control = FakeControl(delay=0)
    act = Activator(State(project="p", instances=(inst("a", "m1", gpus=("0",), share=0.6),
                                                   inst("b", "m2", gpus=("0",), share=0.6))),
                    control, poll_s=0.01, drain_s=0.05)
    act.release(act.acquire("m1"))
    control.load["a"] = 1.0  # a request reached it during the drain
    with pytest.raises(StartFailed, match="no room .* held by a"):
        act.acquire("m2")
    assert ("start", "b") not in control.calls and act.tracked["a"].phase == "running"


def test_a_start_that_times_out_is_stopped_and_never_announced_up_later():
    control = FakeControl(delay=30)  # never answers /health in time
    act = activator(inst("a", "m1", start_timeout_s=0.1), control=control)
    with pytest.raises(StartFailed, match="no answer on /health"):
        act.acquire("m1")
    assert ("stop", "a") in control.calls and control.phase["a"] == "stopped"
    control.phase["a"] = "running"  # say the stop failed, or it was started by hand, still loading
    act.resync()
    assert act.tracked["a"].phase == "failed" and act.agent_answer("a") == "maint\n"
    control.up_at["a"] = 0  # now it answers /health
    act.resync()
    assert act.tracked["a"].phase == "running"


def test_a_request_during_the_drain_calls_the_stop_off_and_is_forwarded_at_once():
    now = [0.0]
    control = FakeControl(delay=0)
    act = Activator(State(project="p", instances=(inst("a", "m1", idle_stop_after=10),), hold_s=5),
                    control, clock=lambda: now[0], poll_s=0.01, drain_s=0.5)
    act.release(act.acquire("m1"))
    now[0] = 20.0
    ticking = threading.Thread(target=act.tick)
    ticking.start()
    time.sleep(0.2)  # in the drain: the agent says maint, HAProxy sent this request to the activator
    assert act.tracked["a"].phase == "stopping" and act.agent_answer("a") == "maint\n"
    began = time.monotonic()
    tracked = act.acquire("m1")
    assert time.monotonic() - began < 0.2 and tracked.phase == "running"
    act.release(tracked)
    ticking.join(5)
    assert control.calls == [("start", "a")] and act.tracked["a"].phase == "running"


def test_an_unanswered_metrics_scrape_is_not_idleness_neither_at_the_tick_nor_in_the_drain():
    now = [0.0]
    control = FakeControl(delay=0)
    act = Activator(State(project="p", instances=(inst("a", "m1", idle_stop_after=10),)),
                    control, clock=lambda: now[0], poll_s=0.01, drain_s=0.05)
    act.release(act.acquire("m1"))
    control.load["a"] = None  # /metrics timed out
    now[0] = 20.0
    act.tick()
    assert ("stop", "a") not in control.calls and act.tracked["a"].phase == "running"
    act.tracked["a"].last_request = 0.0
    assert act._put_down(act.tracked["a"], "room") is False  # the drain's check sees no answer either
    assert ("stop", "a") not in control.calls


def test_requests_between_two_ticks_reset_the_idle_clock_through_the_success_counter():
    now = [0.0]
    control = FakeControl(delay=0)
    act = Activator(State(project="p", instances=(inst("a", "m1", idle_stop_after=10),)),
                    control, clock=lambda: now[0], poll_s=0.01, drain_s=0)
    act.release(act.acquire("m1"))
    control.done["a"] = 3.0
    now[0] = 5.0
    act.tick()
    control.done["a"] = 4.0  # one request came and went between the ticks: the gauges said 0 both times
    now[0] = 12.0
    act.tick()
    now[0] = 20.0
    act.tick()
    assert ("stop", "a") not in control.calls
    now[0] = 30.0
    act.tick()
    assert ("stop", "a") in control.calls


def test_the_success_counter_is_summed_over_its_series_and_absent_from_the_stand_in():
    from orchestrator.activator.control import success_total

    text = ('# TYPE vllm:request_success counter\n'
            'vllm:request_success_total{finished_reason="stop",model_name="m"} 3.0\n'
            'vllm:request_success_total{finished_reason="length",model_name="m"} 2.0\n'
            'vllm:request_success_created{finished_reason="stop",model_name="m"} 1.7e9\n')
    assert success_total(text) == 5.0
    assert success_total('vllm:num_requests_running{model_name="m"} 0.0\n') is None


def test_after_a_failed_start_requests_get_the_failure_at_once_until_the_backoff_ends():
    now = [0.0]
    control = FakeControl(delay=0, fail="CUDA out of memory")
    act = Activator(State(project="p", instances=(inst("a", "m1"),)), control, clock=lambda: now[0],
                    poll_s=0.01, drain_s=0)
    with pytest.raises(StartFailed):
        act.acquire("m1")
    now[0] = 3.0
    with pytest.raises(StartFailed, match="CUDA out of memory.*not tried again for 7s") as failed:
        act.acquire("m1")
    assert failed.value.retry_after == pytest.approx(7.0)
    assert [c for c in control.calls if c[0] == "start"] == [("start", "a")]
    now[0] = 11.0
    with pytest.raises(StartFailed):
        act.acquire("m1")
    assert [c for c in control.calls if c[0] == "start"] == [("start", "a")] * 2


def test_a_replica_that_has_not_failed_is_started_instead_of_the_one_that_did():
    control = FakeControl(delay=0, fail="bad weights", failing={"a"})
    act = activator(inst("a", "m1"), inst("b", "m1"), control=control)
    with pytest.raises(StartFailed, match="bad weights"):
        act.acquire("m1")
    tracked = act.acquire("m1")
    act.release(tracked)
    assert tracked.spec.name == "b" and [c for c in control.calls if c[0] == "start"] == [("start", "a"), ("start", "b")]


def test_the_server_answers_a_failed_start_with_a_503_and_retry_after():
    import http.client
    import json

    from orchestrator.activator.server import serve

    act = activator(inst("a", "m1"), control=FakeControl(fail="CUDA out of memory"))
    http_server, agent = serve(act, "127.0.0.1", 0, 0)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    try:
        for _ in range(2):  # the failing start, then the backoff
            connection = http.client.HTTPConnection("127.0.0.1", http_server.server_address[1], timeout=5)
            connection.request("POST", "/v1/completions", body=json.dumps({"model": "m1"}))
            answer = connection.getresponse()
            body = json.loads(answer.read())
            assert answer.status == 503 and "CUDA out of memory" in body["error"]["message"]
            assert 1 <= int(answer.getheader("Retry-After")) <= 10
            connection.close()
    finally:
        http_server.shutdown()
        http_server.server_close()
        agent.server_close()


def test_a_request_while_the_idle_stop_waits_for_the_run_lock_keeps_the_instance():
    now = [0.0]

    class LateRequest(FakeControl):
        hook = None

        def lock(self):
            if self.hook is not None:
                self.hook()
            return contextlib.nullcontext()

    control = LateRequest(delay=0)
    act = Activator(State(project="p", instances=(inst("a", "m1", idle_stop_after=10),)),
                    control, clock=lambda: now[0], poll_s=0.01, drain_s=0)
    act.release(act.acquire("m1"))
    now[0] = 20.0
    control.hook = lambda: act.release(act.acquire("m1"))  # answered while `up` held the lock
    act.tick()
    assert ("stop", "a") not in control.calls and act.tracked["a"].phase == "running"


def test_ps_says_failed_on_demand_with_the_reason_and_status_has_the_last_error(write_toml, monkeypatch):
    from orchestrator.activator import service, workflow
    from orchestrator.project import open_project

    act = activator(inst("chat", "chat"), control=FakeControl(fail="CUDA out of memory"))
    with pytest.raises(StartFailed):
        act.acquire("chat")
    status = act.snapshot()
    assert status[0]["phase"] == "failed" and "CUDA out of memory" in status[0]["last_error"]
    project = open_project(write_toml(CONFIG), env={}, strict=False, on_host=False)
    monkeypatch.setattr(service, "snapshot", lambda observed: status)
    rows = [{"name": "chat", "state": "exited", "cause": "exited (1)"}]
    workflow.decorate_rows(rows, project, type("B", (), {"last_rows": []})())
    assert rows[0]["state"] == "failed (on demand)" and "CUDA out of memory" in rows[0]["cause"]


def test_its_log_says_each_start_failure_and_stop_with_the_reason():
    now = [0.0]
    lines: list[str] = []
    control = FakeControl(delay=0, fail="CUDA out of memory", failing={"b"})
    act = Activator(State(project="p", instances=(inst("a", "m1", idle_stop_after=10), inst("b", "m2"))),
                    control, clock=lambda: now[0], poll_s=0.01, drain_s=0, say=lines.append)
    act.release(act.acquire("m1"))
    with pytest.raises(StartFailed):
        act.acquire("m2")
    now[0] = 20.0
    act.tick()
    assert lines[0] == "a (m1): starting for a request"
    assert lines[1].startswith("a (m1): serving after ") and lines[1].endswith("(cold start)")
    assert "b (m2): starting for a request" in lines
    assert any(line.startswith("b (m2) did not start:") and "CUDA out of memory" in line for line in lines)
    assert lines[-1] == "a (m1): stopped, idle for 10 s"


def test_a_request_naming_another_served_name_of_an_instance_starts_it():
    control = FakeControl(delay=0)
    act = activator(inst("a", "m1", aliases=("m1-latest",)), control=control)
    assert act.models() == {"m1", "m1-latest"}
    act.release(act.acquire("m1-latest"))
    assert control.calls == [("start", "a")]


def test_a_log_that_cannot_be_written_never_leaves_a_start_half_done():
    def broken(line: str) -> None:
        raise OSError("stdout closed")

    control = FakeControl(delay=0)
    act = Activator(State(project="p", instances=(inst("a", "m1"),)), control, poll_s=0.01, drain_s=0, say=broken)
    act.release(act.acquire("m1"))
    assert act.tracked["a"].phase == "running" and control.calls == [("start", "a")]
