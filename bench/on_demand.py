"""What the on-demand slow path costs, and that the hot path pays nothing for it.

    .venv/bin/python bench/on_demand.py [--rounds 5] [--seconds 5] [--load-delay 2] [--vllm]

1. Cold start: an on-demand instance, stopped. Its own start-to-healthy time (the container
   started straight through the engine, /health polled every 20 ms) and the time from a first
   request through the gateway (HAProxy -> the activator, which starts it and holds the
   request) to its answer; during that request the bench polls the instance's /health itself,
   so what the slow path adds is measured against the very start it triggered (answer minus
   the moment /health first answered), which a loaded machine's start-to-start variance does
   not blur. The stand-in (vllm-orch/standin, not vLLM) loads for `--load-delay`
   seconds before it listens; `--vllm` uses the real CPU vLLM on the tiny model instead. Target:
   the slow path adds <= 0.5 s (median over `--rounds`).
2. Hot path: requests per second (8 keep-alive connections, `--seconds`) to a running model
   through the gateway, with an on-demand model (and the activator) in the project and without.

Prints a Markdown table; exit 1 when the slow path adds more than 0.5 s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "orchestrator"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def config(directory: Path, project: str, gateway: int, *, on_demand: bool, vllm: bool, delay: float) -> Path:
    if vllm:
        head = f"""
[master]
api_server_module = "vllm.entrypoints.openai.api_server"
[docker]
project = "{project}"
image = "vllm-orch/vllm-cpu:0.32.0"
volumes = ["{os.environ.get('VLLM_ORCH_MODEL_DIR', REPO / '.demo/models')}:/llm-models:ro"]
shm_size = "1g"
env = {{ VLLM_CPU_KVCACHE_SPACE = "1" }}
[instance.server]
host = "0.0.0.0"
model = "/llm-models/tiny-llama"
dtype = "float32"
max_model_len = 256
enforce_eager = true
"""
    else:
        head = f"""
[master]
api_server_module = "standin_vllm.api_server"
[docker]
project = "{project}"
image = "vllm-orch/standin:latest"
shm_size = "64m"
[instance.server]
model = "/m"
standin_listen_delay = {delay}
"""
    body = head + f"""
[instance.control]
gpu_ids = "none"
[gateway]
port = {gateway}
policy = "round_robin"
[instance.hot.server]
served_model_name = "hot"
port = {free_port()}
standin_listen_delay = 0
"""
    if vllm:
        body = body.replace("standin_listen_delay = 0\n", "")
    if on_demand:
        body += f"""
[instance.cold.docker]
on_demand = true
idle_stop_after = 0
[instance.cold.server]
served_model_name = "cold"
port = {free_port()}
"""
    path = directory / f"{project}.toml"
    path.write_text(body)
    return path


def cli(path: Path, *args: str) -> None:
    done = subprocess.run(CLI + ["-c", str(path), *args], capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"vllm-orch {' '.join(args)} failed: {done.stderr.strip()[-500:]}")


def post(port: int, model: str, timeout: float = 900) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    connection.request("POST", "/v1/completions", body=json.dumps({"model": model, "prompt": "hi", "max_tokens": 2}),
                       headers={"Content-Type": "application/json"})
    answer = connection.getresponse()
    answer.read()
    connection.close()
    return answer.status


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


def healthy(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        connection = http.client.HTTPConnection(host, int(port), timeout=1)
        connection.request("GET", "/health")
        ok = connection.getresponse().status == 200
        connection.close()
        return ok
    except OSError:
        return False


def wait_stopped(container: str) -> None:
    while docker("inspect", "-f", "{{.State.Running}}", container) == "true":
        time.sleep(0.05)


healthy_at: list[float] = []  # per round: request sent -> the started instance's /health first answered


def cold(path: Path, project: str, gateway: int, rounds: int) -> tuple[list[float], list[float]]:
    container = f"{project}-cold"
    url = docker("inspect", "-f", '{{index .Config.Labels "io.vllm-orch.url"}}', container)
    own, through = [], []
    for _ in range(rounds):
        docker("stop", container)
        wait_stopped(container)
        time.sleep(2)  # the agent has said `maint` and HAProxy has taken it out
        started = time.monotonic()
        docker("start", container)
        while not healthy(url):
            time.sleep(0.02)
        own.append(time.monotonic() - started)
        docker("stop", container)  # the activator sees it stopped at its next resync (5 s)
        wait_stopped(container)
        time.sleep(6)
        started = time.monotonic()
        seen: list[float] = []
        done = threading.Event()

        def watch_health() -> None:  # the same start, seen from outside: when /health first answers
            while not done.is_set():
                if healthy(url):
                    seen.append(time.monotonic() - started)
                    return
                time.sleep(0.02)

        watcher = threading.Thread(target=watch_health)
        watcher.start()
        status = post(gateway, "cold")
        through.append(time.monotonic() - started)
        done.set()
        watcher.join()
        healthy_at.append(seen[0] if seen else through[-1])
        assert status == 200, status
    return own, through


def rate(gateway: int, seconds: float, connections: int = 8) -> float:
    count = [0]
    stop = time.monotonic() + seconds
    lock = threading.Lock()
    body = json.dumps({"model": "hot", "prompt": "hi", "max_tokens": 2})

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", gateway, timeout=30)
        done = 0
        while time.monotonic() < stop:
            connection.request("POST", "/v1/completions", body=body, headers={"Content-Type": "application/json"})
            connection.getresponse().read()
            done += 1
        connection.close()
        with lock:
            count[0] += done

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return count[0] / seconds


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--load-delay", type=float, default=2.0)
    parser.add_argument("--vllm", action="store_true")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="bench-on-demand-"))
    results = {}
    for on_demand in (True, False):
        project = f"bench-od-{os.getpid()}-{int(on_demand)}"
        gateway = free_port()
        path = config(directory, project, gateway, on_demand=on_demand, vllm=args.vllm, delay=args.load_delay)
        try:
            cli(path, "up", "--wait", "--timeout", "900")
            post(gateway, "hot")
            results[f"rps_{on_demand}"] = rate(gateway, args.seconds)
            if on_demand:
                results["own"], results["through"] = cold(path, project, gateway, args.rounds)
        finally:
            cli(path, "down")
    own, through = statistics.median(results["own"]), statistics.median(results["through"])
    # What the slow path adds to the start it triggered: answer minus that start's own /health
    # (the start-to-healthy time varies from start to start on a loaded machine; this does not).
    added = statistics.median(t - h for t, h in zip(results["through"], healthy_at))
    what = "CPU vLLM, tiny model" if args.vllm else f"stand-in, {args.load_delay:g} s load"
    print(f"| figure ({what}) | value |\n| --- | --- |")
    print(f"| instance's own start -> /health (median of {args.rounds}) | {own:.2f} s |")
    print(f"| first request through the gateway -> answer, stopped instance | {through:.2f} s |")
    print(f"| same start: request -> the instance's /health answers (median) | {statistics.median(healthy_at):.2f} s |")
    print(f"| added by the slow path (answer - that /health, median) | {added:+.2f} s (target <= 0.5 s) |")
    print(f"| hot path, requests/s with an on-demand model present | {results['rps_True']:.0f} |")
    print(f"| hot path, requests/s without | {results['rps_False']:.0f} |")
    return 0 if added <= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
