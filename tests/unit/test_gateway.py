"""The gateway's pure parts: `[gateway]` read and validated, routes from the specs, the HAProxy
files rendered from them, the versioned writes, and the plan (create / recreate / reload / noop)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from orchestrator.errors import ConfigError
from orchestrator.gateway import files, haproxy, service
from orchestrator.gateway.routes import Route, describe_change, routes_for
from orchestrator.gateway.settings import GatewaySpec, read
from orchestrator.labels import LABEL_SPEC
from orchestrator.project import open_project
from tests.builders import config, resolve_toml

def fleet_text(gateway: str = "port = 9000", extra: str = "") -> str:
    # The builder writes each [instance.X.server] once; fold the model names into them.
    text = config("a", "b", "c", control='gpu_ids = "none"', first_port=8001)
    for name, model in (("a", "m1"), ("b", "m1"), ("c", "m2")):
        text = text.replace(f"[instance.{name}.server]\n", f'[instance.{name}.server]\nserved_model_name = "{model}"\n')
    return text + f"\n[gateway]\n{gateway}\n" + extra


def problems(write_toml, text: str):
    try:
        return open_project(write_toml(text), env={}, backend="docker", strict=False).problems
    except ConfigError as exc:
        return exc.problems


def errors(write_toml, text: str) -> list[str]:
    return [p.format() for p in problems(write_toml, text) if p.is_error]


def gateway_of(tmp_path, text: str) -> tuple[GatewaySpec, list]:
    resolved = resolve_toml(text, tmp_path)
    from tests.builders import load_data, write_config

    data = load_data(write_config(text, tmp_path))
    return read(data, project=resolved.project, config_file=resolved.config_file), resolved.instances


# ----------------------------------------------------------------------------- settings, validate
def test_a_gateway_table_turns_it_on_and_enabled_false_turns_it_off(tmp_path):
    gateway, _ = gateway_of(tmp_path, fleet_text())
    assert gateway.port == 9000 and gateway.policy == "prefix" and gateway.image == "vllm-orch/gateway:latest"
    assert gateway.url == "http://127.0.0.1:9000" and gateway.host_dir == str(tmp_path / ".vllm-orch" / "gateway" / "fleet")
    assert gateway_of(tmp_path, fleet_text("port = 9000\nenabled = false"))[0] is None
    assert gateway_of(tmp_path, config("a"))[0] is None


def test_validate_refuses_a_port_clash_a_bad_policy_and_a_missing_port(write_toml):
    found = errors(write_toml, fleet_text("port = 8002"))
    assert any("gateway.port" in e and "instance 'b'" in e for e in found)
    found = errors(write_toml, fleet_text('port = 9000\npolicy = "fastest"'))
    assert any("gateway.policy" in e for e in found)
    found = errors(write_toml, fleet_text('policy = "round_robin"'))
    assert any("gateway.port" in e and "missing" in e for e in found)
    found = errors(write_toml, fleet_text("port = 9000\nmax_body = 3"))
    assert any("gateway" in e and "max_body" in e for e in found)
    assert errors(write_toml, fleet_text()) == []


def test_validate_refuses_an_instance_named_gateway_and_a_model_name_with_spaces(write_toml):
    text = fleet_text() + '\n[instance.gateway.server]\nmodel = "/m"\nport = 8100\n'
    assert any("instance.gateway" in e for e in errors(write_toml, text))
    text = fleet_text().replace('served_model_name = "m2"', 'served_model_name = "my model"')
    assert any("no spaces" in e for e in errors(write_toml, text))


def test_an_open_gateway_on_the_network_is_a_warning_and_the_key_never_shows(write_toml):
    text = fleet_text().replace("[docker]\n", '[docker]\npublish_address = "0.0.0.0"\n', 1)
    found = [p.format() for p in problems(write_toml, text)]
    assert any("gateway.api_key" in p and "without an API key" in p for p in found)
    text = fleet_text('port = 9000\napi_key = "k-123"').replace("[docker]\n", '[docker]\npublish_address = "0.0.0.0"\n', 1)
    assert not any("gateway.api_key" in p.format() for p in problems(write_toml, text))
    assert "k-123" not in repr(gateway_of(write_toml(text).parent, text)[0])


# ----------------------------------------------------------------------------- routes
def test_replicas_share_a_model_and_disabled_instances_get_no_route(tmp_path):
    gateway, instances = gateway_of(tmp_path, fleet_text())
    routes = routes_for(instances)
    assert [(r.model, r.instance, r.address) for r in routes] == [
        ("m1", "a", "127.0.0.1:8001"), ("m1", "b", "127.0.0.1:8002"), ("m2", "c", "127.0.0.1:8003")]
    text = fleet_text() + "\n[instance.c.control]\nenabled = false\n"
    assert [r.instance for r in routes_for(gateway_of(tmp_path, text)[1])] == ["a", "b"]


def test_an_unpublished_instance_is_reached_at_its_container_address(tmp_path):
    text = fleet_text() + "\n[instance.c.docker]\npublish = false\n"
    _, instances = gateway_of(tmp_path, text)
    assert "c" not in [r.instance for r in routes_for(instances)]  # not running yet: no address
    assert routes_for(instances, {"c": "172.17.0.9"})[-1].address == "172.17.0.9:8003"


def test_route_changes_are_described_for_dry_run():
    before = [Route("m1", "a", "h:1"), Route("m2", "c", "h:3")]
    after = [Route("m1", "a", "h:9"), Route("m3", "d", "h:4")]
    assert describe_change(before, after) == ["+ d (m3)", "- c (m2)", "a: h:1 -> h:9"]
    named = [Route("m1", "a", "h:1", ("m1-latest",))]
    assert describe_change(named, [Route("m1", "a", "h:9", ("m1-latest",))]) == ["a: h:1 -> h:9"]
    assert describe_change(named, [Route("m1", "a", "h:1")]) == ["a: other names m1-latest -> none"]


# ----------------------------------------------------------------------------- rendering
def test_the_rendered_files_route_by_model_and_answer_in_openai_shapes(tmp_path):
    gateway, instances = gateway_of(tmp_path, fleet_text('port = 9000\npolicy = "least_conn"\napi_key = "k-1"'))
    rendered = haproxy.render(gateway, routes_for(instances), "v-1")
    cfg = rendered["haproxy.cfg"].decode()
    assert "bind 127.0.0.1:9000" in cfg and "balance leastconn" in cfg and "ok v-1" in cfg
    assert cfg.count("server a 127.0.0.1:8001") == 1 and "server c 127.0.0.1:8003" in cfg
    assert "retry-on conn-failure" in cfg and "option httpchk GET /health" in cfg
    # The no-replica 503 is not given by a worker stopping after a reload (it forwards what it accepted).
    assert "if { nbsrv() eq 0 } !{ stopping }" in cfg
    assert "k-1" not in cfg  # the key is only in the secret file
    assert haproxy.keys_file(gateway) == b"k-1\n"
    assert json.loads(rendered["models.json"])["data"][1]["id"] == "m2"
    unknown = json.loads(rendered["answers/unknown-model.json"])
    assert unknown["error"]["code"] == 404 and "m1, m2" in unknown["error"]["message"]
    assert rendered["models.map"].decode().splitlines() == [
        f"m1 {haproxy.backend_name('m1')}", f"m2 {haproxy.backend_name('m2')}"]


def test_every_served_name_of_an_instance_is_listed_and_routed_to_its_backend(tmp_path, write_toml):
    text = fleet_text().replace('served_model_name = "m2"', 'served_model_name = ["m2", "m2-alias", "m1"]')
    gateway, instances = gateway_of(tmp_path, text)
    rendered = haproxy.render(gateway, routes_for(instances))
    listed = {m["id"]: m["root"] for m in json.loads(rendered["models.json"])["data"]}
    assert listed == {"m1": "m1", "m2": "m2", "m2-alias": "m2"}  # m1 stays the model of a and b
    assert rendered["models.map"].decode().splitlines() == [
        f"m1 {haproxy.backend_name('m1')}", f"m2 {haproxy.backend_name('m2')}",
        f"m2-alias {haproxy.backend_name('m2')}"]
    spaced = text.replace('"m2-alias"', '"m2 alias"')
    assert any("'m2 alias': the gateway routes by model name" in e for e in errors(write_toml, spaced))


def test_a_model_name_cannot_break_out_of_an_answer(tmp_path):
    text = fleet_text().replace('served_model_name = "m2"', 'served_model_name = "m\\"}x"')
    gateway, instances = gateway_of(tmp_path, text)
    rendered = haproxy.render(gateway, routes_for(instances))
    assert 'm"}x' in json.loads(rendered["answers/unknown-model.json"])["error"]["message"]
    assert 'm"}x' in [m["id"] for m in json.loads(rendered["models.json"])["data"]]


# ----------------------------------------------------------------------------- files
def test_a_version_is_written_whole_and_switched_atomically(tmp_path):
    host = str(tmp_path / "gw")
    first = {"haproxy.cfg": b"one", "answers/x.json": b"{}"}
    v1 = files.version_of(first, "")
    assert files.write_version(host, v1, first, b"Bearer k\n") is True
    assert files.write_version(host, v1, first, b"Bearer k\n") is False  # unchanged: nothing written
    assert files.current_version(host) == v1 and open(os.path.join(host, "current", "haproxy.cfg")).read() == "one"
    secret = os.path.join(host, "secret")
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(secret, "keys")).st_mode) == 0o400
    versions = []
    for n in range(4):
        data = {"haproxy.cfg": str(n).encode()}
        versions.append(files.version_of(data, ""))
        files.write_version(host, versions[-1], data, None)
    assert sorted(e for e in os.listdir(host) if e.startswith("v-")) == sorted(versions[-2:])
    assert not os.path.exists(os.path.join(secret, "keys"))  # the key was removed from the config
    assert files.version_of(first, "a") != files.version_of(first, "b")  # a new key is a new version


# ----------------------------------------------------------------------------- plan
def running_gateway(gateway: GatewaySpec, **record_changes) -> dict:
    return {"Id": "g1", "State": "running", "ImageID": "sha256:gw",
            "Labels": {LABEL_SPEC: json.dumps({**service.record(gateway), **record_changes})}}


def test_plan_creates_then_reloads_for_routes_and_recreates_only_for_its_record(tmp_path):
    gateway, instances = gateway_of(tmp_path, fleet_text())
    step = service.plan(gateway, None, image_id="sha256:gw", instances=instances, addresses={})
    assert step.kind == "create" and "m1, m2" in step.describe()
    files.write_version(gateway.host_dir, step.version, step.files, None)

    observed = running_gateway(gateway)
    assert service.plan(gateway, observed, image_id="sha256:gw", instances=instances, addresses={}).kind == "noop"

    _, more = gateway_of(tmp_path, fleet_text() + '\n[instance.d.server]\nmodel = "/m"\nport = 8010\n')
    step = service.plan(gateway, observed, image_id="sha256:gw", instances=more, addresses={})
    assert step.describe() == "reload gateway: routes: + d (/m)"

    other_policy, _ = gateway_of(tmp_path, fleet_text('port = 9001\npolicy = "round_robin"'))
    step = service.plan(other_policy, observed, image_id="sha256:gw", instances=instances, addresses={})
    assert step.kind == "reload"  # port and policy live in the file: no new container for them

    step = service.plan(gateway, running_gateway(gateway, image="old:1"), image_id="sha256:gw",
                        instances=instances, addresses={})
    assert step.kind == "recreate" and "image: old:1 -> vllm-orch/gateway:latest" in step.reasons
    assert service.plan(gateway, observed, image_id="sha256:new", instances=instances, addresses={}).kind == "recreate"
    assert service.plan(gateway, {**observed, "State": "exited"}, image_id="sha256:gw", instances=instances,
                        addresses={}).kind == "start"
    assert service.plan(None, observed, image_id=None, instances=instances, addresses={}).kind == "remove"
    assert service.plan(None, None, image_id=None, instances=instances, addresses={}) is None


def test_the_container_body_keeps_the_key_out_and_runs_locked_down(tmp_path):
    gateway, instances = gateway_of(tmp_path, fleet_text('port = 9000\napi_key = "k-77"'))
    body = service.create_body(gateway, routes_for(instances))
    assert "k-77" not in json.dumps(body)
    host = body["HostConfig"]
    assert host["NetworkMode"] == "host" and host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]
    assert f"{gateway.secret_dir}:{haproxy.SECRET_DIR}:ro" in host["Binds"]
    assert body["Labels"]["io.vllm-orch.role"] == "gateway" and body["Labels"]["io.vllm-orch.model"] == "m1,m2"


@pytest.mark.parametrize("setting,retry_on", [("", "retry-on conn-failure empty-response"),
                                              ("retry_unanswered = true", "retry-on conn-failure empty-response"),
                                              ("retry_unanswered = false", "retry-on conn-failure\n")])
def test_a_refused_connection_is_always_retried_and_an_unanswered_request_unless_turned_off(tmp_path, setting, retry_on):
    # retry_unanswered = false trades the retry of a request sent but never answered for the
    # router's copy of its whole request buffer per request (bench/gateway.py measures it).
    gateway, instances = gateway_of(tmp_path, fleet_text(f"port = 9000\n{setting}"))
    assert f"    {retry_on}" in haproxy.render(gateway, routes_for(instances))["haproxy.cfg"].decode()


def test_retry_unanswered_must_be_a_boolean(write_toml):
    found = errors(write_toml, fleet_text('port = 9000\nretry_unanswered = "no"'))
    assert any("gateway" in e and "retry_unanswered" in e for e in found)


@pytest.mark.parametrize("policy,expected", [("round_robin", "balance roundrobin"), ("least_conn", "balance leastconn"),
                                             ("prefix", "hash-balance-factor"), ("session", "x-session-id")])
def test_each_policy_renders_its_balance(tmp_path, policy, expected):
    gateway, instances = gateway_of(tmp_path, fleet_text(f'port = 9000\npolicy = "{policy}"'))
    assert expected in haproxy.render(gateway, routes_for(instances))["haproxy.cfg"].decode()


def test_the_readme_lists_every_gateway_setting_as_declared():
    from pathlib import Path

    from orchestrator.gateway.settings import readme_rows

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for row in readme_rows().splitlines()[2:]:
        assert row in readme, f"README's [gateway] table is stale (python -m orchestrator.gateway.settings): {row}"


# ----------------------------------------------------------------------------- exports
def test_the_kubernetes_export_has_the_gateway_with_the_instances_services_as_backends(write_toml, capsys):
    import yaml

    from orchestrator.cli import main
    from tests.unit.test_kubernetes import assert_strictly_valid

    path = write_toml(fleet_text('port = 9000\napi_key = "k-9"'))
    assert main(["-c", str(path), "k8s", "--offline"]) == 0
    out, err = capsys.readouterr()
    assert "k-9" not in out + err
    assert_strictly_valid(out)
    docs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out)}
    config = docs[("ConfigMap", "fleet-gateway")]["data"]["haproxy.cfg"]
    assert "server a fleet-a:8001" in config and "server c fleet-c:8003" in config and "bind 0.0.0.0:9000" in config
    pod = docs[("Deployment", "fleet-gateway")]["spec"]["template"]["spec"]
    assert pod["volumes"][1]["secret"]["items"] == [{"key": "VLLM_ORCH_GATEWAY_API_KEY", "path": "keys"}]
    assert docs[("Service", "fleet-gateway")]["spec"]["ports"][0]["port"] == 9000
    assert "VLLM_ORCH_GATEWAY_API_KEY" in out.split("apiVersion")[0]  # the header names the Secret's key


def test_the_compose_export_has_the_gateway_and_never_its_key(write_toml, capsys):
    import yaml

    from orchestrator.cli import main

    path = write_toml(fleet_text('port = 9000\napi_key = "k-9"'))
    assert main(["-c", str(path), "compose", "--offline"]) == 0
    out, err = capsys.readouterr()
    assert "k-9" not in out + err
    doc = yaml.safe_load(out)
    service = doc["services"]["gateway"]
    assert service["network_mode"] == "host" and service["labels"]["io.vllm-orch.role"] == "gateway"
    assert doc["secrets"] == {"vllm-orch-gateway-api-key": {"environment": "VLLM_ORCH_GATEWAY_API_KEY"}}
    config = doc["configs"]["vllm-orch-gateway-haproxy-cfg"]["content"]
    assert "$$.model" in config  # escaped: Compose must not interpolate HAProxy's JSON paths
    assert "server a 127.0.0.1:8001" in config


def test_routes_outside_the_project_join_a_model_and_are_checked(write_toml, tmp_path):
    text = fleet_text('port = 9000\nroutes = [{ model = "m1", url = "http://10.0.0.2:8001" }, '
                      '{ model = "far", url = "http://10.0.0.3:8002/" }]')
    gateway, instances = gateway_of(tmp_path, text)
    routes = routes_for(instances, remote=gateway.remote)
    assert [(r.model, r.instance, r.address) for r in routes if r.instance.startswith("remote")] == [
        ("far", "remote-10.0.0.3-8002", "10.0.0.3:8002"), ("m1", "remote-10.0.0.2-8001", "10.0.0.2:8001")]
    assert errors(write_toml, text) == []
    found = errors(write_toml, fleet_text('port = 9000\nroutes = [{ model = "m 1", url = "x" }]'))
    assert any("routes[0].model" in e for e in found) and any("routes[0].url" in e for e in found)
    found = errors(write_toml, fleet_text('port = 9000\nroutes = [{ model = "m1", url = "http://h:99999" }, '
                                          '{ model = "m2", url = "http://h:1" }, { model = "m2", url = "http://h:1/" }]'))
    assert any("routes[0].url" in e and "99999" in e for e in found)
    assert any("routes[2]" in e and "listed twice" in e for e in found)


def test_the_gateway_row_of_ps_has_every_key_an_instance_row_has(tmp_path):
    """`ps` prints the gateway in the instances' table and `--json` rows (the Ansible module and
    scripts read them): a key the instances' rows gain must reach the gateway's too."""
    from orchestrator.gateway.workflow import ps_row
    from orchestrator.status import ps_rows

    class Listed:
        last_rows: list = []

    from tests.builders import write_config

    project = open_project(write_config(fleet_text(), tmp_path), env={})
    (instance_row, *_) = ps_rows([], project.resolved.instances, project.resolved.containers)
    not_created = ps_row(project.name, project, Listed())
    running = service.status_row({"Names": ["/p-gateway"], "State": "exited", "Status": "Exited (0) 1 second ago",
                                  "Labels": {}}, configured=True)
    assert not_created is not None and set(not_created) == set(instance_row) == set(running)


@pytest.mark.parametrize("command", [["validate", "--offline"], ["plan"], ["compose", "--offline"], ["k8s", "--offline"]])
def test_routes_no_router_could_dial_are_config_errors_in_every_command(write_toml, capsys, command):
    from orchestrator.cli import main

    for routes, said in (('[{ model = "m9" }]', "url"),
                         ('[{ model = "m9", url = "http://10.0.0.2:99999" }]', "port 99999 is not a TCP port"),
                         ('[{ model = "m9", url = "http://10.0.0.2:8001" }, { model = "m9", url = "http://10.0.0.2:8001" }]',
                          "listed twice for model m9")):
        path = write_toml(fleet_text(f"port = 9000\nroutes = {routes}"))
        assert main(["-c", str(path), *command]) == 2, routes
        out, err = capsys.readouterr()
        assert said in out + err and "internal error" not in out + err, out + err


def test_an_instance_key_other_than_the_gateways_is_a_warning_that_never_shows_either(write_toml):
    text = fleet_text('port = 9000\napi_key = "gw-key-1"').replace(
        '[instance.c.server]\n', '[instance.c.server]\napi_key = "inst-key-2"\n')
    found = [p for p in problems(write_toml, text) if p.path == "instance.c.server.api_key"]
    assert [p.severity for p in found] == ["warning"] and "differs from [gateway] api_key" in found[0].message
    assert not any("key-1" in p.format() or "key-2" in p.format() for p in problems(write_toml, text))
    same = text.replace('api_key = "inst-key-2"', 'api_key = "gw-key-1"')
    assert not [p for p in problems(write_toml, same) if p.path == "instance.c.server.api_key"]


def test_a_served_name_two_models_claim_is_an_error(write_toml):
    text = fleet_text().replace('served_model_name = "m2"', 'served_model_name = ["m2", "m1"]')
    assert any("the served name 'm1' belongs to models m1, m2" in e for e in errors(write_toml, text))
