"""What the gateway costs: requests through it versus straight to the instances, in one run.

    .venv/bin/python bench/gateway.py [--seconds 5] [--concurrency 1 16 64] [--chunks 16]
                                      [--client wrk|python] [--pin] [--max-body-kib N]
                                      [--no-retry-unanswered] [--litellm PATH/TO/litellm] [--json FILE]

Two stand-in servers of one model (`vllm-orch/standin`: they answer at once, not vLLM) are
started by `vllm-orch up` with `[gateway]` (policy round_robin, an API key). For each
concurrency C, C keep-alive connections send `POST /v1/completions` for `--seconds`: first
straight to the two servers (half the connections to each: the same spread the gateway makes),
then through the gateway, then (with `--litellm`) through a LiteLLM proxy configured with the
same two deployments. Then streamed requests (`"stream": true`, N chunks): time to the first
chunk and to the end. Printed: requests per second, p50 / p99 latency, the ratios, the added
latency and the CPU each request costs the gateway's container (and the two servers'), as a
Markdown table; exit 1 when a target is missed (throughput at C = 64 >= 0.9x direct, added
p50 <= 1 ms, faster than LiteLLM on every figure).

The client: `wrk` (C code, Debian's `wrk`; a Lua line makes its requests POSTs) when it is on
PATH, else the asyncio one below (`--client python`), which at C = 64 spends more CPU than the
servers it measures. Streams are always timed by the asyncio client (wrk cannot see a first
chunk). Everything shares this machine's cores: `--pin` puts the gateway's container on CPU 0
and the servers, their Docker port proxies and the client on the others, for every variant, so
the router's CPU is not taken from the servers; the gateway's CPU per request (its cgroup's CPU
time / requests) is the figure that does not depend on the machine's size.
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import json
import os
import re
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


# ----------------------------------------------------------------------------- wrk
WRK_LUA = """-- POST the body in $BENCH_BODY, with the key in $BENCH_KEY when set
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
"""


def wrk_load(targets: list[tuple[str, int]], body: dict, key: str | None, concurrency: int, seconds: float,
             script: Path, cpus: str | None) -> dict:
    """One wrk process (one thread) per target, the connections split between them; their
    requests summed, p50 the mean of theirs, p99 the larger one."""
    split = targets[:1] if concurrency < len(targets) else targets
    env = {**os.environ, "BENCH_BODY": json.dumps(body), "BENCH_KEY": key or ""}
    runs = []
    for i, (host, port) in enumerate(split):
        connections = concurrency // len(split) + (1 if i < concurrency % len(split) else 0)
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "30s", "--latency", "-s", str(script),
                f"http://{host}:{port}/v1/completions"]
        runs.append(subprocess.Popen((["taskset", "-c", cpus] if cpus else []) + argv, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env))
    outputs = [r.communicate()[0] for r in runs]
    rps = p99 = 0.0
    p50s, n = [], 0
    for out in outputs:
        found = re.search(r"Requests/sec:\s+([\d.]+)", out)
        if not found:
            raise RuntimeError(f"wrk failed: {out}")
        socket_errors = re.search(r"connect (\d+), read (\d+), write (\d+)", out)
        if "Non-2xx" in out or (socket_errors and any(int(x) for x in socket_errors.groups())):
            raise RuntimeError(f"errors through {targets}: {out}")
        rps += float(found.group(1))
        n += int(re.search(r"(\d+) requests in", out).group(1))
        p50s.append(_wrk_ms(re.search(r"\s50%\s+(\S+)", out).group(1)))
        p99 = max(p99, _wrk_ms(re.search(r"\s99%\s+(\S+)", out).group(1)))
    return {"rps": rps, "p50_ms": sum(p50s) / len(p50s), "p99_ms": p99, "n": n}


def _wrk_ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)$", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


# ----------------------------------------------------------------------------- CPU per request
def container_cpu_s(container_id: str) -> float:
    """CPU seconds a container's processes have used (cgroup v1 or v2); nan when not found."""
    v1 = glob.glob(f"/sys/fs/cgroup/cpuacct/docker/{container_id}*/cpuacct.usage")
    if v1:
        return int(Path(v1[0]).read_text()) / 1e9
    for pattern in (f"/sys/fs/cgroup/system.slice/docker-{container_id}*.scope/cpu.stat",
                    f"/sys/fs/cgroup/docker/{container_id}*/cpu.stat"):
        for path in glob.glob(pattern):
            usage = re.search(r"usage_usec (\d+)", Path(path).read_text())
            if usage:
                return int(usage.group(1)) / 1e6
    return float("nan")


def container_ids(project: str) -> dict[str, str]:
    """name -> full id of the project's containers."""
    out = subprocess.run(["docker", "ps", "--no-trunc", "--filter", f"label=io.vllm-orch.project={project}",
                          "--format", "{{.Names}} {{.ID}}"], check=True, capture_output=True, text=True).stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def port_proxies(ports: list[int]) -> list[int]:
    """The Docker engine's userland port proxies (`docker-proxy`) of these host ports: in the path
    of every request to a published port, direct or through the gateway."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"docker-proxy") and any(
                argv[i] == b"-host-port" and argv[i + 1] == str(p).encode() for i in range(len(argv) - 1)
                for p in ports):
            found.append(int(pid))
    return found


def pin(project: str, ports: list[int]) -> str:
    """The gateway on CPU 0, the servers and their port proxies on the other CPUs (the client
    goes there too); returns those CPUs as taskset spells them."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs 2 CPUs")
    rest = ",".join(str(c) for c in cpus[1:])
    for name, cid in container_ids(project).items():
        subprocess.run(["docker", "update", "--cpuset-cpus", str(cpus[0]) if name.endswith("-gateway") else rest, cid],
                       check=True, capture_output=True)
    for pid in port_proxies(ports):
        subprocess.run(["taskset", "-a", "-p", "-c", rest, str(pid)], check=True, capture_output=True)
    os.sched_setaffinity(0, set(cpus[1:]))  # the asyncio client, and wrk started from here
    return rest


# ----------------------------------------------------------------------------- setup
def vllm_orch(*args: str) -> None:
    subprocess.run([str(REPO / ".venv/bin/vllm-orch"), *args], check=True, capture_output=True, text=True)


def start_fleet(tmp: Path, max_body_kib: int | None, retry_unanswered: bool) -> tuple[Path, int, list[int]]:
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
        """) + (f"max_body_kib = {max_body_kib}\n" if max_body_kib else "")
        + ("" if retry_unanswered else "retry_unanswered = false\n"))
    vllm_orch("-c", str(config), "up", "--wait", "--timeout", "120")
    return config, gateway, ports


def start_litellm(executable: str, tmp: Path, ports: list[int], cpus: str | None) -> tuple[subprocess.Popen, int]:
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
    process = subprocess.Popen((["taskset", "-c", cpus] if cpus else []) + [executable, "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
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
    parser.add_argument("--no-retry-unanswered", dest="retry_unanswered", action="store_false",
                        help="[gateway] retry_unanswered = false (default: its default, true)")
    parser.add_argument("--client", choices=("wrk", "python"), default="wrk" if shutil.which("wrk") else "python",
                        help="load generator for the plain requests (default: wrk when on PATH)")
    parser.add_argument("--pin", action="store_true",
                        help="gateway (and LiteLLM) on CPU 0; servers, their port proxies and the client on the rest")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    config, gateway_port, ports = start_fleet(tmp, args.max_body_kib, args.retry_unanswered)
    project = f"bench-gw-{os.getpid()}"
    litellm = None
    variants = {"direct": ([("127.0.0.1", p) for p in ports], None),
                "gateway": ([("127.0.0.1", gateway_port)], KEY)}
    try:
        client_cpus = pin(project, ports) if args.pin else None
        ids = container_ids(project)
        gateway_id = ids[f"{project}-gateway"]
        server_ids = [cid for name, cid in ids.items() if not name.endswith("-gateway")]
        if args.litellm:
            litellm, litellm_port = start_litellm(args.litellm, tmp, ports, "0" if args.pin else None)
            variants["litellm"] = ([("127.0.0.1", litellm_port)], f"sk-{KEY}")
        script = tmp / "post.lua"
        script.write_text(WRK_LUA)
        results: dict = {"setup": {"client": args.client, "pinned": args.pin, "cpus": os.cpu_count(),
                                   "max_body_kib": args.max_body_kib or 256, "retry_unanswered": args.retry_unanswered}}
        plain = {"model": "m1", "prompt": "hello", "max_tokens": 1}
        streamed = {"model": "m1", "prompt": "hello", "max_tokens": args.chunks, "stream": True}
        for name, (targets, key) in variants.items():  # one warm-up each (connections, LiteLLM's first call)
            load(targets, request_bytes("/v1/completions", plain, key), 4, 1.0, False)
        for c in args.concurrency:
            for name, (targets, key) in variants.items():
                before = (container_cpu_s(gateway_id), sum(container_cpu_s(i) for i in server_ids))
                if args.client == "wrk":
                    figures = wrk_load(targets, plain, key, c, args.seconds, script, client_cpus)
                else:
                    figures = load(targets, request_bytes("/v1/completions", plain, key), c, args.seconds, False)
                after = (container_cpu_s(gateway_id), sum(container_cpu_s(i) for i in server_ids))
                figures["gateway_cpu_us"] = 1e6 * (after[0] - before[0]) / max(1, figures["n"])
                figures["servers_cpu_us"] = 1e6 * (after[1] - before[1]) / max(1, figures["n"])
                results[f"{name} c{c}"] = figures
                print(f"{name} c{c}: {figures}", file=sys.stderr)
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

    print(f"client {args.client}, {'pinned (gateway on CPU 0)' if args.pin else 'not pinned'}, "
          f"max_body_kib {args.max_body_kib or 256}, retry_unanswered {str(args.retry_unanswered).lower()}")
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
        lines.append(f"| router CPU us / request, c={c} | " + " | ".join(
            "-" if v == "direct" else f"{r['gateway_cpu_us']:.0f}" if v == "gateway" else "?" for v, r in zip(variants, row))
            + " | |")
        lines.append(f"| servers' CPU us / request, c={c} | " + " | ".join(f"{r['servers_cpu_us']:.0f}" for r in row)
                     + f" | +{g['servers_cpu_us'] - d['servers_cpu_us']:.0f} us |")
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
