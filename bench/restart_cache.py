"""Time to healthy of a real vLLM (CPU build, torch.compile on: no enforce_eager) on its first
start and on a restart after `down` + `up`, with the per-instance caches on the host (the
default) and without them (cache_host_dir = false). bench/README.md has the figures.

    .venv/bin/python bench/restart_cache.py [--model-dir .demo/models] [--keep-tmp]

Needs the vLLM CPU image and the tiny model (scripts/build-images.sh vllm-cpu model); builds
vllm-orch/vllm-cpu-cxx:0.32.0 (that image plus g++, tests/images/vllm-cpu-cxx) when missing.
Every container it makes is in a project of its own, removed at the end, failed or not.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE = "vllm-orch/vllm-cpu-cxx:0.32.0"
TIMEOUT_S = 1800

CONFIG = """
[master]
api_server_module = "vllm.entrypoints.openai.api_server"

[instance.control]
gpu_ids = "none"

[instance.server]
host = "0.0.0.0"
model = "/llm-models/tiny-llama"
dtype = "float32"
max_model_len = 256
# No enforce_eager: vLLM compiles the model with torch.compile (g++ in the image).

[instance.tiny.server]
port = {port}

[docker]
project = "{project}"
image = "{image}"
volumes = ["{models}:/llm-models:ro"]
log_host_dir = "logs"
shm_size = "1g"
cache_host_dir = {cache}
env = {{ VLLM_CPU_KVCACHE_SPACE = "1" }}
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "orchestrator", "-c", str(config), *args],
                          capture_output=True, text=True, env=env, timeout=TIMEOUT_S + 60)


def ensure_image() -> None:
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0:
        return
    print(f"building {IMAGE} (Debian g++ on top of vllm-orch/vllm-cpu:0.32.0)", file=sys.stderr)
    subprocess.run(["docker", "build", "--network", "host", "-t", IMAGE, str(REPO / "tests/images/vllm-cpu-cxx")],
                   check=True)


def up_wait(config: Path) -> float:
    """Seconds from `up --wait` to the server answering /health (vllm-orch's own figure)."""
    result = cli(config, "up", "--wait", "--timeout", str(TIMEOUT_S), "--json")
    if result.returncode != 0:
        raise SystemExit(f"up failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)["healthy_after_s"]["tiny"]


_STAMP = re.compile(r"(\d\d-\d\d \d\d:\d\d:\d\d) \[cpu_model_runner\.py:\d+\] (Warming up model for the compilation|Warming up done)")


def compile_phases(log: Path) -> list[float]:
    """Seconds of vLLM's compile-and-warm-up phase in each start logged (whole seconds: vLLM's stamps)."""
    phases, began = [], None
    for match in _STAMP.finditer(log.read_text(errors="replace")):
        when = datetime.strptime(match.group(1), "%m-%d %H:%M:%S")
        if match.group(2).startswith("Warming up model"):
            began = when
        elif began is not None:
            phases.append((when - began).total_seconds())
            began = None
    return phases


def measure(workdir: Path, models: Path, cache: bool) -> dict[str, float]:
    config = workdir / f"{'cached' if cache else 'uncached'}.toml"
    config.write_text(CONFIG.format(port=free_port(), project=f"bench-restart-{uuid.uuid4().hex[:8]}", image=IMAGE,
                                    models=models, cache="true" if cache else "false"))
    try:
        first = up_wait(config)
        down = cli(config, "down")
        if down.returncode != 0:
            raise SystemExit(f"down failed:\n{down.stderr}")
        restart = up_wait(config)
    finally:
        cli(config, "down")
    phases = compile_phases(workdir / "logs" / "vllm-server-tiny.log")[-2:]
    return {"first_start_s": round(first, 1), "restart_s": round(restart, 1),
            "compile_phase_first_s": phases[0] if phases else None,
            "compile_phase_restart_s": phases[-1] if len(phases) > 1 else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=REPO / ".demo" / "models")
    parser.add_argument("--keep-tmp", action="store_true")
    args = parser.parse_args()
    if not (args.model_dir / "tiny-llama" / "config.json").is_file():
        raise SystemExit(f"no tiny model under {args.model_dir}: scripts/build-images.sh model makes it")
    ensure_image()
    workdir = Path(tempfile.mkdtemp(prefix="vllm-orch-restart-"))
    try:
        started = time.monotonic()
        results = {"cached": measure(workdir, args.model_dir.resolve(), cache=True),
                   "uncached": measure(workdir, args.model_dir.resolve(), cache=False)}
        results["load_1m_after"] = os.getloadavg()[0]
        results["wall_s"] = round(time.monotonic() - started)
        print(json.dumps(results, indent=2))
        cached = workdir / "cache" / "tiny" / "vllm"
        print(f"vLLM cache after the runs: {sum(f.stat().st_size for f in cached.rglob('*') if f.is_file()) >> 10} KiB "
              f"in {cached}", file=sys.stderr)
    finally:
        if not args.keep_tmp:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
