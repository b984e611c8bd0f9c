#!/usr/bin/env python3
"""vllm-orch benchmarks against the Docker engine's floor and Docker Compose, same machine, same run.

    .venv/bin/python bench/run.py                       # N = 8 32 64, 2 repeats
    .venv/bin/python bench/run.py --sizes 8 --repeats 1 # a quick look
    .venv/bin/python bench/run.py --write-readme        # also put the table in bench/README.md

For each N it writes an N-instance config of the stand-in server image and, per repeat, runs three
variants one after the other (order rotated between repeats), each on a clean engine:

* floor:   a bare Docker SDK loop (16 threads) creating and starting the very containers
           `vllm-orch up` creates (same kwargs: image, entrypoint, argv, env, labels, mounts,
           ports, healthcheck, ...), timed in-process from the first create to the last start;
           then stop + wait + remove with 16 threads (for reference).
* vllm-orch: `.venv/bin/vllm-orch -c FILE up` (cold), `up` with nothing changed, `ps`,
           `up --wait` with one more instance whose /health answers only after a delay (the bench
           polls that /health itself every few ms), then `down`; each a subprocess, wall time.
* compose: `docker compose -f <exported file> up -d` (cold), `up -d` with nothing changed,
           `ps`, `down` (the file is `vllm-orch compose -o` of the same config).

Between the cold `up` and the next step the bench waits until every instance answers /health and
lets the machine settle, so start-up CPU of the servers does not land in the next timing. Once per
run: `vllm-orch --help` and `validate` of a 64-instance config against `python -c pass`. Finally
(unless --no-count) each command of both tools runs once more per N with DOCKER_HOST pointing at a
counting pass-through proxy (bench/engine_proxy.py), to count the engine API calls it makes.

Every container carries the label `vllm-orch-bench.run=<run id>` and is removed by that label when
the run ends, fails or is interrupted; leftovers of an earlier killed run are removed at start.
Results: bench/results/<stamp>.json (all samples) and .md (the table); bench/results/ is ignored.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))  # engine_proxy, when run as a script from anywhere
RESULTS = REPO / "bench" / "results"
README = REPO / "bench" / "README.md"
BENCH_LABEL = "vllm-orch-bench.run"
PROJECT_LABEL = "io.vllm-orch.project"
DEFAULT_IMAGE = os.environ.get("VLLM_ORCH_STANDIN_IMAGE", "vllm-orch/standin:latest")
FLOOR_THREADS = 16
README_START, README_END = "<!-- bench:results:start -->", "<!-- bench:results:end -->"
CALLS_START, CALLS_END = "<!-- bench:calls:start -->", "<!-- bench:calls:end -->"

TARGETS = {
    "cold_up_floor": 1.15,      # x the bare-SDK floor
    "cold_up_compose": 1.0,     # x docker compose up -d
    "noop_up_s": 0.30,          # s, at N = 64
    "ps_s": 0.25,               # s, at N = 64
    "down_compose": 1.1,        # x docker compose down
    "startup_s": 0.15,          # s, --help and validate (64 instances)
    "health_to_wait_s": 0.5,    # s
}


class BenchError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


# ----------------------------------------------------------------------------- processes
ENV_AS_IS = False  # --env-as-is


def clean_env() -> dict[str, str]:
    """The environment of every timed command: the caller's, less the config variables (the bench
    passes -c) and, unless --env-as-is, less PYTHONDONTWRITEBYTECODE: an installed tool runs from
    cached bytecode, while that variable plus an editable install would make every run compile
    vllm-orch's own modules again (see bench/README.md)."""
    env = dict(os.environ)
    for key in ("AUTO_INFER_VLLM_CONFIG", "AUTO_INFER_VLLM_OVERRIDES"):
        env.pop(key, None)
    if not ENV_AS_IS:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


COMMAND_TIMEOUT_S = 600  # a wedged engine (seen once: dockerd 20.10 stopped answering stops) ends the run


def run_timed(argv: list[str], *, what: str, check: bool = True) -> float:
    """Wall time of one command run as a user runs it (a subprocess, output captured)."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(), cwd=REPO,
                              timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} did not finish in {COMMAND_TIMEOUT_S} s (is the engine answering? "
                         f"try `docker stop` on one container): {' '.join(argv)}") from None
    elapsed = time.perf_counter() - start
    if check and proc.returncode != 0:
        raise BenchError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n"
                         f"{proc.stdout.decode(errors='replace')[-2000:]}{proc.stderr.decode(errors='replace')[-2000:]}")
    return elapsed


def run_checked(argv: list[str], *, what: str, env: dict[str, str] | None = None) -> str:
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**clean_env(), **(env or {})},
                              cwd=REPO, text=True, timeout=COMMAND_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} did not finish in {COMMAND_TIMEOUT_S} s: {' '.join(argv)}") from None
    if proc.returncode != 0:
        raise BenchError(f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc.stdout


def free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now, all distinct (sockets held until every one is chosen)."""
    sockets, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
            port = s.getsockname()[1]
            if port not in ports:
                ports.append(port)
    finally:
        for s in sockets:
            s.close()
    return ports


def health_ok(port: int, timeout: float = 0.5) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=timeout) as response:
            return response.status == 200
    except Exception:  # refused, reset by docker-proxy, 503, timeout: not yet
        return False


def wait_all_healthy(ports: list[int], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    pending = list(ports)
    while pending:
        pending = [p for p in pending if not health_ok(p)]
        if not pending:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{len(pending)} instance(s) not answering /health after {timeout:.0f}s (ports {pending[:5]}...)")
        time.sleep(0.05)


# ----------------------------------------------------------------------------- engine side
class Engine:
    """The bench's own docker-py client: floor, cleanup by label, parameter comparison."""

    def __init__(self) -> None:
        import docker

        self.docker = docker
        self.api = docker.APIClient(version="auto", max_pool_size=FLOOR_THREADS + 4, timeout=300)
        self.api.ping()

    def containers(self, label: str) -> list[dict[str, Any]]:
        return self.api.containers(all=True, filters={"label": label})

    def remove_by_label(self, label: str, instance: str | None = None) -> int:
        rows = self.containers(label)
        if instance is not None:
            rows = [r for r in rows if (r.get("Labels") or {}).get("io.vllm-orch.instance") == instance]

        def remove(row: dict[str, Any]) -> None:
            try:
                self.api.remove_container(row["Id"], force=True)
            except self.docker.errors.NotFound:
                pass

        with ThreadPoolExecutor(FLOOR_THREADS) as pool:
            list(pool.map(remove, rows))
        return len(rows)

    # -- the floor: the same containers, created and started by a bare SDK loop ----------------
    def create_body(self, container: Any) -> dict[str, Any]:
        """What docker_apply._create sends: the same function on the same container specs."""
        from orchestrator.backends.engine_body import create_body

        return create_body(container)

    def floor_up(self, containers: list[Any]) -> float:
        # building the request bodies is not the engine's time
        bodies = [(c.name, self.create_body(c)) for c in containers]

        def one(named: tuple[str, dict[str, Any]]) -> None:
            container_id = self.api.create_container_from_config(named[1], name=named[0])["Id"]
            self.api.start(container_id)

        start = time.perf_counter()
        with ThreadPoolExecutor(FLOOR_THREADS) as pool:
            list(pool.map(one, bodies))
        return time.perf_counter() - start

    def floor_down(self, project: str) -> float:
        start = time.perf_counter()
        rows = self.containers(f"{PROJECT_LABEL}={project}")

        def one(row: dict[str, Any]) -> None:
            self.api.stop(row["Id"])
            self.api.wait(row["Id"], timeout=60)
            self.api.remove_container(row["Id"])

        with ThreadPoolExecutor(FLOOR_THREADS) as pool:
            list(pool.map(one, rows))
        return time.perf_counter() - start

    def parameters(self, name: str) -> dict[str, Any]:
        """The engine-side settings that make two containers 'the same container'."""
        info = self.api.inspect_container(name)
        config, host = info["Config"], info["HostConfig"]
        keep_config = ("Image", "Entrypoint", "Cmd", "Env", "Labels", "Healthcheck", "StopSignal", "StopTimeout",
                       "User", "ExposedPorts")
        keep_host = ("Mounts", "PortBindings", "ShmSize", "Init", "DeviceRequests", "NetworkMode", "RestartPolicy",
                     "IpcMode", "Binds", "CpusetCpus", "NanoCpus")
        return {"Config": {k: config.get(k) for k in keep_config}, "HostConfig": {k: host.get(k) for k in keep_host}}


# ----------------------------------------------------------------------------- configs
def fleet_toml(project: str, run_id: str, ports: list[int], image: str, health_interval: int) -> str:
    head = textwrap.dedent(f"""\
        # written by bench/run.py
        [master]
        api_server_module = "standin_vllm.api_server"

        [docker]
        image = "{image}"
        project = "{project}"
        shm_size = "64m"
        stop_timeout = 10
        health_interval = {health_interval}
        labels = {{ "{BENCH_LABEL}" = "{run_id}" }}

        [instance.control]
        gpu_ids = "none"
        """)
    body = "".join(f'\n[instance.i{i:03d}.server]\nport = {port}\nmodel = "standin-{i:03d}"\n' for i, port in enumerate(ports))
    return head + body


class Fleet:
    """One N-instance project on disk: its config, exported compose file and log files."""

    def __init__(self, root: Path, run_id: str, n: int, image: str, health_interval: int, suffix: str = ""):
        self.n = n
        self.project = f"vob{run_id}n{n}{suffix}"
        self.dir = root / f"n{n}"
        self.dir.mkdir(parents=True)
        self.config = self.dir / "fleet.toml"
        self.compose_file = self.dir / "docker-compose.yml"
        ports = free_ports(n + 1)
        self.ports, self.late_port = ports[:n], ports[n]
        self.config.write_text(fleet_toml(self.project, run_id, self.ports, image, health_interval))
        logs = self.dir / "logs"
        logs.mkdir()
        for i in range(n):  # the export binds these files and creates nothing (create_host_path: false)
            (logs / f"vllm-server-i{i:03d}.log").touch()
        (logs / "vllm-server-late.log").touch()
        for name in [f"i{i:03d}" for i in range(n)] + ["late"]:  # the caches too, as the export's mkdir lines say
            for cache in ("vllm", "huggingface"):
                (self.dir / "cache" / name / cache).mkdir(parents=True)

    def containers(self) -> list[Any]:
        """The Docker renderings of the enabled instances, as `up` makes them."""
        from orchestrator.project import open_project

        project = open_project(self.config, overrides=[], sets=[], backend="docker")
        return [project.resolved.container_of(s.name) for s in project.resolved.instances if s.enabled]

    def missed_sigterm(self) -> int:
        """Servers of the last stop that never logged STANDIN-SHUTDOWN after their last
        STANDIN-START: they were SIGKILLed at the stop timeout (the log files are shared by all
        three variants, so this works for Compose's down too)."""
        killed = 0
        for i in range(self.n):
            text = (self.dir / "logs" / f"vllm-server-i{i:03d}.log").read_text(errors="replace")
            start = text.rfind("STANDIN-START")
            if start >= 0 and text.find("STANDIN-SHUTDOWN", start) < 0:
                killed += 1
        return killed

    def late_sets(self, delay: float) -> list[str]:
        return ["--set", f"instance.late.server.port={self.late_port}",
                "--set", 'instance.late.server.model="standin-late"',
                "--set", f'instance.late.server.extra_args=["--standin-health-delay", "{delay:g}"]']


# ----------------------------------------------------------------------------- the runner
class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        # absolute, not resolved: .venv/bin/python is a symlink, and its target is not the venv
        self.cli = os.path.abspath(args.cli)
        self.python = os.path.abspath(args.python)
        self.run_id = uuid.uuid4().hex[:6]
        self.label = f"{BENCH_LABEL}={self.run_id}"
        self.engine = Engine()
        self.tmp = Path(tempfile.mkdtemp(prefix="vllm-orch-bench-"))
        self.samples: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
        self.notes: list[str] = []
        self.calls: dict[int, dict[str, dict[str, int]]] = {}
        self.spans: dict[int, dict[str, dict[str, float]]] = {}
        self.same_parameters: dict[int, bool] = {}
        self.load: list[float] = []
        self.others = 0

    def orch(self, fleet: Fleet, *args: str) -> list[str]:
        return [self.cli, "-c", str(fleet.config), *args]

    def compose(self, fleet: Fleet, *args: str) -> list[str]:
        return ["docker", "compose", "-f", str(fleet.compose_file), "-p", fleet.project, *args]

    def add(self, n: int | str, key: str, value: float) -> None:
        self.samples[str(n)][key].append(value)

    def settle(self, fleet: Fleet) -> None:
        wait_all_healthy(fleet.ports)
        time.sleep(self.args.settle)

    def record_load(self) -> None:
        """Load average and containers of others on the engine: a busy machine shows here."""
        self.load.append(os.getloadavg()[0])
        others = [r for r in self.engine.api.containers() if BENCH_LABEL not in (r.get("Labels") or {})]
        self.others = max(self.others, len(others))

    def ensure_clean(self, fleet: Fleet) -> None:
        left = self.engine.containers(f"{PROJECT_LABEL}={fleet.project}")
        if left:
            self.notes.append(f"N={fleet.n}: {len(left)} container(s) left over by a variant; removed before the next")
            self.engine.remove_by_label(f"{PROJECT_LABEL}={fleet.project}")

    def repeat_quick(self, n: int, key: str, argv: list[str], what: str) -> None:
        run_timed(argv, what=what)  # one unrecorded warm-up (page cache, engine caches)
        for _ in range(self.args.calls):
            self.add(n, key, run_timed(argv, what=what))

    # -- variants ----------------------------------------------------------------------------
    def variant_floor(self, fleet: Fleet, first: bool) -> None:
        containers = fleet.containers()
        self.add(fleet.n, "floor_up", self.engine.floor_up(containers))
        if first:
            # The floor made exactly the containers vllm-orch makes: vllm-orch sees nothing to do.
            plan = json.loads(run_checked(self.orch(fleet, "up", "--dry-run", "--json"), what="up --dry-run"))
            kinds = collections.Counter(a["action"] for a in plan["actions"])
            if kinds != {"noop": fleet.n}:
                raise BenchError(f"floor containers differ from vllm-orch's: up --dry-run plans {dict(kinds)}")
            self.floor_params = self.engine.parameters(containers[0].name)
        self.settle(fleet)
        self.add(fleet.n, "floor_down", self.engine.floor_down(fleet.project))
        self.add(fleet.n, "floor_down_killed", fleet.missed_sigterm())

    def variant_orch(self, fleet: Fleet, first: bool) -> None:
        n = fleet.n
        self.add(n, "orch_up", run_timed(self.orch(fleet, "up"), what="vllm-orch up"))
        if first and hasattr(self, "floor_params"):
            name = fleet.containers()[0].name
            same = self.engine.parameters(name) == self.floor_params
            self.same_parameters[n] = same
            if not same:
                self.notes.append(f"N={n}: the floor's container parameters differ from vllm-orch's (see JSON)")
        self.settle(fleet)
        self.repeat_quick(n, "orch_noop_up", self.orch(fleet, "up"), "vllm-orch up (no change)")
        self.repeat_quick(n, "orch_ps", self.orch(fleet, "ps"), "vllm-orch ps")
        self.add(n, "health_to_wait", self.health_to_wait(fleet))
        # Take the extra instance away again so `down` stops exactly N.
        self.engine.remove_by_label(f"{PROJECT_LABEL}={fleet.project}", instance="late")
        time.sleep(self.args.settle)
        self.add(n, "orch_down", run_timed(self.orch(fleet, "down"), what="vllm-orch down"))
        self.add(n, "orch_down_killed", fleet.missed_sigterm())

    def health_to_wait(self, fleet: Fleet) -> float:
        """`up --wait` adding one instance whose /health turns 200 only after a delay: seconds from
        the first 200 (seen by the bench's own fast poll) to `up --wait` returning."""
        url = f"http://127.0.0.1:{fleet.late_port}/health"
        first_ok: list[float] = []
        stop = threading.Event()

        def poll() -> None:
            while not stop.is_set():
                try:
                    with urllib.request.urlopen(url, timeout=0.5) as response:
                        if response.status == 200:
                            first_ok.append(time.monotonic())
                            return
                except Exception:
                    pass
                time.sleep(self.args.poll_interval)

        argv = self.orch(fleet, *fleet.late_sets(self.args.health_delay), "up", "--wait", "--timeout", "300")
        poller = threading.Thread(target=poll, daemon=True)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(), cwd=REPO)
        poller.start()
        try:
            _, err = proc.communicate(timeout=400)
            returned = time.monotonic()
        except BaseException:
            proc.kill()  # interrupted: it must not go on creating after the cleanup
            proc.wait()
            raise
        finally:
            stop.set()
            poller.join(5)
        if proc.returncode != 0:
            raise BenchError(f"up --wait failed (exit {proc.returncode}): {err.decode(errors='replace')[-2000:]}")
        if not first_ok:
            raise BenchError("up --wait returned before the bench saw /health answer 200")
        return returned - first_ok[0]

    def variant_compose(self, fleet: Fleet, first: bool) -> None:
        n = fleet.n
        self.add(n, "compose_up", run_timed(self.compose(fleet, "up", "-d"), what="docker compose up -d"))
        self.settle(fleet)
        self.repeat_quick(n, "compose_noop_up", self.compose(fleet, "up", "-d"), "docker compose up -d (no change)")
        self.repeat_quick(n, "compose_ps", self.compose(fleet, "ps"), "docker compose ps")
        self.add(n, "compose_down", run_timed(self.compose(fleet, "down"), what="docker compose down"))
        self.add(n, "compose_down_killed", fleet.missed_sigterm())

    # -- per size ------------------------------------------------------------------------------
    def run_size(self, n: int) -> None:
        fleet = Fleet(self.tmp, self.run_id, n, self.args.image, self.args.health_interval)
        run_checked(self.orch(fleet, "compose", "-o", str(fleet.compose_file)), what="vllm-orch compose")
        variants: list[tuple[str, Callable[[Fleet, bool], None]]] = [
            ("floor", self.variant_floor), ("vllm-orch", self.variant_orch), ("compose", self.variant_compose)]
        for r in range(self.args.repeats):
            order = variants[r % 3:] + variants[:r % 3]
            for name, variant in order:
                self.ensure_clean(fleet)
                self.record_load()
                log(f"N={n} repeat {r + 1}/{self.args.repeats}: {name} (load {self.load[-1]:.2f})")
                variant(fleet, r == 0)
            self.ensure_clean(fleet)

    def run_startup(self) -> None:
        """--help and validate of a 64-instance config against the interpreter's own start-up."""
        fleet = Fleet(self.tmp / "startup", self.run_id, 64, self.args.image, self.args.health_interval, "s")
        commands = {
            "python_pass": [self.python, "-c", "pass"],
            "help": [self.cli, "--help"],
            "validate": self.orch(fleet, "validate"),
            "validate_offline": self.orch(fleet, "validate", "--offline"),
        }
        for argv in commands.values():
            run_timed(argv, what=" ".join(argv[:3]))  # warm-up: page cache, option-table cache
        for _ in range(self.args.startup_runs):
            for key, argv in commands.items():  # interleaved, so drift hits all alike
                self.add("startup", key, run_timed(argv, what=" ".join(argv[:3])))

    def count_api_calls(self, n: int) -> None:
        """Each command once, as a subprocess talking to the engine through a counting proxy
        (bench/engine_proxy.py): every request counts, whichever client library sends it."""
        from engine_proxy import EngineProxy

        fleet = Fleet(self.tmp / "count", self.run_id, n, self.args.image, self.args.health_interval, "c")
        run_checked(self.orch(fleet, "compose", "-o", str(fleet.compose_file)), what="vllm-orch compose")
        steps = [
            ("vllm-orch up (cold)", self.orch(fleet, "up")),
            ("vllm-orch up (no change)", self.orch(fleet, "up")),
            ("vllm-orch ps", self.orch(fleet, "ps")),
            ("vllm-orch up --wait (no change)", self.orch(fleet, "up", "--wait")),
            ("vllm-orch down", self.orch(fleet, "down")),
            ("compose up -d (cold)", self.compose(fleet, "up", "-d")),
            ("compose up -d (no change)", self.compose(fleet, "up", "-d")),
            ("compose ps", self.compose(fleet, "ps")),
            ("compose down", self.compose(fleet, "down")),
        ]
        result: dict[str, dict[str, int]] = {}
        spans: dict[str, dict[str, float]] = {}
        try:
            with EngineProxy() as proxy:
                for label, argv in steps:
                    if "(no change)" in label:
                        wait_all_healthy(fleet.ports)
                    proxy.reset()
                    launched = time.monotonic()
                    run_checked(argv, what=label, env={"DOCKER_HOST": proxy.docker_host})
                    exited = time.monotonic()
                    result[label] = dict(proxy.counts())
                    spans[label] = own_time(proxy.timeline(), proxy.last_answer, launched, exited)
        finally:
            self.engine.remove_by_label(f"{PROJECT_LABEL}={fleet.project}")
        self.calls[n] = result
        self.spans[n] = spans

    def run(self) -> dict[str, Any]:
        code_at_start = code_digest()
        image_at_start = self.engine.api.inspect_image(self.args.image)["Id"]
        stale = self.engine.remove_by_label(BENCH_LABEL)
        if stale:
            log(f"removed {stale} container(s) left by an earlier bench run")
        started = time.time()
        try:
            self.warm_up()
            self.record_load()
            self.run_startup()
            for n in self.args.sizes:
                self.run_size(n)
            if not self.args.no_count:
                for n in self.args.sizes:
                    log(f"N={n}: counting API calls (through bench/engine_proxy.py)")
                    self.count_api_calls(n)
        finally:
            removed = self.engine.remove_by_label(self.label)
            if removed:
                log(f"cleanup: removed {removed} container(s) labelled {self.label}")
            if not self.args.keep_tmp:
                shutil.rmtree(self.tmp, ignore_errors=True)
        return {"run_id": self.run_id, "started": dt.datetime.fromtimestamp(started).isoformat(timespec="seconds"),
                "duration_s": round(time.time() - started, 1), "args": vars(self.args), "machine": machine_info(),
                "samples": {k: dict(v) for k, v in self.samples.items()}, "api_calls": self.calls,
                "own_time": self.spans,
                "floor_same_parameters": self.same_parameters, "notes": self.notes,
                "load_1min": {"min": min(self.load, default=None), "median": median(self.load),
                              "max": max(self.load, default=None)},
                "other_running_containers_max": self.others, "env_as_is": ENV_AS_IS,
                "code_digest": code_at_start, "code_changed_during_run": code_digest() != code_at_start,
                "image_id": image_at_start,
                "image_changed_during_run": self.engine.api.inspect_image(self.args.image)["Id"] != image_at_start}

    def warm_up(self) -> None:
        """What any second run of the tool finds: the image's option table cached (per image id;
        the first use runs a probe container) and bytecode written for every command's modules."""
        fleet = Fleet(self.tmp / "warm", self.run_id, 1, self.args.image, self.args.health_interval, "w")
        for args in (["validate"], ["up"], ["ps"], ["up", "--wait"], ["down"]):
            run_checked(self.orch(fleet, *args), what=f"vllm-orch {' '.join(args)} (warm-up)")


def own_time(timeline: list[tuple[str, float]], last_answer: float, launched: float, exited: float) -> dict[str, float]:
    """Where a command's wall time goes around its engine calls: from launch to its first request,
    to its first request that changes something, and from the engine's last answer to its exit."""
    if not timeline:
        return {"total_s": exited - launched}
    changing = [t for shape, t in timeline if not shape.startswith(("GET ", "HEAD "))]
    return {
        "total_s": exited - launched,
        "to_first_call_s": timeline[0][1] - launched,
        "to_first_change_s": (changing[0] - launched) if changing else None,
        "after_last_answer_s": (exited - last_answer) if last_answer else None,
    }


# ----------------------------------------------------------------------------- report
def code_digest() -> str:
    """sha256 over vllm-orch's sources as they are on disk (committed or not): a run whose code
    changed underneath it says so."""
    import hashlib

    digest = hashlib.sha256()
    for path in sorted((REPO / "orchestrator").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def machine_info() -> dict[str, str]:
    def out(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
        except Exception:
            return "?"

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = f"{int(Path('/proc/meminfo').read_text().split()[1]) / 1024 / 1024:.1f} GiB"
    import docker

    return {
        "cpu": f"{cpu}, {os.cpu_count()} CPUs",
        "memory": mem,
        "os": f"{platform.system()} {platform.release()} ({out(['sh', '-c', '. /etc/os-release && echo $PRETTY_NAME'])})",
        "docker_engine": out(["docker", "version", "--format", "{{.Server.Version}}"]),
        "storage_driver": out(["docker", "info", "--format", "{{.Driver}}"]),
        "compose": out(["docker", "compose", "version", "--short"]),
        "python": platform.python_version(),
        "docker_py": docker.__version__,
        "commit": out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]),
        "orchestrator_changes": out(["git", "-C", str(REPO), "status", "--porcelain", "--", "orchestrator"]),
    }


def summarize(doc: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The Markdown table and the rows behind it (medians, ratios, verdicts)."""
    samples = doc["samples"]
    rows: list[dict[str, Any]] = []

    def m(n: Any, key: str) -> float | None:
        return median(samples.get(str(n), {}).get(key, []))

    def verdict(ok: bool | None) -> str:
        return "-" if ok is None else ("PASS" if ok else "FAIL")

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    def row(figure: str, n: Any, orch: float | None, against: str, ratios: str, target: str, ok: bool | None,
            runs: int) -> None:
        rows.append({"figure": figure, "n": n, "vllm_orch_s": orch, "against": against, "ratios": ratios,
                     "target": target, "pass": ok, "runs": runs})

    sizes = [int(k) for k in samples if k.isdigit()]
    for n in sorted(sizes):
        s = samples[str(n)]
        up, floor, comp = m(n, "orch_up"), m(n, "floor_up"), m(n, "compose_up")
        pf, pc = paired_ratios(s, "orch_up", "floor_up"), paired_ratios(s, "orch_up", "compose_up")
        rf, rc = median(pf), median(pc)
        ok = None if rf is None or rc is None else (rf <= TARGETS["cold_up_floor"] and rc <= TARGETS["cold_up_compose"])
        row("cold `up`", n, up, f"floor {fs(floor)}, compose {fs(comp)}",
            f"{fr(rf)} floor {spread(pf)}, {fr(rc)} compose {spread(pc)}",
            "<= 1.15x floor, <= 1.0x compose", ok, len(s.get("orch_up", [])))
    if len(sizes) > 1:
        # Every paired ratio of every N together: one row's 5-repeat median sits inside the
        # engine's 15-25% spread, the pooled median of all of them much less so (information only).
        pooled_f = [r for n in sizes for r in paired_ratios(samples[str(n)], "orch_up", "floor_up")]
        pooled_c = [r for n in sizes for r in paired_ratios(samples[str(n)], "orch_up", "compose_up")]
        if pooled_f and pooled_c:
            row("cold `up`, every N pooled", "all", None, "floor, compose",
                f"{fr(median(pooled_f))} floor {spread(pooled_f)}, {fr(median(pooled_c))} compose {spread(pooled_c)}",
                "(info)", None, len(pooled_c))
    for n in sorted(sizes):
        s = samples[str(n)]
        up, comp = m(n, "orch_noop_up"), m(n, "compose_noop_up")
        row("`up`, nothing changed", n, up, f"compose {fs(comp)}", f"{fr(ratio(up, comp))} compose",
            "<= 0.30 s at N=64", None if up is None else up <= TARGETS["noop_up_s"], len(s.get("orch_noop_up", [])))
    for n in sorted(sizes):
        s = samples[str(n)]
        ps, comp = m(n, "orch_ps"), m(n, "compose_ps")
        row("`ps`", n, ps, f"compose {fs(comp)}", f"{fr(ratio(ps, comp))} compose", "<= 0.25 s at N=64",
            None if ps is None else ps <= TARGETS["ps_s"], len(s.get("orch_ps", [])))
    for n in sorted(sizes):
        s = samples[str(n)]
        clean = {v: clean_downs(s, v) for v in ("orch", "compose", "floor")}
        killed = {v: sum(1 for k in s.get(f"{v}_down_killed", []) if k) for v in clean}
        use_clean = any(killed.values()) and all(clean[v] for v in ("orch", "compose"))
        pick = (lambda v: median(clean[v]) if clean[v] else m(n, f"{v}_down")) if use_clean else (lambda v: m(n, f"{v}_down"))
        down, comp, floor = pick("orch"), pick("compose"), pick("floor")
        def clean_repeat(i: int) -> bool:  # no variant had a server killed in repeat i
            return not any(i < len(s.get(f"{v}_down_killed", [])) and s[f"{v}_down_killed"][i] for v in clean)

        keep = clean_repeat if use_clean else None
        pc = paired_ratios(s, "orch_down", "compose_down", keep=keep)
        pf = paired_ratios(s, "orch_down", "floor_down", keep=keep)
        rc = median(pc) if pc else ratio(down, comp)
        note = ""
        if any(killed.values()):
            note = (" (runs where a server missed SIGTERM and was killed at the stop timeout: vllm-orch "
                    f"{killed['orch']}, compose {killed['compose']}, floor {killed['floor']}; "
                    + ("medians of the other runs)" if use_clean else "all runs counted)"))
        row("`down`", n, down, f"compose {fs(comp)}, floor {fs(floor)}{note}",
            f"{fr(rc)} compose {spread(pc)}, {fr(median(pf) if pf else ratio(down, floor))} floor {spread(pf)}",
            "<= 1.1x compose",
            None if rc is None else rc <= TARGETS["down_compose"], len(s.get("orch_down", [])))
    start = samples.get("startup", {})
    base = median(start.get("python_pass", []))
    for key, figure in (("help", "`vllm-orch --help`"), ("validate", "`validate`, 64 instances"),
                        ("validate_offline", "`validate --offline`, 64 instances")):
        value = median(start.get(key, []))
        if value is None:
            continue
        target = "<= 0.15 s" if key != "validate_offline" else "(info)"
        ok = None if key == "validate_offline" else value <= TARGETS["startup_s"]
        row(figure, "-" if key == "help" else 64, value, f"`python -c pass` {fs(base)}",
            f"+{value - base:.3f} s" if base is not None else "-", target, ok, len(start.get(key, [])))
    for n in sorted(sizes):
        s = samples[str(n)]
        lat = m(n, "health_to_wait")
        row("/health 200 -> `up --wait` returns", n, lat, "-", "-", "<= 0.5 s",
            None if lat is None else lat <= TARGETS["health_to_wait_s"], len(s.get("health_to_wait", [])))

    lines = ["| figure | N | vllm-orch (median) | compared against (median) | ratio | target | result | runs |",
             "| --- | ---: | ---: | --- | --- | --- | --- | ---: |"]
    for r in rows:
        lines.append(f"| {r['figure']} | {r['n']} | {fs(r['vllm_orch_s'])} | {r['against']} | {r['ratios']} | "
                     f"{r['target']} | {verdict(r['pass'])} | {r['runs']} |")
    table = "\n".join(lines)
    if doc.get("api_calls"):
        table += "\n\n" + api_calls_table(doc["api_calls"])
    if doc.get("own_time"):
        table += "\n\n" + own_time_table(doc["own_time"])
    return table, rows


def paired_ratios(samples: dict[str, list[float]], key: str, against: str,
                  keep: Callable[[int], bool] | None = None) -> list[float]:
    """Repeat i of `key` over repeat i of `against`. The variants of one repeat run back to back,
    so each ratio compares like with like; the machine's drift between repeats cancels out."""
    a, b = samples.get(key, []), samples.get(against, [])
    return [a[i] / b[i] for i in range(min(len(a), len(b))) if b[i] and (keep is None or keep(i))]


def spread(ratios: list[float]) -> str:
    """The range of the paired ratios: how far one repeat can be from another on this machine."""
    if len(ratios) < 2:
        return ""
    return f"({min(ratios):.2f}-{max(ratios):.2f})"


def clean_downs(samples: dict[str, list[float]], variant: str) -> list[float]:
    """The down timings of one variant in which every server exited on SIGTERM."""
    times, killed = samples.get(f"{variant}_down", []), samples.get(f"{variant}_down_killed", [])
    return [t for t, k in zip(times, killed) if not k]


def fs(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f} s"


def fr(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def api_calls_table(calls: dict[Any, dict[str, dict[str, int]]]) -> str:
    sizes = sorted(calls, key=int)
    commands = list(calls[sizes[0]].keys())
    lines = ["Docker API calls per command (counted by a pass-through proxy on the engine socket, "
             "bench/engine_proxy.py): total, and list calls (`GET /containers/json`) in brackets.", "",
             "| command | " + " | ".join(f"N={n}" for n in sizes) + f" | calls at N={sizes[-1]} |",
             "| --- | " + " | ".join("---:" for _ in sizes) + " | --- |"]
    for command in commands:
        cells = []
        for n in sizes:
            counts = calls[n].get(command, {})
            cells.append(f"{sum(counts.values())} ({counts.get('GET /containers/json', 0)})")
        kinds = ", ".join(f"`{k}` x{v}" for k, v in sorted(calls[sizes[-1]].get(command, {}).items()))
        lines.append(f"| {command} | " + " | ".join(cells) + f" | {kinds} |")
    return "\n".join(lines)


def own_time_table(spans: dict[Any, dict[str, dict[str, float]]]) -> str:
    """The tool's own time around its engine calls, from the counting pass (one run each, through
    the proxy, so a little slower than the timed runs)."""
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.0f} ms"

    lines = ["The tools' own time around their engine calls (counting pass, one run each, through the proxy):", "",
             "| command | N | wall | launch -> first engine call | launch -> first create/stop | engine's last answer -> exit |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for n in sorted(spans, key=int):
        for command, span in spans[n].items():
            if "(cold)" not in command and not command.endswith("down"):
                continue  # ps / no-change up: the wall time is the tool's own time
            lines.append(f"| {command} | {n} | {ms(span.get('total_s'))} | {ms(span.get('to_first_call_s'))} | "
                         f"{ms(span.get('to_first_change_s'))} | {ms(span.get('after_last_answer_s'))} |")
    return "\n".join(lines)


def growth_table(calls: dict[Any, dict[str, dict[str, int]]]) -> str:
    """How each command's engine calls grow with N: `a*N + b` per kind of call, fitted on the
    measured sizes and checked against every one of them; a kind that fits no line is listed with
    its counts."""
    sizes = sorted(calls, key=int)
    lines = ["| command | calls | per instance | once per command | neither (count at each N) |",
             "| --- | --- | --- | --- | --- |"]
    for command in calls[sizes[0]]:
        kinds = sorted({k for n in sizes for k in calls[n].get(command, {})})
        per, once, odd, slope_total, base_total = [], [], [], 0.0, 0.0
        for kind in kinds:
            points = [(int(n), calls[n].get(command, {}).get(kind, 0)) for n in sizes]
            (n0, c0), (n1, c1) = points[0], points[-1]
            slope = (c1 - c0) / (n1 - n0) if n1 != n0 else 0.0
            base = c0 - slope * n0
            if any(abs(slope * n + base - c) > 1e-9 for n, c in points) or slope != int(slope):
                odd.append(f"`{kind}` " + "/".join(str(c) for _, c in points))
                continue
            slope_total += slope
            base_total += base
            if slope:
                per.append(f"`{kind}`" + (f" x{slope:g}" if slope != 1 else "") + (f" (+{base:g})" if base else ""))
            else:
                once.append(f"`{kind}`" + (f" x{base:g}" if base != 1 else ""))
        a = "" if slope_total == 1 else f"{slope_total:g}"
        formula = (f"{a}N + {base_total:g}" if base_total else f"{a}N") if slope_total else f"{base_total:g}"
        if odd:
            formula += " + the last column"
        elif not slope_total:
            formula += " (constant)"
        lines.append(f"| {command} | {formula} | {', '.join(per) or '-'} | {', '.join(once) or '-'} | "
                     f"{', '.join(odd) or '-'} |")
    return "\n".join(lines)


def machine_lines(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    load = doc.get("load_1min") or {}
    return "\n".join([
        f"- run {doc['run_id']} on {doc['started']} ({doc['duration_s']:.0f} s); "
        f"sizes {doc['args']['sizes']}, {doc['args']['repeats']} repeat(s), {doc['args']['calls']} timed calls per "
        f"repeat for `up` (no change) / `ps`, {doc['args']['startup_runs']} start-up runs",
        f"- vllm-orch: commit {m.get('commit', '?')}"
        + (" with uncommitted changes under orchestrator/" if m.get("orchestrator_changes") else "")
        + (f" (sources digest {doc['code_digest']})" if doc.get("code_digest") else "")
        + (f"; image {doc['args']['image']} {doc['image_id'].split(':')[-1][:12]}" if doc.get("image_id") else "")
        + (f"; CLI {doc['args']['cli']}" if not str(doc['args']['cli']).startswith(str(REPO)) else ""),
        f"- CPU: {m['cpu']}; memory {m['memory']}",
        f"- OS: {m['os']}",
        f"- Docker engine {m['docker_engine']}, storage driver {m['storage_driver']}; Compose {m['compose']}; "
        f"Python {m['python']}, docker-py {m['docker_py']}",
        f"- 1-min load average at the start of each variant: min {load.get('min') or 0:.2f}, median "
        f"{load.get('median') or 0:.2f}, max {load.get('max') or 0:.2f}; other containers running on the engine: "
        f"up to {doc.get('other_running_containers_max', 0)}",
    ])


def report(doc: dict[str, Any]) -> str:
    table, rows = summarize(doc)
    doc["summary"] = rows
    parts = [f"### Results\n\n{machine_lines(doc)}\n", table]
    if doc.get("floor_same_parameters"):
        same = all(doc["floor_same_parameters"].values())
        parts.append(f"Floor containers checked against vllm-orch's (same Config and HostConfig; "
                     f"`up --dry-run` plans nothing): {'yes' if same else 'NO'}")
    notes = list(doc.get("notes") or [])
    if doc.get("code_changed_during_run"):
        notes.append("vllm-orch's sources changed on disk during this run: its figures mix two versions")
    if doc.get("image_changed_during_run"):
        notes.append(f"the image {doc['args']['image']} was rebuilt during this run: its figures mix two images")
    if notes:
        parts.append("Notes:\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts) + "\n"


def write_readme(markdown: str, doc: dict[str, Any]) -> None:
    text = replace_section(README.read_text(), README_START, README_END, markdown)
    if doc.get("api_calls") and len(doc["api_calls"]) > 1:
        sizes = ", ".join(f"N={n}" for n in sorted(doc["api_calls"], key=int))
        calls = (f"Fitted on the counts of run {doc['run_id']} ({sizes}; every size must fit the line), "
                 f"by `bench/run.py`:\n\n{growth_table(doc['api_calls'])}\n")
        text = replace_section(text, CALLS_START, CALLS_END, calls)
    README.write_text(text)


def replace_section(text: str, start: str, end: str, body: str) -> str:
    if start not in text or end not in text:
        raise BenchError(f"{README} has no {start} ... {end} section")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}{end}{tail}"


# ----------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 64], help="instance counts (default 8 32 64)")
    p.add_argument("--repeats", type=int, default=2, help="cold up/down cycles per variant and size (default 2)")
    p.add_argument("--calls", type=int, default=5, help="timed no-change `up` and `ps` per cycle (default 5)")
    p.add_argument("--startup-runs", type=int, default=10, help="timed --help / validate runs (default 10)")
    p.add_argument("--health-delay", type=float, default=2.0, help="seconds until the extra instance's /health says 200")
    p.add_argument("--poll-interval", type=float, default=0.005, help="the bench's own /health poll period (s)")
    p.add_argument("--health-interval", type=int, default=300,
                   help="engine health-check interval of the bench's containers (default 300: keep the engine quiet)")
    p.add_argument("--settle", type=float, default=1.0, help="pause after every instance answers /health (s)")
    p.add_argument("--image", default=DEFAULT_IMAGE)
    p.add_argument("--cli", default=str(REPO / ".venv" / "bin" / "vllm-orch"))
    p.add_argument("--python", default=sys.executable, help="interpreter for the `python -c pass` baseline")
    p.add_argument("--no-count", action="store_true", help="skip counting the engine API calls per command")
    p.add_argument("--env-as-is", action="store_true",
                   help="keep PYTHONDONTWRITEBYTECODE in the commands' environment (default: removed)")
    p.add_argument("--only-startup", action="store_true", help="only --help / validate")
    p.add_argument("--keep-tmp", action="store_true", help="keep the configs and logs (printed path)")
    p.add_argument("--write-readme", action="store_true", help="put the table into bench/README.md")
    p.add_argument("--from-json", metavar="FILE", help="only print the table of an earlier run's JSON")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        doc = json.loads(Path(args.from_json).read_text())
        markdown = report(doc)
        print(markdown)
        if args.write_readme:
            write_readme(markdown, doc)
        return 0
    if not Path(args.cli).exists():
        raise SystemExit(f"no CLI at {args.cli}: run scripts/bootstrap-venv.sh (or pass --cli)")
    if shutil.which("docker") is None:
        raise SystemExit("no docker CLI: run scripts/setup-host.sh")

    def on_term(signum, frame):  # a kill still cleans up (the finally in Bench.run)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)  # also when started in the background with SIGINT ignored
    global ENV_AS_IS
    ENV_AS_IS = args.env_as_is
    if args.only_startup:
        args.sizes, args.no_count = [], True
    bench = Bench(args)
    log(f"run {bench.run_id}: sizes {args.sizes}, {args.repeats} repeat(s); temp dir {bench.tmp}")
    try:
        doc = bench.run()
    except KeyboardInterrupt:
        log("interrupted; containers removed")
        return 130
    markdown = report(doc)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(doc, indent=2, default=str))
    (RESULTS / f"{stamp}.md").write_text(markdown)
    (RESULTS / "latest.md").write_text(markdown)
    print(markdown)
    log(f"wrote bench/results/{stamp}.json and .md")
    if args.write_readme:
        write_readme(markdown, doc)
        log("updated bench/README.md")
    failed = [r for r in doc["summary"] if r["pass"] is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
