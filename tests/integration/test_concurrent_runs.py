"""Two runs of one project at the same time, as a provisioning loop or a second terminal makes them:
they take turns (one lock per project and engine), so both succeed and the fleet is made once."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.integration.test_api_call_shape import fleet_body


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def finish(procs: list[subprocess.Popen]) -> list[tuple[int, str]]:
    errs = [p.communicate(timeout=180)[1] for p in procs]
    return [(p.returncode, err) for p, err in zip(procs, errs)]


def test_two_ups_at_once_make_the_fleet_once_and_both_succeed(fleet):
    fleet.write(fleet_body(4))
    assert fleet.cli("validate")[0] == 0  # the option table is cached before the race
    results = finish([start("-c", str(fleet.path), "up") for _ in range(2)])
    assert [code for code, _ in results] == [0, 0], results
    errs = "\n".join(err for _, err in results)
    assert errs.count(": created") == 4, errs  # each instance created by exactly one of them
    assert "nothing to do" in errs  # the second planned against what the first made
    assert len(fleet.containers()) == 4


def test_a_down_during_an_up_takes_its_turn(fleet):
    fleet.write(fleet_body(4))
    assert fleet.cli("validate")[0] == 0
    up = start("-c", str(fleet.path), "up")
    down = start("-c", str(fleet.path), "down")
    (up_code, up_err), (down_code, down_err) = finish([up, down])
    assert (up_code, down_code) == (0, 0), (up_err, down_err)
    # Whichever went first, the other saw its whole result: the down removed all four or none.
    removed = down_err.count("stopped and removed")
    if removed:
        assert (removed, fleet.containers()) == (4, []), (up_err, down_err)
    else:
        assert "nothing to stop" in down_err and up_err.count(": created") == 4, (up_err, down_err)
        assert len(fleet.containers()) == 4 and all(c.status == "running" for c in fleet.containers())
