"""`ps` right after `up --wait`: the server answered /health, so `ps` must not say "starting"
because Docker's own health check has not run yet."""

from __future__ import annotations

import pytest

from tests.integration.conftest import free_port

pytestmark = pytest.mark.docker


def write_one_slow_checked_instance(fleet) -> None:
    fleet.write(f"""
        [instance.control]
        gpu_ids = "none"
        [instance.server]
        host = "0.0.0.0"
        model = "/m"
        [instance.a.server]
        port = {free_port()}
        """)
    # Docker checks health only every 600 s: only /health itself can say the server is up.
    fleet.path.write_text(fleet.path.read_text().replace("health_interval = 1", "health_interval = 600"))


def test_ps_shows_what_health_says_right_after_up_wait(fleet):
    write_one_slow_checked_instance(fleet)
    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 0, err
    assert "starting" in fleet.container("a").attrs["State"]["Health"]["Status"]  # Docker has not checked yet
    [row] = fleet.cli_json("ps")["instances"]
    assert (row["health"], row["health_from"]) == ("healthy", "/health")
    code, out, _ = fleet.cli("ps")
    assert "healthy" in out and "starting" not in out


def test_up_wait_json_rows_say_healthy_too(fleet):
    """What provisioning tools read (the Ansible module takes `up --json`'s rows): after
    `--wait` saw /health answer, the rows must not say "starting" either."""
    write_one_slow_checked_instance(fleet)
    doc = fleet.cli_json("up", "--wait", "--timeout", "120")
    [row] = doc["instances"]
    assert (row["health"], row["health_from"]) == ("healthy", "/health")
