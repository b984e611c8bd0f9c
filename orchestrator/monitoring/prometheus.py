"""Prometheus' configuration and its file-based targets, rendered from the plan.

    <host_dir>/config/prometheus.yml     scrape jobs `vllm`, `gateway` and `activator`; a change reloads in place
    <host_dir>/config/rules.yml          rules.py's text; likewise
    <host_dir>/config/targets/*.json     file_sd targets: Prometheus re-reads them by itself, so
                                         adding or removing an instance changes nothing else
    <host_dir>/secret/gateway-key        the gateway's API key (0400, the caller's: the container
                                         runs as the caller), read by Prometheus as a file
    <host_dir>/data/                     the TSDB (kept across `down`, like the logs)

Prometheus runs on the host's network (service.py), so every target is the address the gateway
dials too (gateway/routes.py): a published port, or an unpublished container's bridge address.
"""

from __future__ import annotations

import json
from typing import Iterable, Mapping

import yaml

from orchestrator.gateway.routes import routes_for
from orchestrator.monitoring import rules
from orchestrator.monitoring.queries import JOB_ACTIVATOR, JOB_GATEWAY, JOB_VLLM
from orchestrator.monitoring.settings import MonitoringSpec

CONFIG_DIR = "/etc/vllm-orch"  # the config dir, read-only in the container
SECRET_DIR = "/etc/vllm-orch-secret"
DATA_DIR = "/prometheus"
KEY_FILE = "gateway-key"
TARGET_FILES = {JOB_VLLM: "targets/vllm.json", JOB_GATEWAY: "targets/gateway.json",
                JOB_ACTIVATOR: "targets/activator.json"}
FILE_SD_REFRESH = "30s"  # a backstop: Prometheus also watches the files (inotify) and reads a change at once


def config_files(spec: MonitoringSpec, *, gateway_key: bool) -> dict[str, bytes]:
    """prometheus.yml and rules.yml (what a reload must follow)."""
    jobs = []
    for job, path in TARGET_FILES.items():
        entry: dict = {"job_name": job, "metrics_path": "/metrics",
                       "file_sd_configs": [{"files": [f"{CONFIG_DIR}/{path}"], "refresh_interval": FILE_SD_REFRESH}]}
        if job == JOB_GATEWAY and gateway_key:  # the gateway's /metrics wants its key; never in this file
            entry["authorization"] = {"type": "Bearer", "credentials_file": f"{SECRET_DIR}/{KEY_FILE}"}
        jobs.append(entry)
    config = {
        "global": {"scrape_interval": spec.scrape_interval, "evaluation_interval": spec.scrape_interval,
                   "external_labels": {"vllm_orch_project": spec.project}},
        "rule_files": [f"{CONFIG_DIR}/rules.yml"],
        "scrape_configs": jobs,
    }
    header = "# Written by vllm-orch at every `up` (orchestrator/monitoring/prometheus.py); edits are overwritten.\n"
    return {"prometheus.yml": (header + yaml.safe_dump(config, sort_keys=False)).encode(),
            "rules.yml": rules.text().encode()}


def target_groups(project: str, instances: Iterable, addresses: Mapping[str, str],
                  gateway_address: str | None, activator_address: str | None = None) -> dict[str, list[dict]]:
    """job -> its file_sd groups: one per enabled instance (labels project, model, instance),
    the gateway's, and the activator's (on-demand instances' starts, per model). An unpublished instance without a container yet has no address: left
    out until the `up` that starts it."""
    instances = list(instances)
    on_demand = {s.name for s in instances if getattr(s.workload, "on_demand", False)}

    def labels(route) -> dict[str, str]:
        found = {"project": project, "model": route.model, "instance": route.instance}
        if route.instance in on_demand:  # down while stopped on demand: the alerts leave it out (rules.py)
            found["on_demand"] = "true"
        return found

    vllm: list[dict] = [{"targets": [route.address], "labels": labels(route)}
                        for route in sorted(routes_for(instances, addresses), key=lambda r: r.instance)]
    gateway = ([{"targets": [gateway_address], "labels": {"project": project, "model": "", "instance": JOB_GATEWAY}}]
               if gateway_address else [])
    activator = ([{"targets": [activator_address], "labels": {"project": project, "model": "",
                                                              "instance": JOB_ACTIVATOR}}]
                 if activator_address else [])
    return {JOB_VLLM: vllm, JOB_GATEWAY: gateway, JOB_ACTIVATOR: activator}


def target_files(groups: Mapping[str, list[dict]]) -> dict[str, bytes]:
    return {TARGET_FILES[job]: (json.dumps(found, indent=1, sort_keys=True) + "\n").encode()
            for job, found in groups.items()}


def describe_targets(before: Mapping[str, bytes | None], after: Mapping[str, bytes]) -> list[str]:
    """`+ chat2`, `- old`, `chat: a -> b`: what a targets change does, for `up --dry-run`."""
    def index(data: bytes | None) -> dict[str, str]:
        try:
            groups = json.loads(data or b"[]")
        except ValueError:
            return {}
        return {g["labels"]["instance"]: g["targets"][0] for g in groups if isinstance(g, dict) and g.get("targets")}

    out: list[str] = []
    for path in sorted(after):
        old, new = index(before.get(path)), index(after[path])
        out += [f"+ {n}" for n in sorted(new.keys() - old.keys())]
        out += [f"- {n}" for n in sorted(old.keys() - new.keys())]
        out += [f"{n}: {old[n]} -> {new[n]}" for n in sorted(old.keys() & new.keys()) if old[n] != new[n]]
    return out


def argv(spec: MonitoringSpec) -> list[str]:
    """Prometheus' command line (exec form). `--web.enable-lifecycle` lets `up` reload it in place
    (POST /-/reload); it listens on `publish_address` only (loopback unless configured)."""
    host = spec.publish_address
    return [f"--config.file={CONFIG_DIR}/prometheus.yml", f"--storage.tsdb.path={DATA_DIR}",
            f"--storage.tsdb.retention.time={spec.retention}",
            f"--web.listen-address={'[' + host + ']' if ':' in host else host}:{spec.port}",
            "--web.enable-lifecycle"]
