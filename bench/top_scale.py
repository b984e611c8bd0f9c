#!/usr/bin/env python3
"""`top --once` of 64 instances: target at most 0.3 s.

    .venv/bin/python bench/top_scale.py [--servers 64] [--repeats 5]

Starts N HTTP servers on loopback in a child process, each answering /metrics with the answer the
real vLLM 0.32 CPU image gave (tests/fixtures/metrics/vllm-cpu-0.32.0.txt, ~49 KB: its size is what
the parsing costs), then measures:

* snapshot: top.Top.snapshot() over N `ps` rows pointing at them (scrape all at once + parse), in
  this process, after a first (warm-up) snapshot;
* command: `vllm-orch -p bench top --once --json` in a fresh process: Python's start-up, the CLI,
  the prometheus_client import, the scrape and the JSON. The one thing replaced is the engine's
  list call (DockerBackend.status answers the N rows, patched in that process before cli.main
  runs), so no 64 containers are needed; that call costs ~10 ms for 64 containers here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ANSWER = REPO / "tests" / "fixtures" / "metrics" / "vllm-cpu-0.32.0.txt"
TARGET_S = 0.3

SERVERS = r'''
import sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
body = open(sys.argv[1], "rb").read()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
ports = []
for _ in range(int(sys.argv[2])):
    s = ThreadingHTTPServer(("127.0.0.1", 0), H); s.daemon_threads = True
    threading.Thread(target=s.serve_forever, daemon=True).start(); ports.append(s.server_address[1])
print(" ".join(map(str, ports)), flush=True)
sys.stdin.read()
'''


COMMAND = r'''
import json, sys
from orchestrator.backends.docker import DockerBackend
rows = json.load(open(sys.argv[1]))
DockerBackend.status = lambda self, project, instances: [dict(r) for r in rows]
from orchestrator.cli import main
sys.exit(main(["-p", "bench", "top", "--once", "--json"]))
'''


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    child = subprocess.Popen([sys.executable, "-c", SERVERS, str(ANSWER), str(args.servers)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ports = [int(p) for p in child.stdout.readline().split()]
        rows = [{"name": f"i{n}", "container": f"p-i{n}", "state": "running", "health": "healthy", "model": "m",
                 "url": f"http://127.0.0.1:{port}"} for n, port in enumerate(ports)]
        from orchestrator.top import Top

        view = Top(lambda: rows)
        view.snapshot()
        times = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            result = view.snapshot()
            times.append(time.perf_counter() - started)
            assert all(r["requests_running"] is not None for r in result), [r["error"] for r in result][:3]
        snap = statistics.median(times)
        print(f"snapshot of {len(rows)} servers: median {snap * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
              f"(target {TARGET_S * 1000:.0f} ms)")
        import json
        import tempfile

        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump(rows, handle)
        env = dict(os.environ)
        command = [sys.executable, "-c", COMMAND, handle.name]
        ctimes = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=REPO)
            ctimes.append(time.perf_counter() - started)
            assert done.returncode == 0, done.stderr
        os.unlink(handle.name)
        baseline = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"])
            baseline.append(time.perf_counter() - started)
        cmd = statistics.median(ctimes)
        print(f"`top --once --json` of {len(rows)} (whole process): median {cmd * 1000:.0f} ms, max "
              f"{max(ctimes) * 1000:.0f} ms; `python -c pass`: {statistics.median(baseline) * 1000:.0f} ms")
        return 0 if cmd <= TARGET_S else 1
    finally:
        child.stdin.close()
        child.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
