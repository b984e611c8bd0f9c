#!/usr/bin/env python3
"""What `[monitoring]` costs the servers: a real vLLM request's latency with and without Prometheus
scraping the server every 5 s, in one run; and how long a reload in place takes.

    .venv/bin/python bench/monitoring_cost.py [--phase 30] [--rounds 3] [--reloads 10]

One real vLLM (configs/demo.toml's tiny_a: the CPU build, tiny model; tiny_b off) and its
Prometheus (`[monitoring] scrape_interval = "5s"`) are brought up by `vllm-orch up`. Then, for
--rounds rounds, two phases of --phase seconds each, in an order alternating between rounds:
"off" with the Prometheus container paused (`docker pause`: it scrapes nothing) and "on" with it
running. Each phase sends one completion after another (8 tokens, temperature 0) and times each
from this host. Printed: median and p90 per phase kind, their ratios (on / off), and the number of
scrapes Prometheus made during the "on" phases. Then --reloads POST /-/reload, each timed until
Prometheus has answered (it answers once the config and rules are loaded). Everything it made is
removed at the end (by its project label); the model is $VLLM_ORCH_MODEL_DIR's tiny-llama.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import docker

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = Path(os.environ.get("VLLM_ORCH_MODEL_DIR", REPO / ".demo" / "models"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def complete(port: int, prompt: str) -> float:
    body = json.dumps({"model": "tiny-a", "prompt": prompt, "max_tokens": 8, "temperature": 0}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as answer:
        answer.read()
    return time.perf_counter() - started


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


def scrapes(prom_port: int) -> float:
    url = f"http://127.0.0.1:{prom_port}/api/v1/query?query=" + urllib.parse.quote(
        'count_over_time(up{job="vllm"}[1d])')
    with urllib.request.urlopen(url, timeout=10) as answer:
        result = json.loads(answer.read())["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", type=float, default=30.0, help="seconds per phase (default 30)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of one off and one on phase (default 3)")
    parser.add_argument("--reloads", type=int, default=10, help="reloads timed (default 10)")
    args = parser.parse_args()

    project, port, prom_port = "bmon" + uuid.uuid4().hex[:6], free_port(), free_port()
    client = docker.from_env(version="auto")
    workdir = Path(tempfile.mkdtemp(prefix="bench-monitoring-"))
    cli = [str(REPO / ".venv" / "bin" / "vllm-orch"), "-c", str(REPO / "configs" / "demo.toml"),
           "--set", f"docker.project={project}", "--set", f'docker.log_host_dir="{workdir / "logs"}"',
           "--set", f'docker.cache_host_dir="{workdir / "cache"}"',
           "--set", f'docker.volumes=["{MODEL_DIR}:/llm-models:ro"]',
           "--set", f"instance.tiny_a.server.port={port}", "--set", "instance.tiny_b.control.enabled=false",
           "--set", f"monitoring.port={prom_port}", "--set", 'monitoring.scrape_interval="5s"',
           "--set", f'monitoring.host_dir="{workdir / "prometheus"}"']
    try:
        subprocess.run(cli + ["up", "--wait", "--timeout", "900"], check=True)
        (prom,) = client.containers.list(filters={"label": [f"io.vllm-orch.project={project}",
                                                            "io.vllm-orch.role=monitoring"]})
        for number in range(5):  # warm-up: the first requests of a fresh server are slower
            complete(port, f"warm up {number}")
        times: dict[str, list[float]] = {"off": [], "on": []}
        scraped = 0.0
        for round_number in range(args.rounds):
            order = ("off", "on") if round_number % 2 == 0 else ("on", "off")
            for kind in order:
                if kind == "off":
                    prom.pause()
                before = scrapes(prom_port) if kind == "on" else 0.0
                deadline, number = time.monotonic() + args.phase, 0
                while time.monotonic() < deadline:
                    times[kind].append(complete(port, f"round {round_number} {kind} request {number}"))
                    number += 1
                if kind == "off":
                    prom.unpause()
                else:
                    time.sleep(1)
                    scraped += scrapes(prom_port) - before
        off, on = times["off"], times["on"]
        print(f"requests: {len(off)} without scraping, {len(on)} with ({scraped:.0f} scrapes of the server during them)")
        print(f"median: {statistics.median(off) * 1000:.1f} ms without, {statistics.median(on) * 1000:.1f} ms with: "
              f"ratio {statistics.median(on) / statistics.median(off):.3f}")
        print(f"p90:    {p90(off) * 1000:.1f} ms without, {p90(on) * 1000:.1f} ms with: ratio {p90(on) / p90(off):.3f}")
        reloads = []
        for _ in range(args.reloads):
            started = time.perf_counter()
            request = urllib.request.Request(f"http://127.0.0.1:{prom_port}/-/reload", method="POST")
            with urllib.request.urlopen(request, timeout=30) as answer:
                assert answer.status == 200
            reloads.append(time.perf_counter() - started)
        print(f"reload in place (POST /-/reload until answered): median {statistics.median(reloads) * 1000:.1f} ms, "
              f"max {max(reloads) * 1000:.1f} ms over {len(reloads)}")
        return 0
    finally:
        for container in client.containers.list(all=True, filters={"label": f"io.vllm-orch.project={project}"}):
            container.remove(force=True)
        subprocess.run(["rm", "-rf", str(workdir)], check=False)


if __name__ == "__main__":
    sys.exit(main())
