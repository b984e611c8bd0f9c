"""The shape of vllm-orch's Docker API use, not its speed: `ps` and an `up` with nothing to change
make the same engine calls whatever the number of instances (one list call observes them all; no
per-container inspect), and a cold `up` adds exactly one create and one start per instance.

The CLI runs in-process against the real engine with the stand-in image, at N = 2 and N = 6, with
DOCKER_HOST pointing at a counting pass-through proxy (bench/engine_proxy.py), so every request
reaches the count whichever client library sends it. bench/run.py reports the same counts at the
benchmark sizes.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import io
import os

import pytest

from orchestrator.cli import main
from tests.integration.conftest import REPO, Fleet, free_port

LIST = "GET /containers/json"
SIZES = (2, 6)


def _load_proxy_module():
    spec = importlib.util.spec_from_file_location("vllm_orch_bench_engine_proxy", REPO / "bench" / "engine_proxy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


engine_proxy = _load_proxy_module()


def fleet_body(n: int) -> str:
    body = '\n[instance.control]\ngpu_ids = "none"\n'
    for i in range(n):
        body += f'\n[instance.i{i}.server]\nport = {free_port()}\nmodel = "standin-{i}"\n'
    return body


def run_cli(path, *args: str) -> tuple[int, str]:
    """The CLI in-process, its output captured (the fixture is shared, so no capsys)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["-c", str(path), *args])
    return code, err.getvalue()


@pytest.fixture(scope="module")
def counted(engine, tmp_path_factory):
    """For each N: cold up, ps, a no-change up, ps --json and down, each with its calls counted."""
    fleets: list[Fleet] = []
    proxy = engine_proxy.EngineProxy()
    shapes: dict[int, dict[str, collections.Counter]] = {}
    real_host = os.environ.get("DOCKER_HOST")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", proxy.docker_host)  # `engine` (the cleanup) keeps the real socket
        try:
            for n in SIZES:
                fleet = Fleet(engine, tmp_path_factory.mktemp(f"shape-n{n}"), capsys=None)
                fleets.append(fleet)
                fleet.write(fleet_body(n))
                # The image's option table is asked for once per image (then cached): not part of the shape.
                if real_host:
                    patch.setenv("DOCKER_HOST", real_host)
                else:
                    patch.delenv("DOCKER_HOST")
                assert run_cli(fleet.path, "validate")[0] == 0
                patch.setenv("DOCKER_HOST", proxy.docker_host)
                shapes[n] = {}
                for label, args in (("up (cold)", ["up"]), ("ps", ["ps"]), ("up (no change)", ["up"]),
                                    ("ps --json", ["ps", "--json"]), ("down", ["down"])):
                    if label == "down":
                        assert len(fleet.containers()) == n
                    proxy.reset()
                    code, err = run_cli(fleet.path, *args)
                    assert code == 0, (label, err)
                    shapes[n][label] = proxy.counts()
            yield shapes
        finally:
            for fleet in fleets:
                fleet.cleanup()
            proxy.close()


def report(counted) -> dict:
    return {n: {cmd: dict(c) for cmd, c in counted[n].items()} for n in SIZES}


def test_ps_and_noop_up_make_the_same_calls_at_any_n(counted):
    small, large = (counted[n] for n in SIZES)
    for command in ("ps", "ps --json", "up (no change)"):
        assert small[command][LIST] == large[command][LIST], (command, report(counted))
        assert sum(small[command].values()) == sum(large[command].values()), (command, report(counted))
        # Not merely constant: no call names a container (no per-container inspect).
        assert not [k for k in large[command] if "{id}" in k], (command, report(counted))
    # One list call observes the whole project; a no-change up only reads.
    assert large["ps"][LIST] == 1, report(counted)
    assert large["up (no change)"][LIST] == 1, report(counted)
    assert not [k for k in large["up (no change)"] if not k.startswith(("GET ", "HEAD "))], report(counted)


PER_INSTANCE = {
    "up (cold)": {"POST /containers/create", "POST /containers/{id}/start"},
    "down": {"POST /containers/{id}/stop", "POST /containers/{id}/wait", "DELETE /containers/{id}"},
}


def test_cold_up_and_down_grow_only_by_their_per_instance_calls(counted):
    small, large = (counted[n] for n in SIZES)
    for command, per_instance in PER_INSTANCE.items():
        for n in SIZES:
            for kind in per_instance:
                # stop/wait/remove may be spelled differently, but never more than once each
                assert counted[n][command][kind] in ((n,) if command == "up (cold)" else (0, n)), (command, report(counted))
        assert small[command][LIST] == large[command][LIST], (command, report(counted))
        assert ({k: v for k, v in small[command].items() if k not in per_instance}
                == {k: v for k, v in large[command].items() if k not in per_instance}), (command, report(counted))
