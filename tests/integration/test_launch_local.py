"""`vllm-orch launch` and the local backend's verbs with real processes on this machine.

The CLI runs in a subprocess (`python -m orchestrator`), as the boot hook would run it, so "the
server outlives the launcher" and "the launcher returns the exit code" are what a real process
shows. The servers are the stdlib stand-in (tests/images/standin, run from the source tree via
PYTHONPATH), not vLLM: it loads no model and touches no GPU. CUDA_VISIBLE_DEVICES is checked in
the environment the server reports; no GPU is involved. No Docker engine is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from orchestrator.backends.local import LocalBackend, ProcessHandle, Record, boot_id, proc_stat
from tests.integration.conftest import free_port, http_json

REPO = Path(__file__).resolve().parents[2]
STANDIN_DIR = REPO / "tests" / "images" / "standin"
STANDIN_PIXI = STANDIN_DIR / "pixi"
PIXI_PROJECT = STANDIN_DIR / "pixi-project"


class Launcher:
    """One project on this machine: its TOML, state dir, logs, and a PATH whose `python` is
    the interpreter running the tests (plus a stand-in `pixi`)."""

    def __init__(self, tmp_path: Path, python: str = sys.executable):
        self.dir = tmp_path
        self.path = tmp_path / "fleet.toml"
        self.state = tmp_path / "state"
        self.logs = tmp_path / "logs"
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        (self.bin / "python").symlink_to(python)
        (self.bin / "pixi").symlink_to(STANDIN_PIXI)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTO_INFER_VLLM_")}
        env.pop("CUDA_VISIBLE_DEVICES", None)
        # This checkout's orchestrator first, whichever one the interpreter has installed.
        env.update(PATH=f"{self.bin}:{env.get('PATH', '/usr/bin:/bin')}", PYTHONPATH=f"{REPO}:{STANDIN_DIR}",
                   VLLM_ORCH_STATE_DIR=str(self.state))
        self.env = env

    def write(self, body: str, *, master: str = "", control: str = "", server: str = "") -> Path:
        """The instances' tables, under a header that points at the stand-in and this test's log
        dir; `master`, `control` and `server` add lines to [master], [instance.control] and
        [instance.server]."""
        header = "\n".join([
            "[master]", 'api_server_module = "standin_vllm.api_server"', master,
            "[instance.control]", f'log_dir = "{self.logs}"', control,
            "[instance.server]", 'host = "127.0.0.1"', "gpu_memory_utilization = 0.2", server, "",
        ])
        self.path.write_text(header + textwrap.dedent(body))
        return self.path

    def cli(self, *args: str, env: dict | None = None, config: bool = True) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "orchestrator", *(["-c", str(self.path)] if config else []), *args]
        return subprocess.run(argv, capture_output=True, text=True, env={**self.env, **(env or {})},
                              cwd=self.dir, timeout=120)

    def popen(self, *args: str, env: dict | None = None) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "orchestrator", "-c", str(self.path), *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**self.env, **(env or {})}, cwd=self.dir)

    def ps(self) -> dict[str, dict]:
        result = self.cli("ps", "--backend", "local", "--json")
        assert result.returncode == 0, result.stderr
        return {row["name"]: row for row in json.loads(result.stdout)["instances"]}

    def log(self, name: str) -> str:
        path = self.logs / f"vllm-server-{name}.log"
        return path.read_text() if path.exists() else ""

    def started(self, name: str) -> list[dict]:
        """Every STANDIN-START record in the instance's log (one per start)."""
        prefix = "STANDIN-START "
        return [json.loads(line[len(prefix):]) for line in self.log(name).splitlines() if line.startswith(prefix)]

    def cleanup(self) -> None:
        """Kill whatever the test left running (through the same identity check as down)."""
        for path in self.state.glob("*/*.json"):
            doc = json.loads(path.read_text())
            handle = ProcessHandle.open(doc["pid"], doc["start_time"], doc["boot_id"])
            if handle:
                handle.send(signal.SIGKILL)
                handle.close()


@pytest.fixture
def launcher(tmp_path):
    project = Launcher(tmp_path)
    yield project
    project.cleanup()


def wait_healthy(port: int, timeout: float = 20) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                if response.status == 200:
                    return time.monotonic() - start
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"nothing healthy on port {port} after {timeout}s")


def wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (stat := proc_stat(pid)) is not None and not stat.exited:
        assert time.monotonic() < deadline, f"pid {pid} still running"
        time.sleep(0.05)


# ----------------------------------------------------------------------------- background
def test_background_outlives_the_launcher_then_down_is_clean(launcher):
    pa, pb = free_port(), free_port()
    launcher.write(f"""
        [instance.chat.control]
        gpu_ids = "0,2"
        [instance.chat.server]
        port = {pa}
        model = "/models/chat"
        served_model_name = "chat-model"
        api_key = "sk-local-secret"

        [instance.embed.control]
        gpu_ids = "none"
        [instance.embed.server]
        port = {pb}
        model = "/models/embed"
        """)
    assert launcher.ps()["chat"]["state"] == "not started"

    started = time.monotonic()
    result = launcher.cli("launch")
    launch_s = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert launch_s < 10  # background: the launcher does not wait for the servers
    assert "sk-local-secret" not in result.stdout + result.stderr
    # The launcher process has exited; the servers it started answer.
    wait_healthy(pa)
    wait_healthy(pb)
    status, body = http_json(f"http://127.0.0.1:{pa}/v1/models", {"Authorization": "Bearer sk-local-secret"})
    assert status == 200 and [m["id"] for m in body["data"]] == ["chat-model"]
    assert http_json(f"http://127.0.0.1:{pa}/v1/models")[0] == 401  # VLLM_API_KEY reached it
    _, info = http_json(f"http://127.0.0.1:{pa}/standin/info")
    assert info["env"]["CUDA_VISIBLE_DEVICES"] == "0,2" and info["env"]["PYTHONUNBUFFERED"] == "1"
    assert info["env"]["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # ids are nvidia-smi's numbering
    assert "--api-key" not in info["argv"] and "sk-local-secret" not in json.dumps(info["argv"])
    assert os.getsid(info["pid"]) == info["pid"]  # its own session: the launcher's end is not its end
    _, embed_info = http_json(f"http://127.0.0.1:{pb}/standin/info")
    assert embed_info["env"]["CUDA_VISIBLE_DEVICES"] == ""
    state_text = "".join(p.read_text() for p in launcher.state.glob("*/*.json"))
    assert "sk-local-secret" not in state_text

    rows = launcher.ps()
    chat = rows["chat"]
    assert (chat["state"], chat["pid"], chat["health"], chat["gpus"], chat["model"], chat["port"]) == (
        "running", info["pid"], "healthy", "0,2", "chat-model", pa)
    assert chat["url"] == f"http://127.0.0.1:{pa}" and chat["uptime"] and chat["log_file"].endswith("vllm-server-chat.log")
    assert rows["embed"]["gpus"] == "none" and rows["embed"]["state"] == "running"
    table = launcher.cli("ps", "--backend", "local")
    assert table.returncode == 0 and "healthy" in table.stdout

    # A second launch does not start twins.
    again = launcher.cli("launch")
    assert again.returncode == 0 and f"chat: already running (pid {info['pid']})" in again.stderr
    assert len(launcher.started("chat")) == 1 and len(launcher.started("embed")) == 1

    logs = launcher.cli("logs", "--backend", "local", "chat")
    assert logs.returncode == 0 and "STANDIN-START" in logs.stdout
    tail = launcher.cli("logs", "--backend", "local", "chat", "-n", "1")
    assert tail.returncode == 0 and len(tail.stdout.splitlines()) == 1

    started = time.monotonic()
    down = launcher.cli("down", "--backend", "local", "--json")
    down_s = time.monotonic() - started
    assert down.returncode == 0, down.stderr
    stopped = {r["name"]: r for r in json.loads(down.stdout)["stopped"]}
    assert {n: (r["result"], r["signal"]) for n, r in stopped.items()} == {
        "chat": ("stopped", "SIGTERM"), "embed": ("stopped", "SIGTERM")}
    assert down_s < 10
    for pid in (info["pid"], embed_info["pid"]):
        wait_gone(pid)
    assert "STANDIN-SHUTDOWN signal=15" in launcher.log("chat")
    assert {r["state"] for r in launcher.ps().values()} == {"not started"}
    assert list(launcher.state.glob("*/*.json")) == []
    print(f"\nlaunch (2 background instances) {launch_s:.2f}s, down {down_s:.2f}s")


def test_down_of_one_instance_leaves_the_other(launcher):
    pa, pb = free_port(), free_port()
    launcher.write(f"""
        [instance.a.server]
        port = {pa}
        [instance.b.server]
        port = {pb}
        """)
    assert launcher.cli("launch").returncode == 0
    wait_healthy(pa)
    wait_healthy(pb)
    result = launcher.cli("down", "--backend", "local", "a")
    assert result.returncode == 0 and "a: stopped" in result.stderr
    rows = launcher.ps()
    assert rows["a"]["state"] == "not started" and rows["b"]["state"] == "running"
    assert launcher.cli("down", "--backend", "local").returncode == 0


# ----------------------------------------------------------------------------- foreground
def test_foreground_returns_the_instance_exit_code_in_config_order(launcher):
    launcher.write(f"""
        [instance.first.server]
        port = {free_port()}
        extra_args = ["--standin-exit-code", "0"]

        [instance.second.server]
        port = {free_port()}
        extra_args = ["--standin-exit-code", "3"]

        [instance.third.server]
        port = {free_port()}
        extra_args = ["--standin-exit-code", "4"]
        """, control="background = false")
    result = launcher.cli("launch")
    assert result.returncode == 3, result.stderr
    lines = [line for line in result.stderr.splitlines() if "exited with code" in line]
    assert lines == ["first: exited with code 0", "second: exited with code 3", "third: exited with code 4"]
    assert "refused to start (exit 3)" in launcher.log("second")
    assert launcher.cli("launch", "first").returncode == 0


def test_foreground_forwards_sigterm_and_stops_launching(launcher):
    port = free_port()
    launcher.write(f"""
        [instance.front.control]
        background = false
        [instance.front.server]
        port = {port}

        [instance.later.server]
        port = {free_port()}
        """)
    process = launcher.popen("launch")
    try:
        wait_healthy(port)
        assert launcher.ps()["front"]["state"] == "running"  # visible while the launcher waits
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err  # the stand-in exits 0 on SIGTERM
    assert "STANDIN-SHUTDOWN signal=15" in launcher.log("front")
    assert "not launched: later" in err and launcher.log("later") == ""
    assert launcher.ps()["front"]["state"] == "not started"


def test_foreground_sigint_is_forwarded(launcher):
    port = free_port()
    launcher.write(f"""
        [instance.front.control]
        background = false
        [instance.front.server]
        port = {port}
        """)
    process = launcher.popen("launch")
    try:
        wait_healthy(port)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0
    assert f"STANDIN-SHUTDOWN signal={int(signal.SIGINT)}" in launcher.log("front")


# ----------------------------------------------------------------------------- gpu_ids
def test_cuda_visible_devices_for_each_gpu_ids_form(launcher):
    launcher.write(f"""
        [instance.absent.server]
        port = {free_port()}

        [instance.all.control]
        gpu_ids = "all"
        [instance.all.server]
        port = {free_port()}

        [instance.none.control]
        gpu_ids = "none"
        [instance.none.server]
        port = {free_port()}

        [instance.two.control]
        gpu_ids = "0,2"
        [instance.two.server]
        port = {free_port()}

        [instance.one.control]
        gpu_ids = "1"
        [instance.one.server]
        port = {free_port()}
        """, control="background = false", server='extra_args = ["--standin-exit-code", "0"]')
    result = launcher.cli("launch", env={"CUDA_VISIBLE_DEVICES": "7"})
    assert result.returncode == 0, result.stderr
    seen = {name: launcher.started(name)[0]["env"].get("CUDA_VISIBLE_DEVICES")
            for name in ("absent", "all", "none", "two", "one")}
    assert seen == {"absent": "7", "all": "7", "none": "", "two": "0,2", "one": "1"}
    assert all(launcher.started(n)[0]["env"]["PYTHONUNBUFFERED"] == "1" for n in seen)
    # Without one in the launcher's environment, "all" sets none.
    assert launcher.cli("launch", "all").returncode == 0
    assert "CUDA_VISIBLE_DEVICES" not in launcher.started("all")[-1]["env"]


# ----------------------------------------------------------------------------- the boot hook's rules
def test_config_from_the_environment_with_overrides(launcher):
    port = free_port()
    launcher.write(f"""
        [instance.a.control]
        background = false
        [instance.a.server]
        port = {free_port()}
        extra_args = ["--standin-exit-code", "0"]
        """)
    overrides = json.dumps({"instance": {"a": {"server": {"port": port, "max_model_len": 128}}}})
    result = launcher.cli("launch", config=False,
                          env={"AUTO_INFER_VLLM_CONFIG": str(launcher.path), "AUTO_INFER_VLLM_OVERRIDES": overrides})
    assert result.returncode == 0, result.stderr
    argv = launcher.started("a")[0]["argv"]
    assert argv[argv.index("--port") + 1] == str(port) and "--max-model-len" in argv


def test_no_config_is_silent(launcher):
    result = launcher.cli("launch", config=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_explicit_missing_config_is_an_error(launcher):
    # Only the boot hook's variable is lenient; a file named on the command line must exist.
    result = launcher.cli("launch", "-c", str(launcher.dir / "nope.toml"), config=False)
    assert result.returncode == 2 and "config file not found" in result.stderr


def test_missing_config_warns_and_exits_zero(launcher):
    missing = launcher.dir / "nope.toml"
    result = launcher.cli("launch", config=False, env={"AUTO_INFER_VLLM_CONFIG": str(missing)})
    assert result.returncode == 0 and "warning" in result.stderr and str(missing) in result.stderr
    assert not launcher.logs.exists()


def test_master_disabled_starts_nothing(launcher):
    launcher.write(f"""
        [instance.a.server]
        port = {free_port()}
        """, master="enable = false")
    result = launcher.cli("launch")
    assert result.returncode == 0 and "master.enable = false" in result.stderr
    assert not launcher.logs.exists() and list(launcher.state.glob("*/*.json")) == []


def test_invalid_overrides_are_refused(launcher):
    launcher.write(f"""
        [instance.a.server]
        port = {free_port()}
        """)
    result = launcher.cli("launch", config=False, env={"AUTO_INFER_VLLM_CONFIG": str(launcher.path),
                                                        "AUTO_INFER_VLLM_OVERRIDES": "{not json"})
    assert result.returncode == 2
    assert "AUTO_INFER_VLLM_OVERRIDES" in result.stderr and "invalid JSON" in result.stderr
    assert not launcher.logs.exists()


def test_pixi_command_form(launcher):
    """Through `pixi run --manifest-path ...` (a stand-in pixi that checks its arguments and
    execs the command: real pixi cannot be installed here)."""
    launcher.write(f"""
        [instance.a.control]
        background = false
        [instance.a.server]
        port = {free_port()}
        extra_args = ["--standin-exit-code", "0"]
        """, master=f'pixi_project_dir = "{PIXI_PROJECT}"\npixi_environment = "cuda"')
    result = launcher.cli("launch")
    assert result.returncode == 0, result.stderr + launcher.log("a")
    log = launcher.log("a")
    assert f"PIXI-STANDIN manifest={PIXI_PROJECT} environment=cuda frozen=1" in log
    assert len(launcher.started("a")) == 1


# ----------------------------------------------------------------------------- identity
def test_down_never_signals_a_recycled_pid(launcher):
    """A pid file whose pid now belongs to an unrelated process (another start time) is stale:
    down removes it and that process keeps running."""
    launcher.write(f"""
        [instance.a.server]
        port = {free_port()}
        """)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        backend = LocalBackend(launcher.state)
        backend.store.write(Record(
            project="fleet", instance="a", pid=bystander.pid, start_time=proc_stat(bystander.pid).start_time + 5,
            boot_id=boot_id(), argv=["python"], started_at=time.time(), background=True, log_file="", port=1,
            url="", gpus="all", model="", user="root", config_file=str(launcher.path), launcher_pid=1))
        assert launcher.ps()["a"]["state"] == "exited"
        result = launcher.cli("down", "--backend", "local")
        assert result.returncode == 0 and "nothing signalled" in result.stderr
        time.sleep(0.3)
        assert bystander.poll() is None
        # and launch does not take the stranger for a running instance
        launcher.write(f"""
            [instance.a.control]
            background = false
            [instance.a.server]
            port = {free_port()}
            extra_args = ["--standin-exit-code", "0"]
            """)
        backend.store.write(Record(
            project="fleet", instance="a", pid=bystander.pid, start_time=proc_stat(bystander.pid).start_time + 5,
            boot_id=boot_id(), argv=["python"], started_at=time.time(), background=True, log_file="", port=1,
            url="", gpus="all", model="", user="root", config_file=str(launcher.path), launcher_pid=1))
        assert launcher.cli("launch").returncode == 0 and len(launcher.started("a")) == 1
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


# ----------------------------------------------------------------------------- user switch
@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_runs_as_the_configured_user_when_root(tmp_path):
    """AUTO_INFER_VLLM_USER=nobody: the server runs as nobody and owns its log. The system's
    python is used: the test interpreter may live where nobody cannot read (/root)."""
    system_python = Path("/usr/bin/python3")
    if not system_python.exists():
        pytest.fail("this test needs /usr/bin/python3 (Debian's python3 package)")
    launcher = Launcher(tmp_path, python=str(system_python))
    # pytest's tmp_path is private to root: nobody needs a `python` it can reach.
    shared_bin = Path(tempfile.mkdtemp(prefix="vllm-orch-test-bin-"))
    shared_bin.chmod(0o755)
    (shared_bin / "python").symlink_to(system_python)
    launcher.env["PATH"] = f"{shared_bin}:{launcher.env['PATH']}"
    try:
        port = free_port()
        launcher.write(f"""
            [instance.a.server]
            port = {port}
            """)
        result = launcher.cli("launch", env={"AUTO_INFER_VLLM_USER": "nobody"})
        assert result.returncode == 0, result.stderr + launcher.log("a")
        wait_healthy(port)
        _, info = http_json(f"http://127.0.0.1:{port}/standin/info")
        assert info["uid"] == 65534 and info["env"]["USER"] == "nobody"
        assert (launcher.logs / "vllm-server-a.log").stat().st_uid == 65534
        assert launcher.ps()["a"]["state"] == "running"
        assert launcher.cli("down", "--backend", "local").returncode == 0
        wait_gone(info["pid"])
    finally:
        launcher.cleanup()
        shutil.rmtree(shared_bin)


def test_unknown_user_is_said_once_and_the_current_user_runs_it(launcher):
    launcher.write(f"""
        [instance.a.server]
        port = {free_port()}
        [instance.b.server]
        port = {free_port()}
        """, control="background = false", server='extra_args = ["--standin-exit-code", "0"]')
    result = launcher.cli("launch", env={"AUTO_INFER_VLLM_USER": "no-such-user-xyz"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("no-such-user-xyz") == 1
    assert launcher.started("a")[0]["uid"] == os.getuid() == launcher.started("b")[0]["uid"]


def test_an_on_demand_instance_is_launched_as_usual_with_a_warning(launcher):
    """The launcher has no gateway to start an instance on its first request: `on_demand` in a
    shared TOML starts it like any other, and says so once."""
    port = free_port()
    launcher.write(f"""
        [instance.coder.server]
        port = {port}
        [instance.coder.docker]
        on_demand = true
        idle_stop_after = 60
        """)
    result = launcher.cli("launch")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "instance.coder.docker.on_demand" in line]
    assert len(warnings) == 1 and "`launch` starts it as usual" in warnings[0]
    wait_healthy(port)
    assert launcher.ps()["coder"]["state"] == "running"
    assert launcher.cli("down", "--backend", "local").returncode == 0
