"""The local (process) backend with real, short-lived processes (`python -c`): process identity,
state files, the environment an instance gets, foreground exit codes, twins and stopping.

Specs are built directly (not from TOML) so each test runs exactly the command it needs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.backends import local
from orchestrator.backends.local import (
    LocalBackend,
    ProcessHandle,
    Record,
    StateStore,
    default_state_dir,
    exit_status,
    format_uptime,
    proc_stat,
    process_environment,
    resolve_user,
)
from orchestrator.spec import GpuRequest, InstanceSpec

PY = sys.executable
SLEEP = "import time; time.sleep(60)"


def spec(name: str, code: str = SLEEP, *, background: bool = True, gpu: str | None = None, tmp: Path,
         secrets=(), enabled: bool = True, port: int = 1, argv: tuple[str, ...] | None = None) -> InstanceSpec:
    return InstanceSpec(
        name=name, enabled=enabled, background=background, log_file=str(tmp / "logs" / f"{name}.log"),
        gpu=GpuRequest.parse(gpu), server={"model": f"m-{name}"},
        command=argv or (PY, "-c", code), env=(("PYTHONUNBUFFERED", "1"),), secrets=tuple(secrets),
        port=port, host="127.0.0.1",
    )


def project(*specs: InstanceSpec, name: str = "unit") -> SimpleNamespace:
    return SimpleNamespace(name=name, resolved=SimpleNamespace(instances=list(specs), config_file="/x/fleet.toml"))


@pytest.fixture
def backend(tmp_path):
    b = LocalBackend(tmp_path / "state")
    yield b
    # Nothing a test started may outlive it.
    for record in b.store.root.glob("*/*.json"):
        doc = json.loads(record.read_text())
        handle = ProcessHandle.open(doc["pid"], doc["start_time"], doc["boot_id"])
        if handle:
            handle.send(signal.SIGKILL)
            handle.close()


@pytest.fixture
def messages():
    """What the backend says; tests pass `messages.append` as its `out`."""
    return []


# ----------------------------------------------------------------------------- /proc identity
def test_proc_stat_reads_start_time_of_a_real_process():
    child = subprocess.Popen([PY, "-c", SLEEP])
    try:
        stat = proc_stat(child.pid)
        assert stat is not None and stat.pid == child.pid and stat.start_time > 0
        assert stat.session == os.getsid(0)  # not started in its own session
        assert proc_stat(child.pid).start_time == stat.start_time  # stable
    finally:
        child.kill()
        child.wait()
    assert proc_stat(child.pid) is None


def test_proc_stat_parses_a_command_name_with_spaces_and_parens(tmp_path):
    exe = tmp_path / "a (b) c"
    exe.symlink_to(PY)
    child = subprocess.Popen([str(exe), "-c", SLEEP])
    try:
        assert proc_stat(child.pid).start_time > 0
    finally:
        child.kill()
        child.wait()


def test_handle_refuses_another_start_time_and_another_boot():
    child = subprocess.Popen([PY, "-c", SLEEP])
    try:
        real = proc_stat(child.pid).start_time
        assert ProcessHandle.open(child.pid, real, local.boot_id()) is not None
        assert ProcessHandle.open(child.pid, real + 1, local.boot_id()) is None
        assert ProcessHandle.open(child.pid, real, "another-boot") is None
    finally:
        child.kill()
        child.wait()
    assert ProcessHandle.open(child.pid, real, local.boot_id()) is None  # gone


def test_handle_sees_a_zombie_as_exited():
    child = subprocess.Popen([PY, "-c", "pass"])
    start = proc_stat(child.pid).start_time
    handle = ProcessHandle.for_child(child)
    deadline = time.monotonic() + 10
    while handle.alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not handle.alive()
    assert ProcessHandle.open(child.pid, start, local.boot_id()) is None  # a zombie is not running
    assert handle.reap() == 0
    handle.close()


@pytest.mark.parametrize("returncode, status", [(0, 0), (3, 3), (-15, 143), (-9, 137)])
def test_exit_status_follows_the_shell(returncode, status):
    assert exit_status(returncode) == status


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (59.9, "59s"), (61, "1m01s"), (3600 * 2 + 60 * 3, "2h03m"),
                                           (86400 * 3 + 3600 * 4, "3d4h")])
def test_format_uptime(seconds, text):
    assert format_uptime(seconds) == text


# ----------------------------------------------------------------------------- state directory
def test_state_dir_env_wins(monkeypatch, tmp_path):
    assert default_state_dir({"VLLM_ORCH_STATE_DIR": str(tmp_path)}) == tmp_path


def test_state_dir_without_root(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert default_state_dir({"XDG_RUNTIME_DIR": "/run/user/1000"}) == Path("/run/user/1000/vllm-orch")
    assert default_state_dir({"HOME": str(tmp_path)}) == tmp_path / ".local" / "state" / "vllm-orch"


def test_the_lock_directory_is_the_same_from_a_login_shell_and_from_cron(monkeypatch, tmp_path):
    from orchestrator.run_lock import lock_state_dir

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    shell = lock_state_dir({"HOME": str(tmp_path), "XDG_RUNTIME_DIR": "/run/user/1000"})
    assert shell == lock_state_dir({"HOME": str(tmp_path)}) == tmp_path / ".local" / "state" / "vllm-orch"
    assert lock_state_dir({"VLLM_ORCH_STATE_DIR": "/srv/locks", "HOME": str(tmp_path)}) == Path("/srv/locks")


def test_state_dir_as_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "access", lambda path, mode: path == "/run")
    assert default_state_dir({}) == Path("/run/vllm-orch")


@pytest.mark.parametrize("name", ["chat", "a/b", "..", ".hidden", "ü x"])
def test_state_files_are_one_safe_component_per_name(tmp_path, name):
    store = StateStore(tmp_path)
    path = store.path(name, name)
    assert path.parent.parent == tmp_path and not path.name.startswith(".")
    record = Record(project=name, instance=name, pid=1, start_time=2, boot_id="b", argv=["x"], started_at=0.0,
                    background=True, log_file="/l", port=1, url="u", gpus="all", model="m", user="u",
                    config_file="c", launcher_pid=3)
    store.write(record)
    assert store.read(name, name) == record
    assert [r.instance for r in store.records(name)] == [name]


def test_temporary_files_are_not_records(tmp_path):
    store = StateStore(tmp_path)
    store.project_dir("p").mkdir(parents=True)
    (store.project_dir("p") / ".tmp-abc.json").write_text(json.dumps({"instance": "x"}))
    assert store.records("p") == []


def test_unreadable_record_is_no_record(tmp_path):
    store = StateStore(tmp_path)
    store.project_dir("p").mkdir(parents=True)
    store.path("p", "x").write_text("{not json")
    assert store.read("p", "x") is None and store.records("p") == []


# ----------------------------------------------------------------------------- environment
def test_environment_layers(tmp_path):
    s = spec("a", tmp=tmp_path, gpu="0,2", secrets=(("VLLM_API_KEY", "k3y"),))
    env = process_environment(s, "proj", {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "7", "PYTHONUNBUFFERED": "0"})
    assert env["PATH"] == "/bin"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["CUDA_VISIBLE_DEVICES"] == "0,2"
    assert env["VLLM_API_KEY"] == "k3y"
    assert (env["VLLM_ORCH_PROJECT"], env["VLLM_ORCH_INSTANCE"]) == ("proj", "a")


@pytest.mark.parametrize("gpu, expected", [(None, "7"), ("all", "7"), ("none", ""), ("1", "1"), ("0,2", "0,2")])
def test_cuda_visible_devices_per_gpu_ids_form(tmp_path, gpu, expected):
    env = process_environment(spec("a", tmp=tmp_path, gpu=gpu), "p", {"CUDA_VISIBLE_DEVICES": "7"})
    assert env["CUDA_VISIBLE_DEVICES"] == expected


def test_all_leaves_cuda_visible_devices_unset_when_unset(tmp_path):
    assert "CUDA_VISIBLE_DEVICES" not in process_environment(spec("a", tmp=tmp_path), "p", {})


def test_user_switch_unknown_user_says_so_once(messages):
    assert resolve_user({"AUTO_INFER_VLLM_USER": "no-such-user-xyz"}, messages.append) is None
    assert len(messages) == 1 and "no such user" in messages[0]
    assert resolve_user({}, messages.append) is None and len(messages) == 1


def test_user_switch_needs_root(monkeypatch, messages):
    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    assert resolve_user({"AUTO_INFER_VLLM_USER": "nobody"}, messages.append) is None
    assert "needs root" in messages[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_user_switch_as_root(messages):
    run_as = resolve_user({"AUTO_INFER_VLLM_USER": "nobody"}, messages.append)
    assert run_as is not None and run_as.name == "nobody" and run_as.uid == 65534 and not messages
    assert resolve_user({"AUTO_INFER_VLLM_USER": "root"}, messages.append) is None and not messages


# ----------------------------------------------------------------------------- launch
def test_foreground_returns_the_first_non_zero_exit_code_and_runs_the_rest(backend, tmp_path, messages):
    specs = [spec("ok", "pass", background=False, tmp=tmp_path),
             spec("three", "raise SystemExit(3)", background=False, tmp=tmp_path),
             spec("four", "raise SystemExit(4)", background=False, tmp=tmp_path)]
    assert backend.launch(project(*specs), None, out=messages.append) == 3
    assert [m for m in messages if "exited" in m] == ["ok: exited with code 0", "three: exited with code 3",
                                                      "four: exited with code 4"]
    assert backend.store.records("unit") == []  # foreground records go when the process does


def test_foreground_killed_by_a_signal_is_128_plus_n(backend, tmp_path, messages):
    s = spec("k", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)", background=False, tmp=tmp_path)
    assert backend.launch(project(s), None, out=messages.append) == 137


def test_foreground_waits_before_the_next_instance(backend, tmp_path, messages):
    stamp = tmp_path / "order"
    first = spec("first", f"import time; time.sleep(0.3); open({str(stamp)!r}, 'a').write('first ')",
                 background=False, tmp=tmp_path)
    second = spec("second", f"open({str(stamp)!r}, 'a').write('second')", background=False, tmp=tmp_path)
    assert backend.launch(project(first, second), None, out=messages.append) == 0
    assert stamp.read_text() == "first second"


def test_command_not_found_is_127_and_the_others_still_start(backend, tmp_path, messages):
    missing = spec("missing", argv=("/nonexistent/python", "-m", "x"), background=False, tmp=tmp_path)
    fine = spec("fine", "pass", background=False, tmp=tmp_path)
    assert backend.launch(project(missing, fine), None, out=messages.append) == 127
    assert "fine: exited with code 0" in messages


def test_log_gets_a_start_line_and_output_appended(backend, tmp_path, messages):
    s = spec("a", "import sys; print('out'); print('err', file=sys.stderr)", background=False, tmp=tmp_path)
    backend.launch(project(s), None, out=messages.append)
    backend.launch(project(s), None, out=messages.append)
    lines = Path(s.log_file).read_text().splitlines()
    assert len(lines) == 6 and "vllm-orch: starting instance a:" in lines[0] and lines[1:3] == ["out", "err"]


def test_secrets_reach_the_process_but_no_message(backend, tmp_path, messages):
    s = spec("a", "import os; print(os.environ['VLLM_API_KEY'])", background=False, tmp=tmp_path,
             secrets=(("VLLM_API_KEY", "s3cr3t-value"),))
    backend.launch(project(s), None, out=messages.append)
    assert Path(s.log_file).read_text().splitlines()[-1] == "s3cr3t-value"
    assert not any("s3cr3t" in m for m in messages)


def test_disabled_and_unselected_instances_are_not_launched(backend, tmp_path, messages):
    on = spec("on", "pass", background=False, tmp=tmp_path)
    off = spec("off", "pass", background=False, tmp=tmp_path, enabled=False)
    other = spec("other", "pass", background=False, tmp=tmp_path)
    assert backend.launch(project(on, off, other), {"on", "off"}, out=messages.append) == 0
    assert not Path(other.log_file).exists() and not Path(off.log_file).exists()
    assert any("off: disabled" in m for m in messages)


def test_background_record_twin_and_clean_down(backend, tmp_path, messages):
    s = spec("bg", "import signal, sys, time\n"
                   "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
                   "print('READY'.lower(), flush=True)\ntime.sleep(60)", tmp=tmp_path)
    p = project(s)
    assert backend.launch(p, None, out=messages.append) == 0
    _wait_for_line(Path(s.log_file), "\nready")  # its SIGTERM handler is in place
    record = backend.store.read("unit", "bg")
    assert record.argv == list(s.command) and record.background and record.port == 1
    assert record.start_time == proc_stat(record.pid).start_time
    assert proc_stat(record.pid).session == record.pid  # its own session
    assert backend.launch(p, None, out=messages.append) == 0
    assert any(m.startswith(f"bg: already running (pid {record.pid})") for m in messages)
    assert backend.store.read("unit", "bg").pid == record.pid

    rows = backend.ps(p)
    assert [(r["name"], r["state"], r["pid"], r["gpus"], r["model"], r["port"]) for r in rows] == [
        ("bg", "running", record.pid, "all", "m-bg", 1)]
    assert rows[0]["health"] == "starting" and rows[0]["log_file"] == s.log_file and rows[0]["uptime"]

    results = backend.down(p.name, None, timeout=10, out=messages.append)
    assert [(r["name"], r["result"], r["signal"], r["exit_code"]) for r in results] == [("bg", "stopped", "SIGTERM", 0)]
    assert proc_stat(record.pid) is None
    assert backend.store.records("unit") == []
    assert backend.ps(p)[0]["state"] == "not started"


def test_second_launch_notes_a_changed_command(backend, tmp_path, messages):
    backend.launch(project(spec("bg", tmp=tmp_path)), None, out=messages.append)
    changed = spec("bg", SLEEP + " # changed", tmp=tmp_path)
    backend.launch(project(changed), None, out=messages.append)
    assert "another command than the config's" in messages[-1]
    backend.down("unit", None, timeout=5, out=messages.append)


def test_down_kills_after_the_timeout(backend, tmp_path, messages):
    s = spec("stubborn", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                         "print('READY'.lower(), flush=True)\ntime.sleep(60)", tmp=tmp_path)
    backend.launch(project(s), None, out=messages.append)
    _wait_for_line(Path(s.log_file), "\nready")
    pid = backend.store.read("unit", "stubborn").pid
    started = time.monotonic()
    [result] = backend.down("unit", None, timeout=0.5, out=messages.append)
    assert (result["result"], result["signal"], result["exit_code"]) == ("killed", "SIGKILL", 137)
    assert 0.5 <= time.monotonic() - started < 5
    assert proc_stat(pid) is None


def test_down_stops_what_the_process_left_in_its_session(backend, tmp_path, messages):
    # The leader (like a wrapper that does not forward signals) exits on SIGTERM and leaves a
    # child behind in its session; down must not report success while that child runs.
    child_pid = tmp_path / "child.pid"
    code = (f"import subprocess, sys, time\n"
            f"c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            f"open({str(child_pid)!r}, 'w').write(str(c.pid))\n"
            f"time.sleep(60)")
    s = spec("wrapper", code, tmp=tmp_path)
    backend.launch(project(s), None, out=messages.append)
    deadline = time.monotonic() + 10
    while not child_pid.exists() or not child_pid.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    orphan = int(child_pid.read_text())
    [result] = backend.down("unit", None, timeout=10, out=messages.append)
    assert result["result"] == "stopped" and "leftover" in messages[-1]
    deadline = time.monotonic() + 5
    while (stat := proc_stat(orphan)) is not None and not stat.exited and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stat is None or stat.exited


def test_down_never_signals_a_recycled_pid(backend, tmp_path, messages):
    """A record whose pid now belongs to another process (another start time) is stale: down
    removes the record and signals nothing."""
    bystander = subprocess.Popen([PY, "-c", SLEEP], start_new_session=True)
    try:
        stat = proc_stat(bystander.pid)
        backend.store.write(Record(
            project="unit", instance="ghost", pid=bystander.pid, start_time=stat.start_time - 1,
            boot_id=local.boot_id(), argv=[PY, "-c", SLEEP], started_at=time.time(), background=True,
            log_file=str(tmp_path / "ghost.log"), port=1, url="http://127.0.0.1:1", gpus="all", model="",
            user="root", config_file="", launcher_pid=1))
        p = project(spec("ghost", tmp=tmp_path))
        assert backend.ps(p)[0]["state"] == "exited" and backend.ps(p)[0]["pid"] is None
        [result] = backend.down(p.name, None, timeout=0.5, out=messages.append)
        assert result["result"] == "not running" and "nothing signalled" in messages[-1]
        time.sleep(0.2)
        assert bystander.poll() is None, "the bystander was signalled"
        assert backend.store.records("unit") == []
    finally:
        bystander.kill()
        bystander.wait()


def test_stale_record_does_not_block_a_launch(backend, tmp_path, messages):
    s = spec("a", "pass", background=False, tmp=tmp_path)
    backend.store.write(Record(project="unit", instance="a", pid=2 ** 22 - 1, start_time=1, boot_id=local.boot_id(),
                               argv=[], started_at=0, background=True, log_file="", port=1, url="", gpus="",
                               model="", user="", config_file="", launcher_pid=1))
    assert backend.launch(project(s), None, out=messages.append) == 0
    assert "a: exited with code 0" in messages


def test_ps_lists_orphans_and_disabled(backend, tmp_path, messages):
    backend.launch(project(spec("gone-from-config", tmp=tmp_path)), None, out=messages.append)
    p = project(spec("off", tmp=tmp_path, enabled=False), spec("idle", tmp=tmp_path))
    rows = {r["name"]: r for r in backend.ps(p)}
    assert rows["off"]["state"] == "disabled" and rows["idle"]["state"] == "not started"
    assert rows["gone-from-config"]["state"] == "running" and not rows["gone-from-config"]["configured"]
    assert set(rows["idle"]) >= {"name", "state", "pid", "health", "gpus", "url", "model", "uptime", "port", "log_file"}
    [result] = backend.down(p.name, None, timeout=5, out=messages.append)  # down takes orphans too
    assert result["name"] == "gone-from-config" and result["result"] == "stopped"


def test_down_of_a_named_instance_that_is_not_running(backend, tmp_path, messages):
    assert backend.down("unit", {"a"}, timeout=1, out=messages.append) == [
        {"name": "a", "pid": None, "ok": True, "result": "not running"}]


def _wait_for_line(path: Path, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.02)
    raise AssertionError(f"{text!r} never appeared in {path}")


def test_launch_decides_before_it_acts_and_dry_run_shows_the_order(tmp_path, capsys):
    """`launch --dry-run` prints the plan `launch` follows: instances sharing a GPU with an
    earlier background one wait for it (held back while the others start), a running one is
    left alone, a disabled one skipped; nothing is started."""
    from orchestrator.backends.local import DISABLED, RUNNING, START, plan_launch
    from orchestrator.cli import main
    from tests.builders import instances

    text = """
[instance.server]
gpu_memory_utilization = 0.4
[instance.a.control]
gpu_ids = "0"
[instance.a.server]
model = "/m"
[instance.b.control]
gpu_ids = "0"
[instance.b.server]
model = "/m"
port = 8001
[instance.c.control]
gpu_ids = "1"
[instance.c.server]
model = "/m"
port = 8002
[instance.d.control]
enabled = false
[instance.d.server]
model = "/m"
port = 8003
[instance.e.control]
gpu_ids = "1"
[instance.e.server]
model = "/m"
port = 8004
"""
    specs = instances(text, tmp_path)
    steps = plan_launch(specs, None, lambda name: 4242 if name == "e" else None)
    assert [(s.instance, s.kind) for s in steps] == [("d", DISABLED), ("a", START), ("c", START), ("b", START),
                                                   ("e", RUNNING)]
    assert [e.after for e in steps[3].waits] == ["a"] and steps[4].detail == "pid 4242"
    config = tmp_path / "launch.toml"
    config.write_text(text)
    state = tmp_path / "state"
    os.environ["VLLM_ORCH_STATE_DIR"] = str(state)
    try:
        assert main(["-c", str(config), "launch", "--dry-run"]) == 0
    finally:
        del os.environ["VLLM_ORCH_STATE_DIR"]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("skip d: disabled") and out[1] == "start a (background)"
    assert out[3].startswith("start b (background); start b after a")
    assert not (tmp_path / "state").exists() or not list(state.rglob("*.json"))  # nothing launched
