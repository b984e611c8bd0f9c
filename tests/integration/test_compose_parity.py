"""`vllm-orch compose` against real Docker Compose v2 and the real engine.

The same config is brought up once with `vllm-orch up` and once with `docker compose up -d` on the
exported file, and what `docker inspect` shows is compared instance by instance: the whole Config
and HostConfig, after normalising only the fields listed in KNOWN_DIFFERENCES (each with its
reason; docs/compose.md says the same). The host has no GPU: scripts/setup-host.sh puts a stand-in
`nvidia-container-runtime-hook` on dockerd's PATH so the engine accepts and starts GPU
DeviceRequests; nothing else of the GPU stack is emulated.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import time

import pytest
import yaml

from tests.integration.conftest import free_port, http_json

API_KEY = "sk-parity-secret-7f3a"
HF_TOKEN = "hf_parity_secret_91b2"
SECRETS = {"VLLM_API_KEY": API_KEY, "HF_TOKEN": HF_TOKEN}

DOCKER_EXTRA = """
secret_env = ["HF_TOKEN"]
env = { GREETING = "price: $5" }
"""

CONFIG = """
[instance.server]
host = "0.0.0.0"
api_key = "{api_key}"

[instance.cpu.control]
gpu_ids = "none"
[instance.cpu.server]
port = {p1}
served_model_name = "cpu-model"

[instance.pair.control]
gpu_ids = "0,1"
[instance.pair.server]
port = {p2}
max_model_len = 128
[instance.pair.docker]
cpuset = "0"
cpus = 0.5
pids_limit = 512
ulimits = {{ memlock = 65536, nofile = {{ soft = 1024, hard = 2048 }} }}
"""
# (memlock = -1, what RDMA wants, needs a dockerd allowed to raise limits: this sandbox's caps memlock at 8 MiB.)

# inspect path -> why it may differ between `vllm-orch up` and `docker compose up` (normalised below).
KNOWN_DIFFERENCES = {
    "Name": "Compose names containers <project>-<service>-1, `up` <project>-<instance>: no name clash",
    "Config.Hostname": "the container id's prefix",
    "Config.Env (order)": "Compose writes the environment from a mapping in its own order; the set is equal",
    "Config.Labels io.vllm-orch.owner": "compose vs vllm-orch: `down` removes only its own, `ps` shows both",
    "Config.Labels io.vllm-orch.config-hash / .spec": "`up`'s plan state; Compose keeps its own hash",
    "Config.Labels io.vllm-orch.secrets-dir": "where `up` keeps its secret files on the host; Compose has none",
    "Config.Labels com.docker.compose.*": "Compose's own bookkeeping labels",
    "HostConfig.DeviceRequests": "no GPUs: `up` sends [] and Compose null; Options {} vs null (none either way)",
    "HostConfig.ExtraHosts": "null vs [] (none either way)",
    "HostConfig.Mounts BindOptions": "Compose adds an empty BindOptions {} to each bind mount",
    "HostConfig.Mounts (order)": "Compose sorts the mounts by target; the engine mounts them by depth either way",
    "HostConfig.Ulimits (order)": "Compose lists them from a mapping in no fixed order; each limit is set on its own",
    "Mounts /run/secrets/*": "`up` bind-mounts its root-only host files read-only; Compose (secrets: from the "
                             "environment) copies each value into the container at create: same path and content",
}
SECRETS_DIR = "/run/secrets/"


def normalised(attrs: dict) -> dict:
    """Config, HostConfig and Mounts with only the KNOWN_DIFFERENCES taken out."""
    attrs = copy.deepcopy(attrs)
    config, host = attrs["Config"], attrs["HostConfig"]
    config.pop("Hostname")
    config["Env"] = sorted(config["Env"])
    config["Labels"] = {k: v for k, v in config["Labels"].items()
                        if not k.startswith("com.docker.compose.")
                        and k not in ("io.vllm-orch.owner", "io.vllm-orch.config-hash", "io.vllm-orch.spec",
                                      "io.vllm-orch.secrets-dir")}
    host["DeviceRequests"] = [{**r, "Options": r.get("Options") or {}} for r in host.get("DeviceRequests") or []]
    host["ExtraHosts"] = host.get("ExtraHosts") or []
    host["Ulimits"] = sorted(host.get("Ulimits") or [], key=lambda u: u["Name"])
    host["Mounts"] = sorted(({k: v for k, v in m.items() if not (k == "BindOptions" and not v)}
                             for m in host.get("Mounts") or [] if not m["Target"].startswith(SECRETS_DIR)),
                            key=lambda m: m["Target"])
    # The engine lists a container's mount points in no fixed order (a map), whoever made it.
    mounts = sorted((m for m in attrs["Mounts"] if not m["Destination"].startswith(SECRETS_DIR)),
                    key=lambda m: m["Destination"])
    return {"Config": config, "HostConfig": host, "Mounts": mounts}


class ComposeRun:
    """`docker compose` on the exported file, with the secrets in its environment."""

    def __init__(self, fleet):
        self.fleet = fleet
        self.file = fleet.dir / "docker-compose.yml"

    def __call__(self, *args: str, secrets: bool = True, timeout: float = 180) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in SECRETS}
        if secrets:
            env.update(SECRETS)
        return subprocess.run(["docker", "compose", "-f", str(self.file), *args], capture_output=True, text=True,
                              env=env, timeout=timeout)

    def down(self) -> None:
        # -p alone: works without the file and without the secrets.
        subprocess.run(["docker", "compose", "-p", self.fleet.name, "down", "--timeout", "5"],
                       capture_output=True, text=True, timeout=180, cwd=self.fleet.dir)


@pytest.fixture
def exported(fleet, monkeypatch):
    """A fleet with two instances (gpu_ids "none" and "0,1") and secrets, exported with `compose -o`."""
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)  # marked secret in the config: `up` takes it from here
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    ports = {"p1": free_port(), "p2": free_port()}
    fleet.write(CONFIG.format(api_key=API_KEY, **ports), docker_extra=DOCKER_EXTRA)
    compose = ComposeRun(fleet)
    code, out, err = fleet.cli("compose", "-o", str(compose.file))
    assert code == 0, err
    for secret in SECRETS.values():
        assert secret not in out and secret not in err and secret not in compose.file.read_text()
    fleet.ports = ports
    yield compose
    compose.down()


def wait_healthy(fleet, owner: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        containers = [c for c in fleet.containers() if c.labels.get("io.vllm-orch.owner") == owner]
        states = {c.labels["io.vllm-orch.instance"]: (c.attrs["State"].get("Health") or {}).get("Status")
                  for c in containers}
        if len(states) == 2 and all(s == "healthy" for s in states.values()):
            return {c.labels["io.vllm-orch.instance"]: c for c in containers}
        assert time.monotonic() < deadline, f"{owner} containers not healthy: {states}"
        time.sleep(0.5)


def snapshot(fleet, owner: str) -> dict:
    """inspect + what the process sees (GPU env set by the engine, the secrets) per instance."""
    shots = {}
    for name, container in wait_healthy(fleet, owner).items():
        container.reload()
        port = fleet.ports["p1" if name == "cpu" else "p2"]
        status, info = http_json(f"http://127.0.0.1:{port}/standin/info")
        assert status == 200
        env = dict(info["env"])
        env.pop("HOSTNAME", None)
        # What the kernel enforces on the container's processes (ulimits, and pids_limit's cgroup), read from
        # its init (an exec'd process's own limits were seen to differ once under load).
        limits = container.exec_run(["sh", "-c", "grep -E 'open files|locked memory' /proc/1/limits; "
                                     "cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max"])
        assert limits.exit_code == 0, limits.output
        code, token = container.exec_run(["cat", f"{SECRETS_DIR}HF_TOKEN"])
        assert code == 0, token
        shots[name] = {"attrs": container.attrs, "process_env": env, "argv": info["argv"],
                       "limits": limits.output.decode().split(), "hf_token": token.decode()}
    return shots


def test_the_export_is_valid_compose_and_refuses_what_it_should(exported, fleet):
    result = exported("config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert config["name"] == fleet.name and list(config["services"]) == ["cpu", "pair"]
    pair = config["services"]["pair"]
    assert pair["deploy"]["resources"]["reservations"]["devices"] == [
        {"capabilities": ["gpu"], "driver": "nvidia", "device_ids": ["0", "1"]}]
    # Secrets are Compose secrets read from the environment, never values in the service.
    assert set(config["secrets"]) == {"VLLM_API_KEY", "HF_TOKEN"}
    assert {s["source"] for s in pair["secrets"]} == {"VLLM_API_KEY", "HF_TOKEN"}
    assert "VLLM_API_KEY" not in pair["environment"] and API_KEY not in result.stdout
    assert pair["environment"]["GREETING"] == "price: $$5"  # `$$` stays escaped in `config` output

    # The same text must load in PyYAML and be byte-identical when exported again.
    code, out, _ = fleet.cli("compose")
    assert code == 0 and out == exported.file.read_text()
    assert yaml.safe_load(out)["services"]["cpu"]["labels"]["io.vllm-orch.owner"] == "compose"

    # Without the secrets Compose refuses to start a container (the header names them); it may
    # leave one created, never started, holding no value.
    for name in ("cpu", "pair"):  # every bind source, as the header says to make them
        fleet.log_file(name).parent.mkdir(exist_ok=True)
        fleet.log_file(name).touch()
        for cache in ("vllm", "huggingface"):
            (fleet.dir / "cache" / name / cache).mkdir(parents=True)
    result = exported("up", "-d", secrets=False)
    # Compose names whichever missing variable it meets first (its map order varies).
    assert result.returncode != 0 and "is not set" in result.stderr, result.stderr
    assert "VLLM_API_KEY" in result.stderr or "HF_TOKEN" in result.stderr
    assert all(c.status == "created" for c in fleet.containers())
    exported.down()
    shutil.rmtree(fleet.dir / "logs")
    shutil.rmtree(fleet.dir / "cache")

    # A missing log file is an error, never a directory made in its place.
    result = exported("up", "-d")
    assert result.returncode != 0 and "bind source path does not exist" in result.stderr, result.stderr
    assert not (fleet.dir / "logs").exists()
    assert fleet.containers() == []


def test_compose_runs_the_same_containers_as_up(exported, fleet):
    code, _, err = fleet.cli("up", "--wait", "--timeout", "60")
    assert code == 0, err
    ours = snapshot(fleet, "vllm-orch")
    code, _, err = fleet.cli("down")
    assert code == 0, err
    assert fleet.containers() == []

    result = exported("up", "-d", "--wait", "--wait-timeout", "60")
    assert result.returncode == 0, result.stderr
    theirs = snapshot(fleet, "compose")

    assert set(ours) == set(theirs) == {"cpu", "pair"}
    for name in ours:
        a, b = ours[name]["attrs"], theirs[name]["attrs"]
        assert a["Name"] == f"/{fleet.name}-{name}" and b["Name"] == f"/{fleet.name}-{name}-1"
        assert a["Config"]["Labels"]["io.vllm-orch.owner"] == "vllm-orch"
        assert b["Config"]["Labels"]["io.vllm-orch.owner"] == "compose"
        # The fields the issue names, spelled out, then everything else in Config and HostConfig.
        for path in [("Config", "Image"), ("Config", "Entrypoint"), ("Config", "Cmd"), ("Config", "Healthcheck"),
                     ("Config", "StopSignal"), ("Config", "StopTimeout"), ("HostConfig", "PortBindings"),
                     ("HostConfig", "ShmSize"), ("HostConfig", "IpcMode"), ("HostConfig", "Init"),
                     ("HostConfig", "RestartPolicy"), ("HostConfig", "NetworkMode"), ("Mounts",)]:
            left, right = normalised(a), normalised(b)
            for key in path:
                left, right = left[key], right[key]
            assert left == right, f"{name}: {'.'.join(path)}"
        assert sorted(a["Config"]["Env"]) == sorted(b["Config"]["Env"]), name
        assert normalised(a) == normalised(b), name
        # What the process itself sees: the engine's GPU env and the secrets, argv.
        assert ours[name]["process_env"] == theirs[name]["process_env"], name
        assert ours[name]["argv"] == theirs[name]["argv"], name

    pair = theirs["pair"]
    # cpuset and cpus: declared once in the option table, spelled for the engine and for Compose.
    for run in (ours, theirs):
        host = run["pair"]["attrs"]["HostConfig"]
        assert (host["CpusetCpus"], host["NanoCpus"]) == ("0", 500_000_000)
        assert run["cpu"]["attrs"]["HostConfig"]["NanoCpus"] == 0
        # pids_limit and ulimits likewise (added through the table alone); unset: the engine's.
        assert host["PidsLimit"] == 512
        assert sorted(host["Ulimits"], key=lambda u: u["Name"]) == [
            {"Name": "memlock", "Soft": 65536, "Hard": 65536}, {"Name": "nofile", "Soft": 1024, "Hard": 2048}]
        assert not run["cpu"]["attrs"]["HostConfig"]["PidsLimit"] and not run["cpu"]["attrs"]["HostConfig"]["Ulimits"]
        assert run["pair"]["limits"][-1] == "512" and run["cpu"]["limits"][-1] == "max"
        assert "files 1024 2048 files" in " ".join(run["pair"]["limits"])
        assert "memory 65536 65536 bytes" in " ".join(run["pair"]["limits"])
    assert pair["attrs"]["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == ["0", "1"]
    assert pair["process_env"]["NVIDIA_VISIBLE_DEVICES"] == "0,1"
    # The key reaches the server's environment alone (the log wrapper reads its file); the HF token is a file.
    assert pair["process_env"]["VLLM_API_KEY"] == API_KEY and "HF_TOKEN" not in pair["process_env"]
    assert pair["process_env"]["HF_TOKEN_PATH"] == f"{SECRETS_DIR}HF_TOKEN"
    for run in (ours, theirs):
        assert all(run[name]["hf_token"] == HF_TOKEN for name in run)
        assert not any(secret in json.dumps(run[name]["attrs"]) for name in run for secret in SECRETS.values())
    assert pair["process_env"]["GREETING"] == "price: $5"  # escaped in the file, literal in the container
    assert theirs["cpu"]["attrs"]["HostConfig"]["DeviceRequests"] is None
    assert theirs["cpu"]["process_env"]["NVIDIA_VISIBLE_DEVICES"] == "void"
    # Both wrote through the same log wrapper into the same host file.
    log = fleet.log_file("pair").read_text()
    assert log.count("vllm-orch: starting instance pair") == 2

    rows = {(r["name"], r["owner"]): r for r in fleet.cli_json("ps")["instances"]}
    assert set(rows) == {("cpu", "compose"), ("pair", "compose")}
    assert rows[("pair", "compose")]["gpus"] == "0,1"
    assert rows[("cpu", "compose")]["model"] == "cpu-model"


def test_up_and_compose_on_one_host(exported, fleet):
    """Both on one host: the second to start meets busy ports; neither removes the other's containers."""
    code, _, err = fleet.cli("up", "--wait", "--timeout", "60")
    assert code == 0, err

    result = exported("up", "-d")
    assert result.returncode != 0 and "port is already allocated" in result.stderr, result.stderr

    code, out, _ = fleet.cli("ps")
    assert code == 0 and "OWNER" in out.splitlines()[0]
    rows = fleet.cli_json("ps")["instances"]
    owners = {(r["name"], r["owner"]): r["state"] for r in rows}
    assert owners[("cpu", "vllm-orch")] == "running" and owners[("pair", "vllm-orch")] == "running"
    assert {owner for _, owner in owners} == {"vllm-orch", "compose"}  # what Compose managed to create

    # `vllm-orch down` removes only its own containers.
    code, _, err = fleet.cli("down")
    assert code == 0, err
    assert {c.labels["io.vllm-orch.owner"] for c in fleet.containers()} == {"compose"}

    result = exported("up", "-d", "--wait", "--wait-timeout", "60")
    assert result.returncode == 0, result.stderr

    # Now `up` is the second one: its preflight names the busy port, and who holds it, and creates nothing.
    code, _, err = fleet.cli("up")
    assert code == 4 and f"{fleet.ports['p1']} is published by container {fleet.name}-" in err, err
    assert {c.labels["io.vllm-orch.owner"] for c in fleet.containers()} == {"compose"}
    code, _, err = fleet.cli("down")
    assert code == 0 and "nothing to stop" in err
    states = {(r["name"], r["owner"]): r["state"] for r in fleet.cli_json("ps")["instances"]}
    assert states == {("cpu", "compose"): "running", ("pair", "compose"): "running"}
