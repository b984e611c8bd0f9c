"""`[monitoring]`: every setting declared once (type, default, doc), like gateway/settings.py.

The JSON Schema's `monitoring` table and the README's rows come from MONITORING_SETTINGS; `read`
turns the document into a MonitoringSpec, the value the renderers and the service use.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from orchestrator.options import Setting, table_rows, table_schema
from orchestrator.value import Value

MONITORING_NAME = "monitoring"  # its row in `ps`, its `logs` name, its container's `<project>-monitoring`
DEFAULT_IMAGE = "vllm-orch/monitoring:latest"  # scripts/build-images.sh monitoring
# Prometheus' own duration syntax (2.42: a number and a unit, or several: "1h30m").
DURATION_PATTERN = "^([0-9]+(ms|s|m|h|d|w|y))+$"

MONITORING_SETTINGS: tuple[Setting, ...] = (
    Setting("enabled", {"type": "boolean"}, "run Prometheus (a `[monitoring]` table alone turns it on)", default=True),
    Setting("port", {"type": "integer", "minimum": 1, "maximum": 65535},
            "host port of Prometheus' web page and API", default=9090),
    Setting("publish_address", {"type": "string", "minLength": 1},
            "address Prometheus listens on (its API can reload it: keep it on loopback unless a firewall guards it)",
            default="127.0.0.1"),
    Setting("retention", {"type": "string", "pattern": DURATION_PATTERN},
            "how long samples are kept (Prometheus' duration: `15d`, `12h`)", default="15d"),
    Setting("scrape_interval", {"type": "string", "pattern": DURATION_PATTERN},
            "how often every server's `/metrics` is read (and the rules evaluated); a change reloads Prometheus "
            "in place", default="15s"),
    Setting("image", {"type": "string", "minLength": 1}, "Prometheus' image", default=DEFAULT_IMAGE),
    Setting("host_dir", {"type": "string", "minLength": 1, "pattern": "^[^:\\x00]+$"},  # ':' would split the bind mount
            "host dir of Prometheus' config, targets and data (`<dir>/<project>/`, relative to this file); "
            "`down` keeps it, like the logs", default=".vllm-orch/monitoring"),
)

DEFAULTS: dict[str, Any] = {s.key: s.default for s in MONITORING_SETTINGS if s.default is not None}


def schema() -> dict[str, Any]:
    """The `[monitoring]` table's JSON Schema."""
    return table_schema(MONITORING_SETTINGS, "Prometheus over the project's servers, run by `up` (present = on).")


def readme_rows() -> str:
    """The README's reference rows (orchestrator/generate.py writes them)."""
    return table_rows(MONITORING_SETTINGS)


class MonitoringSpec(Value):
    """Prometheus as the config asks for it, paths made absolute."""

    project: str
    config_file: str
    port: int
    publish_address: str
    retention: str
    scrape_interval: str
    image: str
    host_dir: str  # <host_dir>/<project>: config/ (read-only in the container), secret/, data/
    log_file: str  # <log_host_dir>/monitoring.log
    restart: str

    @property
    def container_name(self) -> str:
        return f"{self.project}-{MONITORING_NAME}"

    @property
    def url(self) -> str:
        host = self.publish_address
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    @property
    def config_dir(self) -> str:
        return os.path.join(self.host_dir, "config")

    @property
    def secret_dir(self) -> str:
        return os.path.join(self.host_dir, "secret")

    @property
    def data_dir(self) -> str:
        return os.path.join(self.host_dir, "data")


def read(data: Mapping[str, Any], *, project: str, config_file: str) -> MonitoringSpec | None:
    """The document's `[monitoring]`, or None when there is none or `enabled = false` (the schema
    has been checked)."""
    table = data.get("monitoring")
    if not isinstance(table, dict) or not table.get("enabled", True):
        return None
    raw_docker = data.get("docker")
    docker: Mapping[str, Any] = raw_docker if isinstance(raw_docker, dict) else {}
    base = os.path.dirname(os.path.abspath(config_file))
    settings = {**DEFAULTS, **table}

    def host_path(raw: str) -> str:
        return os.path.normpath(os.path.join(base, os.path.expanduser(raw)))

    return MonitoringSpec(
        project=project, config_file=config_file, port=int(settings["port"]),
        publish_address=str(settings["publish_address"]), retention=str(settings["retention"]),
        scrape_interval=str(settings["scrape_interval"]), image=str(settings["image"]),
        host_dir=os.path.join(host_path(str(settings["host_dir"])), project),
        log_file=os.path.join(host_path(str(docker.get("log_host_dir", "logs"))), f"{MONITORING_NAME}.log"),
        restart=str(docker.get("restart", "no")))


if __name__ == "__main__":
    print(readme_rows(), end="")
