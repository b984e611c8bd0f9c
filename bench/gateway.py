"""What the gateway costs: requests through it versus straight to the instances, in one run.

    .venv/bin/python bench/gateway.py [--seconds 5] [--concurrency 1 16 64] [--chunks 16]
                                      [--litellm PATH/TO/litellm] [--json FILE]

Two stand-in servers of one model (`vllm-orch/standin`: they answer at once, not vLLM) are
started by `vllm-orch up` with `[gateway]` (policy round_robin, an API key). For each
concurrency C, C clients with one keep-alive connection each send `POST /v1/completions` for
`--seconds`: first straight to the two servers (each client alternates between them: the same
spread the gateway makes), then through the gateway, then (with `--litellm`) through a LiteLLM
proxy configured with the same two deployments. Then streamed requests (`"stream": true`, N
chunks): time to the first chunk and to the end. Printed: requests per second, p50 / p99
latency, the ratios and the added latency, as a Markdown table; exit 1 when a target is missed
(throughput at C = 64 >= 0.9x direct, added p50 <= 1 ms, faster than LiteLLM on every figure).

The load generator is asyncio with raw HTTP/1.1 on this same machine, so at high rates the
client's own CPU limits all variants alike; the ratios are the figures to read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-key"
TARGETS = {"throughput_c64": 0.9, "added_p50_ms": 1.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ----------------------------------------------------------------------------- load generator
def request_bytes(path: str, body: dict, key: str | None) -> bytes:
    data = json.dumps(body).encode()
    head = f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
    if key:
        head += f"Authorization: Bearer {key}\r\n"
    return head.encode() + b"\r\n" + data


async def read_response(reader: asyncio.StreamReader, on_first_chunk=None) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in
               (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)}
    if b"content-length" in headers:
        await reader.readexactly(int(headers[b"content-length"]))
        if on_first_chunk:
            on_first_chunk()
        return status
    first = True
    while True:  # chunked
        size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return status
        await reader.readexactly(size + 2)
        if first and on_first_chunk:
            on_first_chunk()
            first = False


async def client(targets: list[tuple[str, int]], payload: bytes, deadline: float, out: list, ttft: list | None,
                 offset: int) -> None:
    conns = [await asyncio.open_connection(h, p) for h, p in targets]
    n = offset
    try:
        while time.perf_counter() < deadline:
            reader, writer = conns[n % len(conns)]
            n += 1
            started = time.perf_counter()
            marks: list[float] = []
            writer.write(payload)
            status = await read_response(reader, (lambda: marks.append(time.perf_counter())) if ttft is not None else None)
            done = time.perf_counter()
            if status != 200:
                raise RuntimeError(f"HTTP {status} from {targets}")
            out.append(done - started)
            if ttft is not None and marks:
                ttft.append(marks[0] - started)
    finally:
        for _, writer in conns:
            writer.close()


def load(targets: list[tuple[str, int]], payload: bytes, concurrency: int, seconds: float, stream: bool) -> dict:
    async def run() -> dict:
        latencies: list[float] = []
        ttft: list[float] | None = [] if stream else None
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(client(targets, payload, deadline, latencies, ttft, i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
        result = {"rps": len(latencies) / elapsed, "p50_ms": pct(latencies, 50), "p99_ms": pct(latencies, 99),
                  "n": len(latencies)}
        if ttft is not None:
            result["ttft_p50_ms"] = pct(ttft, 50)
            result["ttft_p99_ms"] = pct(ttft, 99)
        return result

    return asyncio.run(run())


def pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


# ----------------------------------------------------------------------------- setup
def vllm_orch(*args: str) -> None:
    subprocess.run([str(REPO / ".venv/bin/vllm-orch"), *args], check=True, capture_output=True, text=True)


def start_fleet(tmp: Path, max_body_kib: int | None) -> tuple[Path, int, list[int]]:
    ports = [free_port(), free_port()]
    gateway = free_port()
    config = tmp / "bench-gateway.toml"
    config.write_text(textwrap.dedent(f"""
        [master]
        api_server_module = "standin_vllm.api_server"
        [docker]
        image = "vllm-orch/standin:latest"
        project = "bench-gw-{os.getpid()}"
        shm_size = "64m"
        health_interval = 5
        labels = {{ "vllm-orch-bench.run" = "gateway-{os.getpid()}" }}
        [instance.control]
        gpu_ids = "none"
        [instance.server]
        model = "/m"
        served_model_name = "m1"
        [instance.r1.server]
        port = {ports[0]}
        [instance.r2.server]
        port = {ports[1]}
        [gateway]
        port = {gateway}
        policy = "round_robin"
        api_key = "{KEY}"
        """) + (f"max_body_kib = {max_body_kib}\n" if max_body_kib else ""))
    vllm_orch("-c", str(config), "up", "--wait", "--timeout", "120")
    return config, gateway, ports


def start_litellm(executable: str, tmp: Path, ports: list[int]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    config = tmp / "litellm.yaml"
    deployments = "".join(f"""
  - model_name: m1
    litellm_params:
      model: openai/m1
      api_base: http://127.0.0.1:{p}/v1
      api_key: none
""" for p in ports)
    config.write_text(f"model_list:{deployments}\nlitellm_settings:\n  drop_params: true\n"
                      f"general_settings:\n  master_key: sk-{KEY}\n")
    log = open(tmp / "litellm.log", "wb")
    process = subprocess.Popen([executable, "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
                                "--num_workers", "1"], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"LiteLLM exited; see {tmp / 'litellm.log'}")
            time.sleep(0.5)
    process.kill()
    raise RuntimeError("LiteLLM did not listen within 180 s")


# ----------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--chunks", type=int, default=16, help="chunks per streamed answer")
    parser.add_argument("--litellm", default=shutil.which("litellm"), help="the litellm executable (default: on PATH)")
    parser.add_argument("--max-body-kib", type=int, default=None, help="[gateway] max_body_kib (default: its default)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    config, gateway_port, ports = start_fleet(tmp, args.max_body_kib)
    litellm = None
    variants = {"direct": ([("127.0.0.1", p) for p in ports], None),
                "gateway": ([("127.0.0.1", gateway_port)], KEY)}
    try:
        if args.litellm:
            litellm, litellm_port = start_litellm(args.litellm, tmp, ports)
            variants["litellm"] = ([("127.0.0.1", litellm_port)], f"sk-{KEY}")
        results: dict = {}
        plain = {"model": "m1", "prompt": "hello", "max_tokens": 1}
        streamed = {"model": "m1", "prompt": "hello", "max_tokens": args.chunks, "stream": True}
        for name, (targets, key) in variants.items():  # one warm-up each (connections, LiteLLM's first call)
            load(targets, request_bytes("/v1/completions", plain, key), 4, 1.0, False)
        for c in args.concurrency:
            for name, (targets, key) in variants.items():
                results[f"{name} c{c}"] = load(targets, request_bytes("/v1/completions", plain, key), c, args.seconds, False)
                print(f"{name} c{c}: {results[f'{name} c{c}']}", file=sys.stderr)
        for c in (1, 16):
            for name, (targets, key) in variants.items():
                results[f"{name} stream c{c}"] = load(targets, request_bytes("/v1/completions", streamed, key), c,
                                                      args.seconds, True)
                print(f"{name} stream c{c}: {results[f'{name} stream c{c}']}", file=sys.stderr)
    finally:
        if litellm:
            litellm.terminate()
            litellm.wait(30)
        vllm_orch("-c", str(config), "down")
        shutil.rmtree(tmp, ignore_errors=True)

    print(table(results, args.concurrency, list(variants)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    missed = check(results, args.concurrency, list(variants))
    for line in missed:
        print("MISSED: " + line, file=sys.stderr)
    return 1 if missed else 0


def table(results: dict, levels: list[int], variants: list[str]) -> str:
    lines = ["| figure | " + " | ".join(variants) + " | gateway / direct |", "|---" * (len(variants) + 2) + "|"]
    for c in levels:
        row = [results[f"{v} c{c}"] for v in variants]
        d, g = results[f"direct c{c}"], results[f"gateway c{c}"]
        lines.append(f"| req/s, c={c} | " + " | ".join(f"{r['rps']:.0f}" for r in row) + f" | {g['rps'] / d['rps']:.2f}x |")
        lines.append(f"| p50 / p99 ms, c={c} | " + " | ".join(f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}" for r in row)
                     + f" | +{g['p50_ms'] - d['p50_ms']:.2f} / +{g['p99_ms'] - d['p99_ms']:.2f} ms |")
    for c in (1, 16):
        row = [results[f"{v} stream c{c}"] for v in variants]
        d, g = results[f"direct stream c{c}"], results[f"gateway stream c{c}"]
        lines.append(f"| first chunk p50 ms, stream c={c} | " + " | ".join(f"{r['ttft_p50_ms']:.2f}" for r in row)
                     + f" | +{g['ttft_p50_ms'] - d['ttft_p50_ms']:.2f} ms |")
        lines.append(f"| whole stream p50 ms, c={c} | " + " | ".join(f"{r['p50_ms']:.2f}" for r in row)
                     + f" | +{g['p50_ms'] - d['p50_ms']:.2f} ms |")
    return "\n".join(lines)


def check(results: dict, levels: list[int], variants: list[str]) -> list[str]:
    missed = []
    if 64 in levels:
        ratio = results["gateway c64"]["rps"] / results["direct c64"]["rps"]
        if ratio < TARGETS["throughput_c64"]:
            missed.append(f"throughput at c=64 {ratio:.2f}x direct < {TARGETS['throughput_c64']}x")
    for c in levels:
        added = results[f"gateway c{c}"]["p50_ms"] - results[f"direct c{c}"]["p50_ms"]
        if added > TARGETS["added_p50_ms"]:
            missed.append(f"added p50 at c={c} {added:.2f} ms > {TARGETS['added_p50_ms']} ms")
    if "litellm" in variants:
        for key in [f"c{c}" for c in levels]:
            g, lite = results[f"gateway {key}"], results[f"litellm {key}"]
            if g["rps"] <= lite["rps"] or g["p50_ms"] >= lite["p50_ms"]:
                missed.append(f"not faster than LiteLLM at {key}")
        for c in (1, 16):
            if results[f"gateway stream c{c}"]["ttft_p50_ms"] >= results[f"litellm stream c{c}"]["ttft_p50_ms"]:
                missed.append(f"first chunk not sooner than LiteLLM at stream c={c}")
    return missed


if __name__ == "__main__":
    sys.exit(main())
