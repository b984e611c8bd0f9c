"""A/B of this checkout against earlier releases on the commands a user repeats: `ps`, a
no-change `up` and `validate --offline`, on one running fleet of N stand-in servers, runs
interleaved so the machine's drift falls on every variant alike.

    .venv/bin/python bench/releases.py --n 64 --repeats 12 --releases 4a4232d 8a54adf

Each release is its `orchestrator/` from this repository's git history (`git archive`), with
bytecode compiled, run by the same interpreter and venv; the fleet is made by this checkout and
every variant sees the same containers. Prints the median of each command per variant and its
ratio to this checkout. Same fleets, clean-up by label and environment as bench/run.py.
"""

from __future__ import annotations

import argparse
import compileall
import io
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (bench/run.py: fleets, clean environment, engine clean-up)

PYTHON = str(bench.REPO / ".venv" / "bin" / "python")
COMMANDS = {"ps": ("ps",), "up (no change)": ("up",), "validate --offline": ("validate", "--offline")}


def install(commit: str, where: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(bench.REPO), "archive", commit, "orchestrator"], capture_output=True,
                             check=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(where)
    compileall.compile_dir(str(where / "orchestrator"), quiet=1)
    return where


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--releases", nargs="+", default=["4a4232d"], help="commits of earlier releases")
    args = parser.parse_args()
    engine = bench.Engine()
    run_id = os.urandom(3).hex()
    root = Path(tempfile.mkdtemp(prefix="vllm-orch-releases-"))
    fleet = bench.Fleet(root, run_id, args.n, "vllm-orch/standin:latest", 300)
    compileall.compile_dir(str(bench.REPO / "orchestrator"), quiet=1)
    variants = {"this checkout": bench.REPO}
    variants.update((commit, install(commit, root / f"release-{commit}")) for commit in args.releases)
    env = bench.clean_env()

    def run(code: Path, *command: str) -> float:
        start = time.perf_counter()
        done = subprocess.run([PYTHON, "-m", "orchestrator", "-c", str(fleet.config), *command], cwd=code,
                              env={**env, "PYTHONPATH": str(code)}, capture_output=True, text=True)
        took = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{code}: {' '.join(command)} failed: {done.stderr.strip()[-400:]}")
        return took

    times = {name: {label: [] for label in COMMANDS} for name in variants}
    try:
        run(bench.REPO, "up", "--wait")
        time.sleep(2)
        for variant in variants.values():  # warm-up: page cache, option-table cache
            for command in COMMANDS.values():
                run(variant, *command)
        names = list(variants)
        for repeat in range(args.repeats):
            k = repeat % len(names)
            for name in names[k:] + names[:k]:
                for label, command in COMMANDS.items():
                    times[name][label].append(run(variants[name], *command))
    finally:
        run(bench.REPO, "down")
        engine.remove_by_label(f"{bench.BENCH_LABEL}={run_id}")  # whatever down left
    base = {label: statistics.median(samples) for label, samples in times["this checkout"].items()}
    print(f"N = {args.n}, {args.repeats} interleaved runs each, medians (ratio to this checkout):")
    for name, by_label in times.items():
        cells = [f"{label} {statistics.median(s):.3f} s ({statistics.median(s) / base[label]:.2f}x)"
                 for label, s in by_label.items()]
        print(f"  {name}: " + ", ".join(cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
