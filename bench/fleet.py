"""The Ansible module's own cost: a no-change fleet run with `vllm_orch.fleet.project` against the
same playbook with `ansible.builtin.command: /bin/true` in its place (Ansible's floor: the same
SSH connection, module transfer and Python start on the host, but no vllm-orch).

    .venv/bin/python bench/fleet.py [--repeats 5] [--hosts 3] [--json FILE]

Uses the fleet tier's hosts (tests/fleet/conftest.py: network namespaces, one dockerd and one
sshd each, reached over real SSH), provisions them once with `vllm_orch.fleet.site`, then times
`ansible-playbook` runs of the two one-task playbooks, alternating, each repeat paired. Two
settings: forks=1 (hosts one after the other, so the difference divided by the hosts is the
module's added time per host) and forks=10 (hosts in parallel, as operators run it).
Target: added time per host per run <= 0.3 s (forks=1). Exits 1 when it is missed.
Needs root, like the fleet tier (scripts/setup-fleet-tools.sh installs the tools).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fleet.conftest import make_fleet  # noqa: E402 - after the path is set

TARGET_S = 0.3
PLAY = """---
- name: One task on every host
  hosts: vllm_hosts
  gather_facts: false
  tasks:
    - name: The task under test
{task}
"""
MODULE_TASK = """      vllm_orch.fleet.project:
        config: "{{ vllm_orch_config_path }}"
        docker_host: "{{ vllm_orch_docker_host }}"
        executable: "{{ vllm_orch_venv }}/bin/vllm-orch"
"""
FLOOR_TASK = """      ansible.builtin.command: /bin/true
      changed_when: false
"""


def timed(fleet, playbook: Path, forks: int) -> float:
    env = {**fleet.env(), "ANSIBLE_FORKS": str(forks)}
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(fleet.inventory), str(playbook)]
    started = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    elapsed = time.perf_counter() - started
    stats = json.loads(result.stdout)["stats"]
    if result.returncode != 0 or any(s["changed"] or s["failures"] for s in stats.values()):
        raise SystemExit(f"{playbook.name}: not a clean no-change run: {stats}\n{result.stderr[-2000:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--json", metavar="FILE", help="write every sample here")
    args = parser.parse_args()
    with make_fleet(args.hosts) as fleet:
        provision = fleet.playbook("vllm_orch.fleet.site")
        if provision.rc != 0:
            raise SystemExit(f"provisioning failed: {provision!r}")
        module_play, floor_play = fleet.root / "module.yml", fleet.root / "floor.yml"
        module_play.write_text(PLAY.format(task=MODULE_TASK))
        floor_play.write_text(PLAY.format(task=FLOOR_TASK))
        samples: dict[str, list[float]] = {}
        for forks in (1, 10):
            timed(fleet, module_play, forks), timed(fleet, floor_play, forks)  # warm-up
            for repeat in range(args.repeats):
                order = [("module", module_play), ("floor", floor_play)]
                for name, play in order if repeat % 2 == 0 else reversed(order):
                    samples.setdefault(f"{name}/forks={forks}", []).append(timed(fleet, play, forks))
        load = os.getloadavg()
    n = args.hosts
    report = {"hosts": n, "repeats": args.repeats, "load_after": load, "samples": samples}
    for forks in (1, 10):
        module, floor = samples[f"module/forks={forks}"], samples[f"floor/forks={forks}"]
        paired = [m - f for m, f in zip(module, floor)]
        report[f"forks={forks}"] = {
            "module_median_s": statistics.median(module), "floor_median_s": statistics.median(floor),
            "added_per_run_s": statistics.median(paired),
            "added_per_host_s": statistics.median(paired) / n if forks == 1 else None,
            "paired_range_s": [min(paired), max(paired)]}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    one, many = report["forks=1"], report["forks=10"]
    print(f"{n} hosts, {args.repeats} paired repeats, load average after {load[0]:.1f}")
    print(f"forks=1:  module {one['module_median_s']:.2f} s, /bin/true {one['floor_median_s']:.2f} s, "
          f"added {one['added_per_run_s']:.2f} s per run = {one['added_per_host_s']:.3f} s per host "
          f"(paired range {one['paired_range_s'][0]:.2f} .. {one['paired_range_s'][1]:.2f} s)")
    print(f"forks=10: module {many['module_median_s']:.2f} s, /bin/true {many['floor_median_s']:.2f} s, "
          f"added {many['added_per_run_s']:.2f} s per run (hosts in parallel)")
    met = one["added_per_host_s"] <= TARGET_S
    print(f"target: added time per host per run <= {TARGET_S} s: {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
