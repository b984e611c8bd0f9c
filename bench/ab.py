"""A/B of cold `up` and `down` at one N: Compose against vllm-orch with different worker-thread
counts (DockerBackend.MAX_WORKERS, set per run), interleaved in rotated order, with paired ratios.

    .venv/bin/python bench/ab.py --n 64 --repeats 4 --variants compose orch16 orch64

Used to decide whether apply()'s 16 threads hold vllm-orch back against Compose, which starts
every container at once (bench/README.md, "Where the time goes"). Same fleets, stand-in image and
clean-up by label as bench/run.py; nothing is written but the printed lines.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: fleets, health wait, clean environment)

PYTHON = str(bench.REPO / ".venv" / "bin" / "python")


def orch_argv(workers: int, config: Path, *args: str) -> list[str]:
    code = ("import sys, orchestrator.backends.docker as d; d.MAX_WORKERS = int(sys.argv.pop(1)); "
            "from orchestrator.cli import console_main; sys.argv[0] = 'vllm-orch'; console_main()")
    return [PYTHON, "-c", code, str(workers), "-c", str(config), *args]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--variants", nargs="+", default=["compose", "orch16", "orch64"],
                        help="compose, or orchK for vllm-orch with K worker threads")
    args = parser.parse_args()
    engine = bench.Engine()
    run_id = os.urandom(3).hex()
    fleet = bench.Fleet(Path(tempfile.mkdtemp(prefix="vllm-orch-ab-")), run_id, args.n, "vllm-orch/standin:latest", 300)
    cli = str(bench.REPO / ".venv" / "bin" / "vllm-orch")
    subprocess.run([cli, "-c", str(fleet.config), "compose", "-o", str(fleet.compose_file)], check=True, capture_output=True)

    def commands(variant: str) -> tuple[list[str], list[str]]:
        if variant == "compose":
            base = ["docker", "compose", "-f", str(fleet.compose_file), "-p", fleet.project]
            return base + ["up", "-d"], base + ["down"]
        workers = int(variant.removeprefix("orch"))
        return orch_argv(workers, fleet.config, "up"), orch_argv(workers, fleet.config, "down")

    times: dict[str, tuple[list[float], list[float]]] = {v: ([], []) for v in args.variants}
    env = bench.clean_env()
    try:
        for r in range(args.repeats):
            k = r % len(args.variants)
            for variant in args.variants[k:] + args.variants[:k]:
                up, down = commands(variant)
                start = time.perf_counter()
                subprocess.run(up, check=True, capture_output=True, env=env)
                t_up = time.perf_counter() - start
                bench.wait_all_healthy(fleet.ports)
                time.sleep(1)
                start = time.perf_counter()
                subprocess.run(down, check=True, capture_output=True, env=env)
                t_down = time.perf_counter() - start
                times[variant][0].append(t_up)
                times[variant][1].append(t_down)
                print(f"repeat {r + 1} {variant}: up {t_up:.2f} s, down {t_down:.2f} s, load {os.getloadavg()[0]:.1f}", flush=True)
                time.sleep(1)
    finally:
        engine.remove_by_label(f"{bench.PROJECT_LABEL}={fleet.project}")
    for variant, (ups, downs) in times.items():
        print(f"{variant}: up median {bench.median(ups):.2f} s {sorted(round(t, 2) for t in ups)}, "
              f"down median {bench.median(downs):.2f} s")
        if variant != "compose" and "compose" in times:
            for what, mine, theirs in (("up", ups, times["compose"][0]), ("down", downs, times["compose"][1])):
                ratios = [a / b for a, b in zip(mine, theirs)]
                print(f"  {what} / compose: median {bench.median(ratios):.2f}x {bench.spread(ratios)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
