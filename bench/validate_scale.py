"""How `validate`, `compose` and `k8s` scale with the number of instances: each must stay linear.

    .venv/bin/python bench/validate_scale.py [--sizes 2000 16000] [--commands validate compose k8s]
                                             [--repeats 1] [--json FILE]

For each size N it writes one config of N instances (each with its own port, no GPU, one image,
one volume) into a temporary directory and times the command in this process (`cli.main`, output
thrown away; `--offline`, so no engine is asked and only vllm-orch's own work is timed), in CPU
seconds of this process (time.process_time): on a shared machine wall time measures the
neighbours as much as the code. It prints seconds per instance for each size and the ratio of the total times of the largest and smallest
size. Linear work gives a ratio near largest/smallest (8 for 16000/2000); the quadratic check
this bench was written for gave ~40 (0.6 s at 2,000 instances, 23.5 s at 16,000).
Exits 1 when a ratio exceeds TARGET_SLACK times the linear one.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.cli import main  # noqa: E402 - after the path is set

TARGET_SLACK = 1.5  # allowed: 1.5 x the linear ratio (machine noise, the allocator, caches)
ARGV = {
    "validate": ["validate", "--offline"],
    "compose": ["compose", "--offline"],
    "k8s": ["k8s", "--offline"],
}


def fleet_toml(n: int, models: Path) -> str:
    lines = ["[docker]", 'image = "vllm-orch/standin:latest"', f'volumes = ["{models}:/models:ro"]',
             "[instance.control]", 'gpu_ids = "none"', "[instance.server]", "max_model_len = 4096", ""]
    for i in range(n):
        lines += [f"[instance.i{i}.server]", f'model = "/models/m{i % 7}"', f"port = {10000 + i}", ""]
    return "\n".join(lines)


def timed(config: Path, command: str) -> float:
    sink = io.StringIO()
    started = time.process_time()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(io.StringIO()):
        code = main(["-c", str(config), *ARGV[command]])
    elapsed = time.process_time() - started
    if code != 0:
        raise SystemExit(f"{command} of {config} exited {code}")
    return elapsed


def run(sizes: list[int], commands: list[str], repeats: int) -> dict:
    results: dict = {"sizes": sizes, "commands": {}}
    with tempfile.TemporaryDirectory(prefix="vllm-orch-scale-") as tmp:
        models = Path(tmp) / "models"
        for i in range(7):
            (models / f"m{i}").mkdir(parents=True)
        configs = {}
        for n in sizes:
            configs[n] = Path(tmp) / f"fleet{n}.toml"
            configs[n].write_text(fleet_toml(n, models))
        for command in commands:
            timed(configs[sizes[0]], command)  # warm-up: imports, the recorded option table
            seconds = {n: statistics.median(timed(configs[n], command) for _ in range(repeats)) for n in sizes}
            ratio = seconds[sizes[-1]] / seconds[sizes[0]]
            results["commands"][command] = {"seconds": seconds, "ratio": ratio,
                                            "linear_ratio": sizes[-1] / sizes[0]}
    return results


def main_() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 16000])
    parser.add_argument("--commands", nargs="+", choices=sorted(ARGV), default=["validate", "compose", "k8s"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    sizes = sorted(args.sizes)
    results = run(sizes, args.commands, args.repeats)
    failed = False
    print("| command | " + " | ".join(f"N = {n}: CPU s (ms/instance)" for n in sizes) + " | ratio (linear) |")
    print("| --- | " + " | ".join("---" for _ in sizes) + " | --- |")
    for command, figures in results["commands"].items():
        cells = [f"{figures['seconds'][n]:.2f} ({1000 * figures['seconds'][n] / n:.2f})" for n in sizes]
        ok = figures["ratio"] <= TARGET_SLACK * figures["linear_ratio"]
        failed |= not ok
        print(f"| {command} | " + " | ".join(cells)
              + f" | {figures['ratio']:.1f} ({figures['linear_ratio']:.0f}){'' if ok else ' MISSED'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main_())
