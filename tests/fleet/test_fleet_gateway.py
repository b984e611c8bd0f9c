"""Gateways on the fleet (tests/fleet/conftest.py's three hosts, real ansible-playbook over SSH):
one per host from its TOML's `[gateway]`, and one over the whole fleet, run by
`vllm_orch.fleet.fleet_gateway` on h1 (group vllm_gateway) with every host's instances as routes.
Requests go from the controller to the gateways over the network, through the real HAProxy image
(vllm-orch/gateway) to the stand-in servers, which answer OpenAI calls and name their container
in `X-Standin-Server`."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from tests.fleet.conftest import PORTS, FleetUnderTest, Host

SITE = "vllm_orch.fleet.site"
FLEET_GATEWAY = "vllm_orch.fleet.fleet_gateway"
HOST_GATEWAY_PORT = 8000
FLEET_GATEWAY_PORT = 9000  # the role's default
FLEET_KEY = "sk-fleet-gateway-4b1e"
PER_HOST_GATEWAY = f"[gateway]\nport = {HOST_GATEWAY_PORT}\npolicy = \"round_robin\"\n"


def complete(url: str, model: str, key: str | None = None, timeout: float = 10) -> tuple[int, str, dict]:
    """POST /v1/completions through a gateway: (status, answering container, body)."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(f"{url}/v1/completions", method="POST", headers=headers,
                                     data=json.dumps({"model": model, "prompt": "hi", "max_tokens": 2}).encode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers.get("X-Standin-Server", ""), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, "", json.loads(exc.read() or b"{}")


def models_of(url: str, key: str | None = None) -> list[str]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    with urllib.request.urlopen(urllib.request.Request(f"{url}/v1/models", headers=headers), timeout=5) as response:
        return sorted(m["id"] for m in json.loads(response.read())["data"])


def short_ids(host: Host) -> dict[str, str]:
    """The hostname each stand-in container answers with -> instance."""
    return {doc["id"][:12]: name for name, doc in host.containers().items() if "/" not in name}


def until(what: str, ready, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(0.5)


def test_a_gateway_per_host_routes_its_instances_and_reloads_when_routes_change(fleet: FleetUnderTest):
    for host in fleet.hosts:
        fleet.write_config(host, extra=PER_HOST_GATEWAY)
    run = fleet.playbook(SITE)
    assert run.rc == 0, run
    for name, result in run.module().items():
        assert ("create", "gateway") in {(a["action"], a["instance"]) for a in result["actions"]}, (name, result["actions"])
    # The role's health check probed each host's gateway too (its /health and /v1/models).
    probes = run.results("Each instance answers /health and lists its model on /v1/models")
    for name, result in probes.items():
        assert result["probes"]["gateway"]["ok"] is True, result["probes"]
        assert result["probes"]["gateway"]["url"] == f"http://127.0.0.1:{HOST_GATEWAY_PORT}"
    for host in fleet.hosts:
        url = f"http://{host.address}:{HOST_GATEWAY_PORT}"
        assert models_of(url) == [f"alpha-{host.name}", f"beta-{host.name}"]
        answered = {model: complete(url, f"{model}-{host.name}") for model in ("alpha", "beta")}
        by_id = short_ids(host)
        assert {m: (status, by_id.get(server)) for m, (status, server, _) in answered.items()} == {
            "alpha": (200, "a"), "beta": (200, "b")}
        assert complete(url, "alpha-h9")[0] == 404  # another host's model is not this gateway's

    # A renamed model on h2: its gateway reloads in place (the container stays), check mode first.
    h2 = fleet.by_name["h2"]
    before = {h.name: h.containers() for h in fleet.hosts}
    fleet.write_config(h2, extra=PER_HOST_GATEWAY, alpha="alpha-renamed")
    check = fleet.playbook(SITE, "--check", "--diff")
    assert check.rc == 0, check
    planned = {a["instance"]: a["action"] for a in check.module()["h2"]["actions"]}
    assert planned == {"a": "recreate", "b": "noop", "gateway": "reload"}, planned
    assert "reload gateway: " in check.module()["h2"]["diff"][-1]["prepared"]
    assert "alpha-renamed" in check.module()["h2"]["diff"][-1]["prepared"]
    assert all(not check.module()[h]["changed"] for h in ("h1", "h3"))

    run = fleet.playbook(SITE)
    assert run.rc == 0, run
    assert {h: s["changed"] > 0 for h, s in run.stats.items()} == {"h1": False, "h2": True, "h3": False}
    after = h2.containers()
    assert after["fleet/gateway"]["id"] == before["h2"]["fleet/gateway"]["id"]  # reloaded, not recreated
    assert after["b"]["id"] == before["h2"]["b"]["id"]
    assert models_of(f"http://{h2.address}:{HOST_GATEWAY_PORT}") == ["alpha-renamed", "beta-h2"]
    assert complete(f"http://{h2.address}:{HOST_GATEWAY_PORT}", "alpha-renamed")[0] == 200

    again = fleet.playbook(SITE)
    assert again.rc == 0, again
    assert {h: s["changed"] for h, s in again.stats.items()} == {h.name: 0 for h in fleet.hosts}
    assert {h.name: h.containers() for h in fleet.hosts}["h2"] == after


def test_the_fleet_gateway_routes_every_host_and_a_host_that_goes_down_drops_out(fleet: FleetUnderTest):
    """`alpha` has a replica on every host, `beta-hN` one on host N; the fleet gateway on h1
    serves all of them on one URL; h3 going down takes only its replica of alpha and its beta-h3
    out, and they come back once h3 serves again, without a run of the gateway's playbook."""
    for host in fleet.hosts:
        fleet.write_config(host, alpha="alpha")
    run = fleet.playbook(SITE)
    assert run.rc == 0, run
    # round_robin: the same prompt would otherwise stick to one replica (the default, prefix)
    extra = {"vllm_orch_fleet_gateway_api_key": FLEET_KEY, "vllm_orch_fleet_gateway_policy": "round_robin"}
    made = fleet.playbook(FLEET_GATEWAY, extra_vars=extra)
    assert made.rc == 0, made
    assert FLEET_KEY not in json.dumps(made.doc) + made.stderr
    (result,) = made.results("Bring the fleet gateway to its routes").values()
    assert [(a["action"], a["instance"]) for a in result["actions"]] == [("create", "gateway")]
    h1, h2, h3 = fleet.hosts
    assert "fleet-gateway/gateway" in h1.containers()
    # Only there: and the per-host gateways of the TOMLs before are gone with their [gateway].
    assert [h.name for h in fleet.hosts if any(n.endswith("/gateway") for n in h.containers())] == ["h1"]
    assert "fleet/gateway" not in h1.containers()
    routes = made.results("Gather the fleet's routes from every host's instances")["h1"]["ansible_facts"]
    assert routes["vllm_orch_fleet_gateway_routes"]["routes"] == sorted(
        [{"model": "alpha", "url": f"http://{h.address}:{PORTS['a']}"} for h in fleet.hosts]
        + [{"model": f"beta-{h.name}", "url": f"http://{h.address}:{PORTS['b']}"} for h in fleet.hosts],
        key=lambda r: (r["model"], r["url"]))

    url = f"http://{h1.address}:{FLEET_GATEWAY_PORT}"
    assert models_of(url, FLEET_KEY) == ["alpha", "beta-h1", "beta-h2", "beta-h3"]
    assert complete(url, "beta-h2")[0] == 401  # the gateway's key is asked for
    servers = {name: short_ids(h) for h in fleet.hosts for name in [h.name]}
    where = {i: (h, n) for h, ids in servers.items() for i, n in ids.items()}
    for host in fleet.hosts:  # every host's own model, through h1
        status, server, body = complete(url, f"beta-{host.name}", FLEET_KEY)
        assert (status, where.get(server)) == (200, (host.name, "b")), body
    alpha_hosts = {where[complete(url, "alpha", FLEET_KEY)[1]][0] for _ in range(30)}
    assert alpha_hosts == {"h1", "h2", "h3"}  # the replicas on every host share the model

    # h3 goes down: its models drop out; alpha keeps answering from h1 and h2, every request.
    h3.stop_engine()
    try:
        alpha = [complete(url, "alpha", FLEET_KEY) for _ in range(20)]
        answered_by = [(status, where.get(server, ("?",))[0]) for status, server, _ in alpha]
        assert [a for a in answered_by if a[0] != 200 or a[1] not in ("h1", "h2")] == []
        status, _, body = complete(url, "beta-h3", FLEET_KEY)
        assert status == 503 and body["error"]["message"], body
        assert complete(url, "beta-h2", FLEET_KEY)[0] == 200
    finally:
        h3.start_engine()
    # h3 back: its servers started again by the next site run; the gateway takes them back by
    # its own health checks (no gateway run).
    run = fleet.playbook(SITE)
    assert run.rc == 0, run
    site_done = time.monotonic()
    until("beta-h3 answering through the fleet gateway again", lambda: complete(url, "beta-h3", FLEET_KEY)[0] == 200)
    rejoined_s = time.monotonic() - site_done
    servers["h3"] = short_ids(h3)
    where = {i: (h, n) for h, ids in servers.items() for i, n in ids.items()}
    until("h3's alpha back in the rotation",
          lambda: "h3" in {where.get(complete(url, "alpha", FLEET_KEY)[1], ("?",))[0] for _ in range(12)})

    # Nothing changed since the gateway's run: a second run changes nothing anywhere.
    gateway_before = h1.containers()["fleet-gateway/gateway"]
    again = fleet.playbook(FLEET_GATEWAY, extra_vars=extra)
    assert again.rc == 0, again
    assert {h: s["changed"] for h, s in again.stats.items()} == {h.name: 0 for h in fleet.hosts}
    assert h1.containers()["fleet-gateway/gateway"] == gateway_before
    # (figures for the README, shown with -s; not asserted)
    print(f"\nfleet_gateway: first run {made.ended - made.started:.1f} s, unchanged run "
          f"{again.ended - again.started:.1f} s; beta-h3 back through the gateway {rejoined_s:.1f} s after site returned")

    # A run while h3 cannot be read: its servers leave the routes (a reload in place, the
    # gateway container stays) and h3 fails the run, after the gateway was brought up to date.
    h3.stop_engine()
    try:
        down = fleet.playbook(FLEET_GATEWAY, extra_vars=extra)
    finally:
        h3.start_engine()
    assert down.failed_hosts() == {"h3"}, down
    assert "Docker engine not reachable" in down.failures()["h3"]
    (result,) = down.results("Bring the fleet gateway to its routes").values()
    assert [(a["action"], a["instance"]) for a in result["actions"]] == [("reload", "gateway")] and result["changed"]
    assert h1.containers()["fleet-gateway/gateway"]["id"] == gateway_before["id"]
    assert models_of(url, FLEET_KEY) == ["alpha", "beta-h1", "beta-h2"]
    assert complete(url, "beta-h3", FLEET_KEY)[0] == 404
