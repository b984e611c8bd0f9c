"""Fleet tier: three Docker hosts on this machine, provisioned by `ansible-playbook` over real SSH.

Each host is a network namespace with its own address (10.213.N.2/24 behind a veth pair whose
host side is 10.213.N.1), its own dockerd (started with `nsenter --net=...`, because `ip netns
exec` remounts /sys and hides the cgroup mounts dockerd needs) and its own sshd. The mount
namespace is shared, so every host sees the same files: each host gets its own directory (engine
data, venv, TOML, logs) and the module's `docker_host` names that host's engine socket. Images
reach each engine by `docker save | docker load`; vllm-orch reaches each host as wheels the
controller built, installed with `pip --no-index`, as on an offline GPU host.

The hosts are made once per session and everything is removed at the end, even after a failure:
containers, sshd, dockerd, whatever else runs in each namespace, the namespaces, the files.
Nothing here skips: a missing tool is a failure (scripts/setup-fleet-tools.sh installs them).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
STANDIN_IMAGE = os.environ.get("VLLM_ORCH_STANDIN_IMAGE", "vllm-orch/standin:latest")
GATEWAY_IMAGE = os.environ.get("VLLM_ORCH_GATEWAY_IMAGE", "vllm-orch/gateway:latest")
HOOK_STANDIN_DIR = Path(os.environ.get("VLLM_ORCH_HOST_STATE", "/var/lib/vllm-orch-host")) / "nvidia-hook-standin"
BIN = Path(sys.executable).parent
HOSTS = 3
PORTS = {"a": 8001, "b": 8002}


def run(*argv: str, check: bool = True, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _free_subnets(count: int) -> list[int]:
    """Third octets of 10.213.X.0/24 that no interface of this machine uses yet."""
    used = run("ip", "-o", "-4", "addr").stdout
    start = 20 + secrets.randbelow(200)
    free = [x % 250 + 1 for x in range(start, start + 250) if f"10.213.{x % 250 + 1}." not in used]
    return free[:count]


def _wait(what: str, ready, timeout: float = 60, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s\n{tail}")


class Host:
    """One fake GPU server: namespace, address, engine, sshd, its own directory."""

    def __init__(self, root: Path, tag: str, index: int, subnet: int):
        self.name = f"h{index}"
        self.netns = f"vofleet-{tag}-{index}"
        self.veth = f"vfl{tag[:4]}{index}"
        self.address = f"10.213.{subnet}.2"
        self.gateway = f"10.213.{subnet}.1"
        self.dir = root / self.name
        self.socket = self.dir / "docker.sock"
        self.docker_host = f"unix://{self.socket}"
        self.config = self.dir / "fleet.toml"
        self.venv = self.dir / "venv"
        self.dockerd: subprocess.Popen | None = None
        self.sshd: subprocess.Popen | None = None

    # ------------------------------------------------------------------ network
    def make_namespace(self) -> None:
        self.dir.mkdir(parents=True)
        run("ip", "netns", "add", self.netns)
        run("ip", "link", "add", f"{self.veth}h", "type", "veth", "peer", "name", f"{self.veth}c")
        run("ip", "link", "set", f"{self.veth}c", "netns", self.netns)
        run("ip", "addr", "add", f"{self.gateway}/24", "dev", f"{self.veth}h")
        run("ip", "link", "set", f"{self.veth}h", "up")
        inside = ("ip", "netns", "exec", self.netns, "ip")
        run(*inside, "addr", "add", f"{self.address}/24", "dev", f"{self.veth}c")
        run(*inside, "link", "set", f"{self.veth}c", "up")
        run(*inside, "link", "set", "lo", "up")
        # The other hosts (10.213.M.2) through this machine, as a fleet's hosts reach each other.
        run(*inside, "route", "add", "10.213.0.0/16", "via", self.gateway)

    def nsenter(self, *argv: str) -> list[str]:
        return ["nsenter", f"--net=/var/run/netns/{self.netns}", *argv]

    # ------------------------------------------------------------------ engine
    def start_engine(self) -> None:
        env = dict(os.environ)
        if HOOK_STANDIN_DIR.is_dir():  # the engine's NVIDIA driver needs the hook on its PATH (setup-host.sh)
            env["PATH"] = f"{HOOK_STANDIN_DIR}:{env['PATH']}"
        env.pop("DOCKER_HOST", None)
        log = self.dir / "dockerd.log"
        self.dockerd = subprocess.Popen(
            self.nsenter("dockerd", "--data-root", str(self.dir / "data"), "--exec-root", str(self.dir / "exec"),
                         "--pidfile", str(self.dir / "docker.pid"), "--host", self.docker_host),
            stdout=log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True)
        _wait(f"dockerd of {self.name}", lambda: self.docker("info", check=False).returncode == 0, 60, log)

    def stop_engine(self) -> None:
        if self.dockerd is None:
            return
        if self.dockerd.poll() is None:
            self.dockerd.send_signal(signal.SIGTERM)
            try:
                self.dockerd.wait(30)
            except subprocess.TimeoutExpired:
                self.dockerd.kill()
                self.dockerd.wait(10)
        self.dockerd = None

    def docker(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return run("docker", "-H", self.docker_host, *args, check=check, timeout=timeout)

    def containers(self) -> dict[str, dict]:
        """instance -> {id, state, created} of this host's vllm-orch containers; a gateway
        (no instance label, role=gateway) is `<project>/gateway`."""
        ids = self.docker("ps", "-aq", "--filter", "label=io.vllm-orch.owner=vllm-orch").stdout.split()
        if not ids:
            return {}
        found = {}
        for doc in json.loads(self.docker("inspect", *ids).stdout):
            labels = doc["Config"]["Labels"]
            name = labels.get("io.vllm-orch.instance") or f"{labels['io.vllm-orch.project']}/{labels['io.vllm-orch.role']}"
            found[name] = {
                "id": doc["Id"], "state": doc["State"]["Status"], "created": doc["Created"],
                "cmd": doc["Config"]["Cmd"]}
        return found

    # ------------------------------------------------------------------ ssh
    def start_sshd(self, authorized_keys: Path, sshd_config: Path) -> None:
        host_key = self.dir / "ssh_host_ed25519_key"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
        log = self.dir / "sshd.log"
        self.sshd = subprocess.Popen(
            self.nsenter("/usr/sbin/sshd", "-D", "-e", "-f", str(sshd_config),
                         "-o", f"ListenAddress={self.address}", "-o", f"HostKey={host_key}",
                         "-o", f"AuthorizedKeysFile={authorized_keys}", "-o", f"PidFile={self.dir / 'sshd.pid'}"),
            stdout=log.open("ab"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

        def answers() -> bool:
            try:
                with socket.create_connection((self.address, 22), timeout=1) as conn:
                    return conn.recv(4).startswith(b"SSH")
            except OSError:
                return False

        _wait(f"sshd of {self.name}", answers, 30, log)

    # ------------------------------------------------------------------ teardown
    def destroy(self) -> None:
        """Everything this host made, whatever state it is in."""
        for step in (self._remove_containers, self.stop_engine, self._stop_sshd, self._kill_leftovers,
                     self._delete_namespace):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - teardown must go on to the next step
                print(f"teardown of {self.name}: {step.__name__}: {exc}", file=sys.stderr)

    def _remove_containers(self) -> None:
        if self.dockerd is not None and self.dockerd.poll() is None:
            ids = self.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False)

    def _stop_sshd(self) -> None:
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()
            self.sshd.wait(10)

    def _kill_leftovers(self) -> None:
        pids = run("ip", "netns", "pids", self.netns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def _delete_namespace(self) -> None:
        run("ip", "netns", "del", self.netns, check=False)
        run("ip", "link", "del", f"{self.veth}h", check=False)


def _forwarding_rule(tag: str) -> list[str]:
    """Lets this fleet's hosts reach each other through this machine (Docker's FORWARD policy
    is DROP; DOCKER-USER is the chain it leaves to the administrator). Only this fleet's veths."""
    return ["DOCKER-USER", "-i", f"vfl{tag[:4]}+", "-o", f"vfl{tag[:4]}+", "-j", "ACCEPT"]


SSHD_CONFIG = """\
# Throwaway test host: key login as root only, no PAM, files checked loosely (shared /tmp).
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
"""


def host_toml(host: Host, a_server: str = "", extra: str = "", alpha: str = "") -> str:
    """Two stand-in servers (GPU 0 and GPU 1), published on the host's every interface so the
    controller reaches them at 10.213.N.2:PORT. `alpha`: a's served model name (default
    `alpha-<host>`; one name on every host makes replicas of one model across the fleet)."""
    body = f"""
        [master]
        api_server_module = "standin_vllm.api_server"

        [docker]
        image = "{STANDIN_IMAGE}"
        project = "fleet"
        shm_size = "64m"
        stop_timeout = 10
        health_interval = 1
        publish_address = "0.0.0.0"

        [instance.a.control]
        gpu_ids = "0"
        [instance.a.server]
        model = "/models/alpha"
        served_model_name = "{alpha or f'alpha-{host.name}'}"
        host = "0.0.0.0"
        port = {PORTS["a"]}
        {a_server}

        [instance.b.control]
        gpu_ids = "1"
        [instance.b.server]
        model = "/models/beta"
        served_model_name = "beta-{host.name}"
        host = "0.0.0.0"
        port = {PORTS["b"]}
        """
    return textwrap.dedent(body) + textwrap.dedent(extra)


class FleetUnderTest:
    """The hosts, the controller's files (keys, wheels, inventory, installed collection) and a
    way to run playbooks against them."""

    def __init__(self, root: Path, hosts: list[Host]):
        self.root = root
        self.hosts = hosts
        self.by_name = {h.name: h for h in hosts}
        self.key = root / "id_ed25519"
        self.configs = root / "configs"
        self.collections = root / "collections"
        self.wheels = root / "wheels"
        self.inventory = root / "inventory.yml"

    def write_config(self, host: Host, a_server: str = "", extra: str = "", alpha: str = "") -> None:
        """The TOML the controller places on `host` at the next run (`a_server`: more
        [instance.a.server] keys; `extra`: more tables; `alpha`: see host_toml)."""
        (self.configs / f"{host.name}.toml").write_text(host_toml(host, a_server, extra, alpha))

    def write_inventory(self) -> None:
        hosts = {
            h.name: {
                "ansible_host": h.address,
                "vllm_orch_docker_host": h.docker_host,
                "vllm_orch_venv": str(h.venv),
                "vllm_orch_remote_wheel_dir": str(h.dir / "wheels"),
                "vllm_orch_config_path": str(h.config),
                "vllm_orch_config_src": str(self.configs / f"{h.name}.toml"),
                "vllm_orch_fleet_gateway_config_path": str(h.dir / "fleet-gateway.toml"),
            } for h in self.hosts}
        doc = {"vllm_hosts": {"hosts": hosts, "vars": {
            "ansible_user": "root",
            "ansible_python_interpreter": "/usr/bin/python3",
            "vllm_orch_wheel_dir": str(self.wheels),
            "vllm_orch_wait_timeout": 120,
        }}, "vllm_gateway": {"hosts": {self.hosts[0].name: {}}}}  # the fleet gateway's host
        self.inventory.write_text(json.dumps(doc, indent=2))  # JSON is YAML

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ANSIBLE_COLLECTIONS_PATH": str(self.collections),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_PRIVATE_KEY_FILE": str(self.key),
            # No connection sharing: a master process would outlive the namespace it talks to.
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no",
            "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
            "ANSIBLE_FORKS": "10",
            "ANSIBLE_PIPELINING": "True",  # one SSH connection per task instead of three
            "ANSIBLE_LOCAL_TEMP": str(self.root / "ansible-local"),
            "ANSIBLE_NOCOLOR": "1",
        }

    def playbook(self, playbook: str, *args: str, extra_vars: dict | None = None,
                 timeout: float = 600) -> "PlaybookRun":
        argv = [str(BIN / "ansible-playbook"), "-i", str(self.inventory), playbook, *args]
        if extra_vars:
            argv += ["-e", json.dumps(extra_vars)]
        started = time.time()
        result = subprocess.run(argv, capture_output=True, text=True, env=self.env(), timeout=timeout)
        return PlaybookRun(argv, result, started, time.time())


class PlaybookRun:
    """One ansible-playbook run, read through the ansible.posix.json callback."""

    def __init__(self, argv: list[str], result: subprocess.CompletedProcess, started: float, ended: float):
        self.argv, self.rc, self.started, self.ended = argv, result.returncode, started, ended
        self.stderr = result.stderr
        try:
            self.doc = json.loads(result.stdout)
        except ValueError:
            raise AssertionError(f"no JSON from ansible-playbook (rc {result.returncode}):\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}") from None

    @property
    def stats(self) -> dict[str, dict]:
        return self.doc["stats"]

    def results(self, task_name: str) -> dict[str, dict]:
        """host -> result of the task with this name (the last play that ran it)."""
        found: dict[str, dict] = {}
        for play in self.doc["plays"]:
            for task in play["tasks"]:
                name = task["task"]["name"]  # a role's task is "ROLE : NAME"
                if name == task_name or name.endswith(" : " + task_name):
                    found.update(task["hosts"])
        assert found, f"no task {task_name!r} ran: {self!r}"
        return found

    def module(self) -> dict[str, dict]:
        """host -> the module's result, for every host of the run."""
        found = self.results("Bring this host's vLLM servers to its TOML")
        assert set(found) == set(self.stats), f"the module did not run on every host: {self!r}"
        return found

    def failed_hosts(self) -> set[str]:
        return {h for h, s in self.stats.items() if s["failures"] or s["unreachable"]}

    def failures(self) -> dict[str, str]:
        """host -> message of its failed tasks."""
        found: dict[str, str] = {}
        for play in self.doc["plays"]:
            for task in play["tasks"]:
                for host, result in task["hosts"].items():
                    if (result.get("failed") or result.get("unreachable")) and not result.get("ignore_errors"):
                        found[host] = f"{task['task']['name']}: {result.get('msg')}"
        return found

    def __repr__(self) -> str:
        return (f"<ansible-playbook rc={self.rc} took {self.ended - self.started:.1f} s "
                f"failures={self.failures()} stderr={self.stderr[-1500:]!r}>")


def _build_wheels(into: Path) -> None:
    """vllm-orch's wheel and its dependencies', built on the controller (it has the index);
    the hosts install them with --no-index."""
    run(sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(into), str(REPO), timeout=600)


@pytest.fixture(scope="session")
def fleet() -> FleetUnderTest:
    with make_fleet() as made:
        yield made


@contextlib.contextmanager
def make_fleet(count: int = HOSTS):
    """The hosts, made and, on leaving, removed (used by the tests and by bench/fleet.py)."""
    for tool in ("ansible-playbook", "ansible-galaxy"):
        if not (BIN / tool).exists():
            raise RuntimeError(f"{tool} missing next to {sys.executable}: run scripts/setup-fleet-tools.sh")
    for tool in ("/usr/sbin/sshd", shutil.which("nsenter"), shutil.which("dockerd")):
        if not tool or not Path(tool).exists():
            raise RuntimeError(f"{tool or 'nsenter/dockerd'} missing: run scripts/setup-host.sh and scripts/setup-fleet-tools.sh")
    for image, name in ((STANDIN_IMAGE, "standin"), (GATEWAY_IMAGE, "gateway")):
        if run("docker", "image", "inspect", image, check=False).returncode != 0:
            raise RuntimeError(f"image {image} missing; scripts/build-images.sh {name} builds it")

    tag = secrets.token_hex(3)
    # Short: dockerd's and containerd's unix sockets live under it (108-byte limit).
    root = Path(f"/tmp/vofleet-{tag}")
    hosts = [Host(root, tag, i + 1, subnet) for i, subnet in enumerate(_free_subnets(count))]
    test_fleet = FleetUnderTest(root, hosts)
    try:
        root.mkdir()
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        test_fleet.configs.mkdir()
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(test_fleet.key))
        authorized = root / "authorized_keys"
        shutil.copy(f"{test_fleet.key}.pub", authorized)
        sshd_config = root / "sshd_config"
        sshd_config.write_text(SSHD_CONFIG)
        image_tar = root / "images.tar"
        run("docker", "save", "-o", str(image_tar), STANDIN_IMAGE, GATEWAY_IMAGE, timeout=300)
        _build_wheels(test_fleet.wheels)
        run(str(BIN / "ansible-galaxy"), "collection", "install", "--force", "-p", str(test_fleet.collections),
            str(REPO / "ansible"), timeout=300)
        run("iptables", "-I", *_forwarding_rule(tag))
        for host in hosts:
            host.make_namespace()
            host.start_engine()
            host.docker("load", "-i", str(image_tar), timeout=300)
            host.start_sshd(authorized, sshd_config)
            test_fleet.write_config(host)
        image_tar.unlink()
        test_fleet.write_inventory()
        yield test_fleet
    finally:
        for host in hosts:
            host.destroy()
        run("iptables", "-D", *_forwarding_rule(tag), check=False)
        shutil.rmtree(root, ignore_errors=True)
