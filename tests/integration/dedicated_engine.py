"""A second, throwaway Docker engine for the fault tests that stop, kill or restart the engine.

Everyone's other tests run on the machine's main engine at the same time, so a test that kills
dockerd must kill its own: this one has its own socket, --data-root, --exec-root (hence its own
containerd), --pidfile and its own copy of the stand-in image, and it runs in a network namespace
of its own. That last part matters: a second dockerd in the host's namespace either creates
bridges and iptables rules there or, with `--bridge=none`, DELETES the host's `docker0` at start
(moby removes the default bridge interface when the bridge is disabled), cutting every container
of the main engine off. In its own namespace its docker0, iptables rules and published ports are
its own; its containers still answer their in-container health checks, which is what `up --wait`
reads when the published port does not answer from here.

Teardown leaves nothing: every container removed, dockerd stopped (SIGKILL after a grace), any
process still running from its directories or in its namespace ended by pid, every mount under
it unmounted, the namespace and the directory deleted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import docker

START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 60


class DedicatedEngine:
    def __init__(self) -> None:
        # Short, under /tmp: unix socket paths (containerd's included) must stay under 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="vo-faults-", dir="/tmp"))
        self.socket = self.root / "docker.sock"
        self.address = f"unix://{self.socket}"
        self.log = self.root / "dockerd.log"
        self.netns = self.root.name  # vo-faults-XXXXXXXX: unique, and says whose it is
        self.process: subprocess.Popen | None = None
        _ip("netns", "add", self.netns)
        _ip("-n", self.netns, "link", "set", "lo", "up")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start dockerd (again: same directories, so same containers and images) and wait for it."""
        self._forget_dead_containerd()
        # nsenter, not `ip netns exec`: that one remounts /sys and hides the cgroup mounts dockerd needs.
        argv = ["nsenter", f"--net=/var/run/netns/{self.netns}",
                "dockerd", "--host", self.address, "--data-root", str(self.root / "data"),
                "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "docker.pid")]
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self.process.returncode}: {self.log_tail()}")
            if self.answers():
                return
            time.sleep(0.2)
        raise RuntimeError(f"dockerd did not answer within {START_TIMEOUT_S}s: {self.log_tail()}")

    def _forget_dead_containerd(self) -> None:
        """After a SIGKILLed dockerd its containerd dies too (parent-death signal) and, where PID 1
        does not reap orphans (this machine's does not), stays a zombie: dockerd would take the
        pid in containerd.pid for a live containerd and wait for its socket forever. A host's init
        reaps it; here the stale pid file is removed, so dockerd starts a fresh containerd, which
        finds the running containers' shims as after any crash."""
        pidfile = self.root / "exec" / "containerd" / "containerd.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            status = ""
        if "containerd" not in status or "State:\tZ" in status:
            pidfile.unlink(missing_ok=True)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): dockerd stops its containers as a host shutdown would."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def kill(self) -> None:
        """The engine crashing: SIGKILL, the socket stops answering at once."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()

    def answers(self) -> bool:
        client = None
        try:
            client = self.client(timeout=5)
            return bool(client.ping())
        except Exception:  # docker's and requests' errors while the socket comes up
            return False
        finally:
            if client is not None:
                client.close()

    def client(self, timeout: int = 60) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.address, version="auto", timeout=timeout)

    def load_image(self, image: str) -> None:
        """`docker save | docker load` from the main engine (no registry is reachable)."""
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        load = subprocess.run(["docker", "load"], stdin=save.stdout, capture_output=True, text=True,
                              env={**os.environ, "DOCKER_HOST": self.address}, timeout=300)
        save.stdout.close()
        save.wait(60)
        if save.returncode or load.returncode:
            raise RuntimeError(f"loading {image} into the dedicated engine failed: {load.stderr.strip()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # ------------------------------------------------------------------ teardown
    def destroy(self) -> None:
        """Leave nothing behind, whatever state the tests left the engine in."""
        try:
            if self.process is not None and self.process.poll() is None:
                client = self.client(timeout=30)
                for container in client.containers.list(all=True):
                    container.remove(force=True)
                client.close()
        except Exception:
            pass  # the engine may be the thing that broke; the steps below do not need it
        finally:
            self.stop()
            self._end_leftover_processes()
            self._unmount_everything_under_root()
            subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
            shutil.rmtree(self.root, ignore_errors=True)

    def _end_leftover_processes(self) -> None:
        """containerd and shims outlive a SIGKILLed dockerd; they name our directories on their
        command lines, which is how they are found (by pid, never by process name)."""
        for pid in self._own_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process is not None:
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def _unmount_everything_under_root(self) -> None:
        prefix = str(self.root) + "/"
        with open("/proc/self/mounts") as mounts:
            points = [line.split()[1] for line in mounts]
        for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)

    def _own_pids(self) -> list[int]:
        """Processes naming our directories (dockerd, containerd, shims) or in our namespace."""
        marker = str(self.root).encode()
        pids = set()
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == os.getpid():
                continue
            try:
                if marker in Path(f"/proc/{name}/cmdline").read_bytes():
                    pids.add(int(name))
            except OSError:
                continue
        listed = subprocess.run(["ip", "netns", "pids", self.netns], capture_output=True, text=True)
        pids.update(int(p) for p in listed.stdout.split() if p.isdigit())
        return sorted(pids)

    def leftovers(self) -> list[str]:
        """Processes, mounts, the namespace or the directory of this engine still present."""
        found = [f"process {pid}" for pid in self._own_pids()]
        prefix = str(self.root)
        with open("/proc/self/mounts") as mounts:
            found += [f"mount {line.split()[1]}" for line in mounts if line.split()[1].startswith(prefix)]
        if os.path.exists(f"/var/run/netns/{self.netns}"):
            found.append(f"network namespace {self.netns}")
        if self.root.exists():
            found.append(f"directory {self.root}")
        return found


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)
