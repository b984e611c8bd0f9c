#!/usr/bin/env python3
"""`watch`: from the moment a server's /health starts failing to the moment it answers again, for
the stand-in server, against what the settings allow.

    .venv/bin/python bench/watch_heal.py [--after 2 5] [--interval 1] [--repeats 2]

For each `restart_unhealthy_after` R: one stand-in instance (`health_interval` = --interval,
`health_start_period` = 0) under `vllm-orch watch --interval 1`; then POST /standin/fail-health
(the server's /health answers 500 until its process ends) and time, polling every 50 ms:
- restart: until the container's StartedAt changes (watch restarted it);
- healthy: until /health answers 200 again (from this host).
The floor is what the settings make unavoidable: Docker calls it unhealthy after 3 failed checks
(`3 x health_interval`), watch then waits R, and sees it at its next round (up to 1 s): the
"expected" column is 3 x interval + R (+ up to the round and one check interval for Docker's
first failing check). Everything runs on the local engine; containers are removed by label.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("VLLM_ORCH_STANDIN_IMAGE", "vllm-orch/standin:latest")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int) -> bool:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=0.5).status == 200
    except OSError:
        return False


def one(after: int, interval: int, client: docker.DockerClient, workdir: Path) -> tuple[float, float]:
    project, port = "bwatch" + uuid.uuid4().hex[:6], free_port()
    config = workdir / f"{project}.toml"
    config.write_text(textwrap.dedent(f"""
        [master]
        api_server_module = "standin_vllm.api_server"
        [instance.control]
        gpu_ids = "none"
        [instance.a.server]
        host = "0.0.0.0"
        model = "/m"
        port = {port}
        [docker]
        image = "{IMAGE}"
        project = "{project}"
        shm_size = "64m"
        stop_timeout = 5
        health_interval = {interval}
        health_start_period = 0
        restart_unhealthy_after = {after}
        """))
    env = {**os.environ, "VLLM_ORCH_STATE_DIR": str(workdir / "state")}
    cli = [sys.executable, "-m", "orchestrator", "-c", str(config)]
    subprocess.run([*cli, "up", "--wait", "--timeout", "60"], check=True, env=env, capture_output=True)
    watcher = subprocess.Popen([*cli, "watch", "--interval", "1"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        (container,) = client.containers.list(filters={"label": f"io.vllm-orch.project={project}"})
        started = container.attrs["State"]["StartedAt"]
        while container.attrs["State"].get("Health", {}).get("Status") != "healthy":
            time.sleep(0.2)
            container.reload()
        time.sleep(1)
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/standin/fail-health", data=b""),
                               timeout=5).read()
        failed = time.monotonic()
        restarted = healthy = None
        while time.monotonic() - failed < 120:
            if restarted is None:
                container.reload()
                if container.attrs["State"]["StartedAt"] != started:
                    restarted = time.monotonic() - failed
            elif answers(port):
                healthy = time.monotonic() - failed
                break
            time.sleep(0.05)
        if restarted is None or healthy is None:
            raise SystemExit(f"R={after}: not healed within 120 s")
        return restarted, healthy
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.communicate(timeout=30)
        for leftover in client.containers.list(all=True, filters={"label": f"io.vllm-orch.project={project}"}):
            leftover.remove(force=True)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--after", type=int, nargs="+", default=[2, 5])
    parser.add_argument("--interval", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    client = docker.from_env(version="auto")
    print(f"| restart_unhealthy_after | health_interval | expected floor (3 x interval + R) | "
          f"failure -> restart | failure -> healthy |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory() as workdir:
        for after in args.after:
            for _ in range(args.repeats):
                restarted, healthy = one(after, args.interval, client, Path(workdir))
                print(f"| {after} s | {args.interval} s | {3 * args.interval + after} s | {restarted:.1f} s | "
                      f"{healthy:.1f} s |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
