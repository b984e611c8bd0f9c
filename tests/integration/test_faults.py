"""Faults injected under a fleet, against the real engine: after each, what has the user lost?

The answer each test checks is "nothing": no model container recreated that did not have to be,
no duplicate or orphaned container, no log line lost, no half-made fleet left without saying so,
and one clear line with a documented exit code where a command could not finish. Running the same
command again then finishes the job.

Faults that stop or kill the engine itself run on a dedicated second dockerd (the
`dedicated_engine` fixture), never on the engine everyone else's tests use. Each test is bounded
in time (pytest-timeout) and none is skipped: a missing engine fails them.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from orchestrator.backends.docker import DockerBackend
from tests.integration.conftest import STANDIN_IMAGE, free_port

FAULTS_TIMEOUT_S = 240
pytestmark = pytest.mark.timeout(FAULTS_TIMEOUT_S)


# ----------------------------------------------------------------------------- helpers
def fleet_body(names: list[str], *, server: dict[str, str] | None = None,
               docker: dict[str, str] | None = None) -> str:
    """Stand-in instances on free ports; `server`/`docker`: TOML lines per instance."""
    text = '\n[instance.control]\ngpu_ids = "none"\n[instance.server]\nhost = "0.0.0.0"\n'
    for name in names:
        text += f"[instance.{name}.server]\nport = {free_port()}\n"
        if server and name in server:
            text += server[name] + "\n"
        if docker and name in docker:
            text += f"[instance.{name}.docker]\n{docker[name]}\n"
    return text


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


class CliProcess:
    """The CLI in a subprocess (what a signal or a dying engine needs), its stderr in a file we
    can read while it runs."""

    def __init__(self, fleet, *args: str):
        self.stderr_path = fleet.dir / f"cli-{uuid.uuid4().hex[:6]}.err"
        self._stderr = open(self.stderr_path, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "orchestrator", "-c", str(fleet.path), *args],
                                        stdout=subprocess.DEVNULL, stderr=self._stderr, env=dict(os.environ))

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def finish(self, timeout: float = 120) -> tuple[int, str]:
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"the CLI did not end within {timeout:g}s:\n{self.stderr()}")
        finally:
            self._stderr.close()
        return self.process.returncode, self.stderr()


def listed(fleet) -> list[dict]:
    """The project's containers from one list call (no per-container inspect, which races with
    containers the engine is still making)."""
    return fleet.client.api.containers(all=True, filters={"label": f"io.vllm-orch.project={fleet.name}"})


def settled(fleet, quiet_s: float = 1.0) -> dict[str, str]:
    """{instance: container id} once the engine has finished what a dead client asked of it: a
    create whose client went away may still end, or be rolled back by the engine, just after."""
    def ids() -> dict[str, str]:
        return {row["Labels"]["io.vllm-orch.instance"]: row["Id"] for row in listed(fleet)}

    previous = ids()
    for _ in range(30):
        time.sleep(quiet_s)
        current = ids()
        if current == previous:
            return current
        previous = current
    raise AssertionError(f"the project's containers kept changing: {previous}")


def by_instance(fleet) -> dict[str, list]:
    found: dict[str, list] = {}
    for container in fleet.containers():
        found.setdefault(container.labels["io.vllm-orch.instance"], []).append(container)
    return found


def assert_exactly_one_running_container_each(fleet, names: list[str]) -> dict[str, str]:
    """Exactly one container per configured instance, all running, none other: returns their ids."""
    found = by_instance(fleet)
    assert sorted(found) == sorted(names), f"containers for {sorted(found)}, configured {sorted(names)}"
    duplicates = {name: len(cs) for name, cs in found.items() if len(cs) != 1}
    assert not duplicates, f"duplicate containers: {duplicates}"
    states = {name: cs[0].status for name, cs in found.items()}
    assert set(states.values()) == {"running"}, states
    return {name: cs[0].id for name, cs in found.items()}


def last_line(err: str) -> str:
    return err.strip().splitlines()[-1] if err.strip() else ""


# ----------------------------------------------------------------------------- a killed container
def test_container_killed_with_sigkill_is_shown_and_started_again_unchanged(fleet):
    """A server killed by the kernel (OOM killer, `docker kill`): the user loses nothing. `ps`
    says it exited and with which code (137: SIGKILL); `up` starts the same container again (not
    a new one: same id, same settings) and its log file keeps what the first run wrote."""
    fleet.write(fleet_body(["a", "b"]))
    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 0, err
    ids = {name: fleet.container(name).id for name in ("a", "b")}

    fleet.container("a").kill(signal="SIGKILL")
    wait_for(lambda: fleet.container("a").status == "exited", 30, "a to exit")

    rows = {r["name"]: r for r in fleet.cli_json("ps")["instances"]}
    assert rows["a"]["state"] == "exited" and rows["a"]["exit_code"] == 137, rows["a"]
    assert rows["b"]["state"] == "running" and rows["b"]["exit_code"] is None, rows["b"]
    code, table, _ = fleet.cli("ps")
    assert code == 0 and "exited (137)" in table, table

    plan = fleet.cli_json("up", "--dry-run")
    assert {a["instance"]: a["action"] for a in plan["actions"]} == {"a": "start", "b": "noop"}, plan
    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 0, err
    assert "a: started" in err and "b:" not in err.replace("b: healthy", "")
    assert {name: fleet.container(name).id for name in ("a", "b")} == ids
    assert fleet.container("a").status == "running"
    log = fleet.log_file("a").read_text()
    assert log.count("vllm-orch: starting instance a") == 2, "the first run's log lines were lost"


# ----------------------------------------------------------------------------- the engine restarted
def test_engine_restart_under_a_running_fleet_converges_with_restart_policies_kept(dedicated_fleet, dedicated_engine):
    """dockerd restarted (an upgrade, a crash, a host reboot's engine restart) under a running
    fleet: the user loses nothing. The engine itself brings back the instance whose restart policy
    says so (`unless-stopped`), `ps` shows the other one (`restart = "no"`) as exited, and `up`
    starts that one again without recreating either: same containers, same ids, logs appended."""
    fleet = dedicated_fleet
    fleet.write(fleet_body(["keeps", "plain"], docker={"keeps": 'restart = "unless-stopped"', "plain": 'restart = "no"'}))
    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 0, err
    ids = assert_exactly_one_running_container_each(fleet, ["keeps", "plain"])

    dedicated_engine.restart()

    wait_for(lambda: fleet.container("keeps").status == "running", 60, "the unless-stopped instance to come back", 0.5)
    rows = {r["name"]: r for r in fleet.cli_json("ps")["instances"]}
    assert rows["keeps"]["state"] == "running", rows
    assert rows["plain"]["state"] == "exited", rows
    plan = fleet.cli_json("up", "--dry-run")
    assert {a["instance"]: a["action"] for a in plan["actions"]} == {"keeps": "noop", "plain": "start"}, plan

    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 0, err
    assert "plain: started" in err and "keeps: started" not in err and "created" not in err, err
    assert assert_exactly_one_running_container_each(fleet, ["keeps", "plain"]) == ids
    for name in ("keeps", "plain"):
        assert fleet.log_file(name).read_text().count(f"vllm-orch: starting instance {name}") == 2


# ----------------------------------------------------------------------------- up interrupted
EIGHT = [f"n{i}" for i in range(8)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_up_interrupted_part_way_then_run_again_makes_the_fleet_once(fleet, sig):
    """`up` of 8 instances interrupted (Ctrl-C; or killed: an OOM, a lost SSH session with
    SIGKILL) once the first containers exist, then run again: the user loses nothing. The second
    run finishes the job: exactly one container per instance, no duplicate, nothing orphaned,
    none of the containers the first run made recreated, every log line the first run's servers
    wrote still there."""
    fleet.write(fleet_body(EIGHT))
    assert fleet.cli("validate")[0] == 0  # the option table is cached: the up goes straight to work
    up = CliProcess(fleet, "up")
    wait_for(lambda: listed(fleet), 60, "the first container")
    up.process.send_signal(sig)
    code, err = up.finish(60)
    assert "Traceback" not in err, err
    if sig == signal.SIGINT:
        assert code == 130, err
        assert last_line(err).startswith("vllm-orch: interrupted"), err
    else:
        assert code == -signal.SIGKILL
    made = settled(fleet)
    logs_before = {name: fleet.log_file(name).read_text() for name in made if fleet.log_file(name).exists()}

    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 0, err
    ids = assert_exactly_one_running_container_each(fleet, EIGHT)
    assert {name: ids[name] for name in made} == made, "a container of the first run was recreated"
    for name, before in logs_before.items():
        assert fleet.log_file(name).read_text().startswith(before), f"{name}'s log lost lines"
    rows = fleet.cli_json("ps")["instances"]
    assert sorted(r["name"] for r in rows) == EIGHT and all(r["configured"] for r in rows), rows


# ----------------------------------------------------------------------------- down during up --wait
def test_down_while_another_up_waits_ends_that_up_with_one_line_and_leaves_nothing(fleet):
    """`down` run while another terminal's `up --wait` waits for the models to load: the user
    loses nothing they did not ask to lose. The down removes the fleet at once (it does not wait
    for the loading), the waiting `up` ends within seconds with one line saying the instances were
    stopped or removed while it waited, and exit code 5; no container is left."""
    slow = 'extra_args = ["--standin-health-delay", "300"]'
    fleet.write(fleet_body(["a", "b"], server={"a": slow, "b": slow}))
    up = CliProcess(fleet, "up", "--wait", "--timeout", "200")
    wait_for(lambda: "waiting for" in up.stderr(), 60, "the up to wait", 0.1)

    code, _, err = fleet.cli("down")
    assert code == 0, err
    assert err.count("stopped and removed") == 2, err

    code, err = up.finish(30)
    assert code == 5, err
    line = last_line(err)
    assert line.startswith("vllm-orch: error: ") and "while waiting" in line, err
    assert "Traceback" not in err
    assert fleet.containers() == []


# ----------------------------------------------------------------------------- the engine goes away
@pytest.mark.parametrize("client", ["socket", "sdk"])
def test_engine_going_away_mid_up_is_exit_3_with_a_report_per_instance(dedicated_fleet, dedicated_engine, monkeypatch, client):
    """The engine dies (SIGKILL) while `up` creates 8 instances: the user loses nothing and is
    told where things stand. `up` ends with exit code 3, a line per instance saying whether it was
    done or failed, and a last line naming what was done and what was not; once the engine is
    back, the same `up` makes the fleet: exactly 8 containers, no duplicate."""
    monkeypatch.setenv("VLLM_ORCH_DOCKER_CLIENT", client)
    fleet = dedicated_fleet
    fleet.write(fleet_body(EIGHT))
    assert fleet.cli("validate")[0] == 0
    up = CliProcess(fleet, "up")
    try:
        wait_for(lambda: listed(fleet), 60, "the first container")
        dedicated_engine.kill()
        code, err = up.finish(120)
    finally:
        dedicated_engine.start()
    assert code == 3, err
    assert "Traceback" not in err, err
    done = [n for n in EIGHT if f"{n}: created" in err]  # not per line: parallel lines may still interleave
    failed = [n for n in EIGHT if f"{n}: FAILED: " in err]
    assert sorted(done + failed) == EIGHT, f"not every instance was reported:\n{err}"
    assert failed, f"the engine went away after every instance was done (the fault missed):\n{err}"
    line = last_line(err)
    assert line.startswith("vllm-orch: error: lost the Docker engine"), err
    assert f"{len(done)} of 8 instance(s) done" in line and all(n in line for n in failed), line

    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 0, err
    assert_exactly_one_running_container_each(fleet, EIGHT)


# ----------------------------------------------------------------------------- the log filesystem full
@pytest.fixture
def full_log_dir(tmp_path):
    """A 1 MiB tmpfs, filled to the last byte, as the fleet's log_host_dir; unmounted after."""
    mount_point = tmp_path / "full-logs"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mount_point)], check=True)
    try:
        fd = os.open(mount_point / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError as exc:  # ENOSPC: full to the last page
            assert exc.errno == errno.ENOSPC, exc
        finally:
            os.close(fd)
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=True)
        with open("/proc/self/mounts") as mounts:
            assert f" {mount_point} " not in mounts.read(), f"{mount_point} is still mounted"


def test_full_log_filesystem_is_refused_before_anything_starts(fleet, full_log_dir):
    """The disk that holds the logs is full: the user loses nothing. `up` refuses before it makes
    any container (exit 4, one line naming the directory and the fix), rather than starting
    servers whose output cannot be written; once space is freed the same `up` works."""
    fleet.write(fleet_body(["a", "b"]), docker_extra=f'log_host_dir = "{full_log_dir}"\n')
    code, _, err = fleet.cli("up")
    assert code == 4, err
    line = last_line(err)
    assert str(full_log_dir) in line and "no space" in line, err
    assert fleet.containers() == []

    (full_log_dir / "filler").unlink()
    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 0, err
    assert_exactly_one_running_container_each(fleet, ["a", "b"])
    assert "STANDIN-START" in (full_log_dir / "vllm-server-a.log").read_text()
    fleet.cleanup()  # before the tmpfs is unmounted: its files are bind-mounted into them


# ----------------------------------------------------------------------------- the image removed
def test_image_removed_between_plan_and_create_is_one_line_and_nothing_half_done(fleet, engine, monkeypatch):
    """The image is untagged (a `docker image rm`, a cleanup job) after `up` has planned but
    before it creates: the user loses nothing. `up` says for each instance which image went
    missing and what to do, exits 4 like any missing image, and has made no container."""
    image = f"vllm-orch/fault-{uuid.uuid4().hex[:8]}:gone"
    engine.images.get(STANDIN_IMAGE).tag(image)
    preflight = DockerBackend.preflight

    def preflight_then_untag(self, project, actions, request):
        notes = preflight(self, project, actions, request)
        engine.images.remove(image, noprune=True)  # the tag only: the stand-in itself stays
        return notes

    monkeypatch.setattr(DockerBackend, "preflight", preflight_then_untag)
    try:
        fleet.write(fleet_body(["a", "b"]), image=image)
        code, _, err = fleet.cli("up")
    finally:
        if engine.images.list(name=image):
            engine.images.remove(image, noprune=True)
    assert code == 4, err
    assert "Traceback" not in err
    for name in ("a", "b"):
        assert f"{name}: FAILED: instance '{name}': image '{image}' is no longer on this Docker host" in err, err
    assert last_line(err) == "vllm-orch: error: 2 instance(s) failed: a, b", err
    assert fleet.containers() == []
