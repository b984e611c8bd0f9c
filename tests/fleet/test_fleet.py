"""The collection vllm_orch.fleet against three real hosts (tests/fleet/conftest.py): every
scenario runs `ansible-playbook` over SSH, and checks what each host's engine and servers show.

The scenarios build on each other in file order (the fleet is made once per session): each
test first brings the fleet to the state it starts from.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

from tests.fleet.conftest import PORTS, FleetUnderTest

PLAYBOOKS = Path(__file__).parent / "playbooks"

SITE = "vllm_orch.fleet.site"
ROLLING = "vllm_orch.fleet.rolling_update"
VIEW = "vllm_orch.fleet.fleet_view"
MODULE_TASK = "Bring this host's vLLM servers to its TOML"


def get(url: str, timeout: float = 3) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def served_models(fleet: FleetUnderTest) -> dict[tuple[str, str], list[str]]:
    """(host, instance) -> model ids on /v1/models, asked from the controller over the network."""
    found = {}
    for host in fleet.hosts:
        for instance, port in PORTS.items():
            assert get(f"http://{host.address}:{port}/health")[0] == 200, (host.name, instance)
            status, doc = get(f"http://{host.address}:{port}/v1/models")
            assert status == 200
            found[(host.name, instance)] = [m["id"] for m in doc["data"]]
    return found


def reset(fleet: FleetUnderTest) -> None:
    """The starting state of every scenario: the base TOML on every host, all served."""
    for host in fleet.hosts:
        fleet.write_config(host)
    run = fleet.playbook(SITE)
    assert run.rc == 0, run


def test_provision_from_nothing_every_instance_healthy(fleet):
    run = fleet.playbook(SITE)
    assert run.rc == 0, run
    assert set(run.module()) == {h.name for h in fleet.hosts}
    for host, result in run.module().items():
        assert result["changed"] is True
        assert sorted((a["action"], a["instance"]) for a in result["actions"]) == [("create", "a"), ("create", "b")]
        assert {r["name"]: r["state"] for r in result["instances"]} == {"a": "running", "b": "running"}
        assert set(result["healthy_after_s"]) == {"a", "b"}
    assert served_models(fleet) == {(h.name, i): [f"{'alpha' if i == 'a' else 'beta'}-{h.name}"]
                                   for h in fleet.hosts for i in PORTS}
    # The file on each host is the one the controller holds, written by the module.
    for host in fleet.hosts:
        assert host.config.read_text() == (fleet.configs / f"{host.name}.toml").read_text()


def test_second_run_changes_nothing_on_any_host(fleet):
    reset(fleet)
    before = {h.name: h.containers() for h in fleet.hosts}
    run = fleet.playbook(SITE)
    assert run.rc == 0, run
    assert {h: s["changed"] for h, s in run.stats.items()} == {h.name: 0 for h in fleet.hosts}
    assert all(r["actions"] and {a["action"] for a in r["actions"]} == {"noop"} for r in run.module().values())
    assert {h.name: h.containers() for h in fleet.hosts} == before


def test_a_change_on_one_host_check_mode_then_only_that_instance(fleet):
    reset(fleet)
    h1, h2, h3 = fleet.hosts
    before = {h.name: h.containers() for h in fleet.hosts}
    old_file = h2.config.read_text()
    fleet.write_config(h2, a_server="max_model_len = 2048")

    check = fleet.playbook(SITE, "--check", "--diff")
    assert check.rc == 0, check
    results = check.module()
    assert results["h2"]["changed"] is True and results["h2"]["config_changed"] is True
    planned = {a["instance"]: a for a in results["h2"]["actions"]}
    assert planned["a"]["action"] == "recreate" and planned["b"]["action"] == "noop"
    assert any("--max-model-len 2048" in reason for reason in planned["a"]["reasons"]), planned["a"]
    assert "recreate a:" in results["h2"]["diff"][-1]["prepared"]
    assert results["h1"]["changed"] is False and results["h3"]["changed"] is False
    assert {h.name: h.containers() for h in fleet.hosts} == before  # touched nothing
    assert h2.config.read_text() == old_file

    run = fleet.playbook(SITE)
    assert run.rc == 0, run
    assert {h: s["changed"] > 0 for h, s in run.stats.items()} == {"h1": False, "h2": True, "h3": False}
    after = {h.name: h.containers() for h in fleet.hosts}
    assert after["h1"] == before["h1"] and after["h3"] == before["h3"]
    assert after["h2"]["b"] == before["h2"]["b"]
    assert after["h2"]["a"]["id"] != before["h2"]["a"]["id"]
    assert after["h2"]["a"]["cmd"][-2:] == ["--max-model-len", "2048"] or "2048" in after["h2"]["a"]["cmd"]


def test_a_host_whose_engine_is_down_fails_alone(fleet):
    reset(fleet)
    h1, h2, h3 = fleet.hosts
    before = h1.containers()
    fleet.write_config(h1, a_server="max_model_len = 1024")
    fleet.write_config(h3, a_server="max_model_len = 1024")
    h3_file = h3.config.read_text()
    h3.stop_engine()
    try:
        run = fleet.playbook(SITE)
        view = fleet.playbook(VIEW, extra_vars={"vllm_orch_fleet_view_file": str(fleet.root / "view-down.txt")})
    finally:
        h3.start_engine()
    assert run.rc != 0
    assert run.failed_hosts() == {"h3"}, run
    message = run.failures()["h3"]
    assert "exit 3: Docker engine not reachable" in message and str(h3.socket) in message, message
    assert "\n" not in message.split(": ", 1)[1]
    assert run.module()["h1"]["changed"] is True and run.module()["h2"]["changed"] is False
    # The failed host changed nothing, and says so: its new file is not written either.
    assert run.module()["h3"]["changed"] is False and run.module()["h3"]["config_changed"] is False
    assert run.stats["h3"]["changed"] == 0 and h3.config.read_text() == h3_file
    assert h1.containers()["a"]["id"] != before["a"]["id"]
    # The fleet view still shows every host: h3 as one row with its error.
    assert view.failed_hosts() == {"h3"}
    table = (fleet.root / "view-down.txt").read_text().splitlines()
    assert [line.split()[:3] for line in table if line.startswith("h3")] == [["h3", "-", "unreachable"]]
    assert len([line for line in table if line.startswith(("h1", "h2"))]) == 4


def test_fleet_view_is_one_table_of_every_instance(fleet):
    reset(fleet)
    target = fleet.root / "view.txt"
    run = fleet.playbook(VIEW, extra_vars={"vllm_orch_fleet_view_file": str(target)})
    assert run.rc == 0, run
    header, *rows = target.read_text().splitlines()
    assert header.split() == ["HOST", "INSTANCE", "STATE", "HEALTH", "GPUS", "URL", "MODEL"]
    want = []
    for host in fleet.hosts:
        for instance, port in PORTS.items():
            gpu = "0" if instance == "a" else "1"
            model = f"{'alpha' if instance == 'a' else 'beta'}-{host.name}"
            want.append([host.name, instance, "running", "healthy", gpu, f"http://{host.address}:{port}", model])
    deadline = time.monotonic() + 30
    while [r.split() for r in rows] != want and time.monotonic() < deadline:  # Docker's first health check
        time.sleep(2)
        run = fleet.playbook(VIEW, extra_vars={"vllm_orch_fleet_view_file": str(target)})
        header, *rows = target.read_text().splitlines()
    assert [r.split() for r in rows] == want
    shown = run.results("Show the table")
    assert any(header in str(r.get("msg")) for r in shown.values())


class Client(threading.Thread):
    """Sends GET /v1/models to one instance every 100 ms and records (time, ok)."""

    def __init__(self, host: str, instance: str, url: str):
        super().__init__(daemon=True)
        self.host, self.instance, self.url = host, instance, url
        self.log: list[tuple[float, bool]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:  # a stopped server refuses at once; a busy machine may be slow to answer
                ok = get(self.url, timeout=10)[0] == 200
            except OSError:
                ok = False
            self.log.append((time.time(), ok))
            time.sleep(0.1)


def _created(iso: str) -> float:
    from datetime import datetime

    seconds, _, fraction = iso.rstrip("Z").partition(".")
    return datetime.fromisoformat(seconds + "+00:00").timestamp() + float("0." + (fraction or "0"))


def test_rolling_update_keeps_every_other_instance_serving(fleet):
    reset(fleet)
    clients = [Client(h.name, i, f"http://{h.address}:{p}/v1/models") for h in fleet.hosts for i, p in PORTS.items()]
    for client in clients:
        client.start()
    time.sleep(1)
    for host in fleet.hosts:
        fleet.write_config(host, a_server="max_model_len = 4096")
    run = fleet.playbook(ROLLING)
    time.sleep(1)
    for client in clients:
        client.stop.set()
        client.join()
    assert run.rc == 0, run
    by = {(c.host, c.instance): c.log for c in clients}
    assert all(len(log) > 20 for log in by.values())
    # b was never updated: not one request to it failed, on any host.
    assert {h.name: [t for t, ok in by[(h.name, "b")] if not ok] for h in fleet.hosts} == {h.name: [] for h in fleet.hosts}
    # a was recreated host by host: each host's new container was made only after the host
    # before it answered again, and a's failures on a host lie inside its own turn.
    created = [_created(h.containers()["a"]["created"]) for h in fleet.hosts]
    assert created == sorted(created)
    back = []
    for host, made in zip(fleet.hosts, created):
        log = by[(host.name, "a")]
        back.append(min(t for t, ok in log if ok and t > made))
    for j, host in enumerate(fleet.hosts):
        failures = [t for t, ok in by[(host.name, "a")] if not ok]
        start = back[j - 1] if j else run.started
        end = created[j + 1] if j + 1 < len(created) else run.ended
        assert all(start <= t <= end for t in failures), (host.name, failures, start, end)
        if j + 1 < len(created):
            assert back[j] < created[j + 1], "the next host was updated before this one answered again"
    for host in fleet.hosts:
        assert "4096" in host.containers()["a"]["cmd"]


def test_bad_input_on_one_host_fails_that_host_and_leaves_the_others(fleet):
    reset(fleet)
    h1, h2, h3 = fleet.hosts
    before = {h.name: h.containers() for h in fleet.hosts}
    files = {h.name: h.config.read_text() for h in fleet.hosts}
    fleet.write_config(h1, a_server="max_model_len = 1024")
    (fleet.configs / "h2.toml").write_text(files["h2"].replace('gpu_ids = "0"', 'gpu_idz = "0"'))
    (fleet.configs / "h3.toml").write_text(files["h3"].replace("port = 8001", "port = = 8001"))

    # The fleet-wide check stops the run before any host changes, and says why for each.
    run = fleet.playbook(SITE)
    assert run.rc != 0
    failures = run.failures()
    assert set(failures) == {"h2", "h3"}, run
    assert "gpu_idz: unknown key (did you mean gpu_ids?)" in failures["h2"]
    assert "TOML syntax" in failures["h3"]
    assert {h.name: h.containers() for h in fleet.hosts} == before
    assert {h.name: h.config.read_text() for h in fleet.hosts} == files

    # Without the check, each host fails alone with vllm-orch's one line, changing nothing
    # there, and the good host gets its change.
    run = fleet.playbook(str(PLAYBOOKS / "apply_only.yml"))
    failures = run.failures()
    assert set(failures) == {"h2", "h3"}, run
    assert "gpu_idz: error: unknown key (did you mean gpu_ids?)" in failures["h2"]
    assert "(exit 2: config error; nothing was changed)" in failures["h2"]
    bad_line = (fleet.configs / "h3.toml").read_text().splitlines().index("port = = 8001") + 1
    assert "TOML syntax" in failures["h3"] and f"h3/fleet.toml:{bad_line}:" in failures["h3"], failures["h3"]
    assert {h: (r["changed"], r["config_changed"]) for h, r in run.module().items()} == {
        "h1": (True, True), "h2": (False, False), "h3": (False, False)}
    after = {h.name: h.containers() for h in fleet.hosts}
    assert after["h2"] == before["h2"] and after["h3"] == before["h3"]
    assert after["h1"]["a"]["id"] != before["h1"]["a"]["id"]
    assert h2.config.read_text() == files["h2"] and h3.config.read_text() == files["h3"]

    # An option the module does not have fails that host in Ansible's own words.
    run = fleet.playbook(str(PLAYBOOKS / "unknown_option.yml"))
    assert set(run.failures()) == {"h2"}, run
    assert "Unsupported parameters" in run.failures()["h2"] and "max_model_len" in run.failures()["h2"]


SECRETS = {"api_key": "sk-fleet-secret-9f3a", "hf_token": "hf_fleetsecret7c2e", "env": "wandb-fleet-secret-51d0",
           "override": "sk-override-secret-77ab"}


def test_diff_masks_every_secret_value_and_shows_the_other_changes(fleet):
    """`--check --diff` of a TOML holding an API key, an HF token and a secret_env value, with a
    secret in the overrides too: no secret value anywhere in ansible-playbook's output (the
    JSON callback's whole results, with each module's invocation, and the default one's text
    with -v), while the non-secret changes show (the file's and the overrides' max_model_len)."""
    reset(fleet)
    h1, h2, h3 = fleet.hosts
    before = {h.name: h.containers() for h in fleet.hosts}
    api_key, hf_token, env_secret = SECRETS["api_key"], SECRETS["hf_token"], SECRETS["env"]
    fleet.write_config(h2, a_server=f'max_model_len = 2048\napi_key = "{api_key}"\nhf_token = "{hf_token}"',
                       extra=f'[instance.b.docker]\nsecret_env = ["WANDB_API_KEY"]\n'
                             f'[instance.b.docker.env]\nWANDB_API_KEY = "{env_secret}"\nLOG_LEVEL = "debug"\n')
    overrides = {"vllm_orch_overrides": {"instance": {"b": {"server": {"api_key": SECRETS["override"],
                                                                       "max_model_len": 3072}}}}}
    check = fleet.playbook(SITE, "--check", "--diff", extra_vars=overrides)
    assert check.rc == 0, check
    output = json.dumps(check.doc) + check.stderr
    for secret in SECRETS.values():
        assert secret not in output, secret
    diff = check.module()["h2"]["diff"]
    file_diff, actions = diff[0]["prepared"], diff[-1]["prepared"]
    # (host_toml indents the lines it inserts into [instance.a.server])
    assert re.search(r"\n\+\s*max_model_len = 2048\n", file_diff) and '\n+LOG_LEVEL = "debug"\n' in file_diff
    assert re.search(r'\n\+\s*api_key = "\*{8} \(new value\)"\n', file_diff), file_diff
    assert '\n+WANDB_API_KEY = "******** (new value)"\n' in file_diff
    assert "recreate a:" in actions and "recreate b:" in actions and "--max-model-len 3072" in actions
    for host in ("h1", "h3"):  # the overrides alone change b there; no file diff
        (only,) = check.module()[host]["diff"]
        assert only["prepared"].startswith("recreate b:") and "--max-model-len 3072" in only["prepared"]
    assert {h.name: h.containers() for h in fleet.hosts} == before

    env = {**fleet.env(), "ANSIBLE_STDOUT_CALLBACK": "default"}
    argv = [*check.argv[:3], SITE, "--check", "--diff", "-v", "-e", json.dumps(overrides)]
    text = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert text.returncode == 0, text.stdout[-3000:]
    shown = text.stdout + text.stderr
    assert all(secret not in shown for secret in SECRETS.values())
    assert re.search(r"\+\s*max_model_len = 2048", shown) and "--max-model-len 3072" in shown


def test_a_failed_probe_is_in_project_info_s_result_and_fails_the_role_s_health_check(fleet):
    reset(fleet)
    h1 = fleet.hosts[0]
    h1.docker("stop", h1.containers()["a"]["id"])
    run = fleet.playbook(str(PLAYBOOKS / "probe.yml"))
    probes = run.results("Probe every instance")
    assert not any(r.get("failed") for r in probes.values()), run  # the module reports, it does not fail
    assert probes["h1"]["probes_failed"] == ["a"] and probes["h1"]["probes"]["b"]["ok"] is True
    failed = probes["h1"]["probes"]["a"]
    assert failed["ok"] is False and failed["error"] and failed["attempts"] == 2
    assert failed["url"] == f"http://127.0.0.1:{PORTS['a']}"
    assert all(probes[h]["probes_failed"] == [] for h in ("h2", "h3"))
    # The role decides: the host with a silent instance fails, naming it and why.
    assert set(run.failures()) == {"h1"}, run
    assert f"Every instance of this host answered: not answering: a (http://127.0.0.1:{PORTS['a']}): " in run.failures()["h1"], run


def test_state_absent_removes_every_instance(fleet):
    reset(fleet)
    before = {h.name: h.containers() for h in fleet.hosts}
    check = fleet.playbook(SITE, "--check", extra_vars={"vllm_orch_state": "absent"})
    assert check.rc == 0, check
    for result in check.module().values():
        assert sorted((a["action"], a["instance"]) for a in result["actions"]) == [("remove", "a"), ("remove", "b")]
    assert {h.name: h.containers() for h in fleet.hosts} == before

    run = fleet.playbook(SITE, extra_vars={"vllm_orch_state": "absent"})
    assert run.rc == 0, run
    assert all(r["changed"] for r in run.module().values())
    assert {h.name: h.containers() for h in fleet.hosts} == {h.name: {} for h in fleet.hosts}
    again = fleet.playbook(SITE, extra_vars={"vllm_orch_state": "absent"})
    assert again.rc == 0 and all(not r["changed"] for r in again.module().values()), again
