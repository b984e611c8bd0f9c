"""`validate`'s on-demand rules (config/on_demand_check.py): what a user who writes `on_demand` or
`idle_stop_after` wrongly is told, one line each, by `validate` and `up` (both open the project
the same way), and what the exports and the launcher are told."""

from __future__ import annotations

import textwrap

import pytest

from orchestrator.errors import ConfigError
from orchestrator.project import open_project
from orchestrator.vllm_options import OptionTable

HEADER = """
[docker]
image = "img"
{docker}
[instance.control]
gpu_ids = "none"
[instance.server]
model = "/models/m"
"""
GATEWAY = "\n[gateway]\nport = 9000\n"


def problems(write_toml, body: str, target: str = "docker", tables=None, docker: str = ""):
    path = write_toml(textwrap.dedent(HEADER).format(docker=docker) + textwrap.dedent(body))
    try:
        return open_project(path, env={}, target=target, strict=False, tables=tables, on_host=False).problems
    except ConfigError as exc:  # pragma: no cover - strict=False collects them
        return exc.problems


def by_path(found, severity: str) -> dict[str, str]:
    return {p.path: p.message + (f" ({p.hint})" if p.hint else "") for p in found if p.severity == severity}


def test_idle_stop_after_on_an_instance_that_is_not_on_demand_is_an_error(write_toml):
    found = problems(write_toml, """
        [instance.chat.docker]
        idle_stop_after = 600
        [instance.coder.docker]
        on_demand = true
        idle_stop_after = 300
        [instance.coder.server]
        port = 8001
        """ + GATEWAY)
    errors = by_path(found, "error")
    assert list(errors) == ["instance.chat.docker.idle_stop_after"]
    assert "not on demand" in errors["instance.chat.docker.idle_stop_after"]
    assert "set on_demand = true in [instance.chat.docker]" in errors["instance.chat.docker.idle_stop_after"]


def test_instance_turning_off_a_global_on_demand_cannot_keep_its_own_idle_stop_after(write_toml):
    found = problems(write_toml, """
        [instance.chat.docker]
        on_demand = false
        idle_stop_after = 60
        [instance.coder.server]
        port = 8001
        """ + GATEWAY, docker="on_demand = true")
    assert "instance.chat.docker.idle_stop_after" in by_path(found, "error")


def test_a_global_idle_stop_after_with_no_on_demand_instance_is_a_warning(write_toml):
    found = problems(write_toml, """
        [instance.chat.server]
        port = 8001
        """, docker="idle_stop_after = 600")
    assert by_path(found, "error") == {}
    assert "no instance is on demand" in by_path(found, "warning")["docker.idle_stop_after"]


def test_a_global_idle_stop_after_is_fine_once_one_instance_is_on_demand(write_toml):
    found = problems(write_toml, """
        [instance.chat.server]
        port = 8001
        [instance.coder.docker]
        on_demand = true
        [instance.coder.server]
        port = 8002
        """ + GATEWAY, docker="idle_stop_after = 600")
    assert by_path(found, "error") == {}
    assert "docker.idle_stop_after" not in by_path(found, "warning")


def test_on_demand_without_a_gateway_says_to_add_one(write_toml):
    found = problems(write_toml, """
        [instance.coder.docker]
        on_demand = true
        """)
    errors = by_path(found, "error")
    assert list(errors) == ["instance.coder.docker.on_demand"]
    assert "no [gateway]" in errors["instance.coder.docker.on_demand"]
    assert "nothing would ever start it" in errors["instance.coder.docker.on_demand"]
    assert "add a [gateway] table" in errors["instance.coder.docker.on_demand"]


def test_a_global_on_demand_without_gateway_is_reported_once_at_its_own_key(write_toml):
    found = problems(write_toml, "[instance.a.server]\nport = 8001\n[instance.b.server]\nport = 8002\n",
                     docker="on_demand = true")
    assert [p.path for p in found if p.is_error] == ["docker.on_demand"]


def test_a_disabled_gateway_is_no_gateway(write_toml):
    found = problems(write_toml, """
        [instance.coder.docker]
        on_demand = true
        [gateway]
        port = 9000
        enabled = false
        """)
    assert "instance.coder.docker.on_demand" in by_path(found, "error")


def test_an_on_demand_instance_without_a_model_name_cannot_be_routed(write_toml):
    path = write_toml(textwrap.dedent("""
        [master]
        api_server_module = "my.server"
        [docker]
        image = "img"
        [instance.coder.docker]
        on_demand = true
        """) + GATEWAY)
    found = open_project(path, env={}, strict=False, on_host=False).problems
    errors = by_path(found, "error")
    assert "no model name" in errors["instance.coder.server.served_model_name"]


def test_up_refuses_the_same_config_validate_refuses(write_toml):
    """`up` opens the project strictly: the error stops it before anything is created."""
    path = write_toml(textwrap.dedent(HEADER).format(docker="") + "[instance.coder.docker]\non_demand = true\n")
    with pytest.raises(ConfigError) as caught:
        open_project(path, env={})
    assert "no [gateway]" in str(caught.value) and "instance.coder.docker.on_demand" in str(caught.value)


def test_under_the_launcher_an_on_demand_instance_starts_as_usual_with_a_warning(write_toml):
    found = problems(write_toml, """
        [instance.coder.docker]
        on_demand = true
        """, target="local")
    assert by_path(found, "error") == {}
    warning = by_path(found, "warning")["instance.coder.docker.on_demand"]
    assert "`launch` starts it as usual" in warning


@pytest.mark.parametrize("target", ["compose", "kubernetes"])
def test_the_exports_need_no_gateway(write_toml, target):
    found = problems(write_toml, """
        [instance.coder.docker]
        on_demand = true
        """, target=target)
    assert not [p for p in found if p.is_error and "on_demand" in p.path]


def _table(sleep_mode: bool | None, device: str = "cpu") -> OptionTable:
    doc = {"format": 1, "vllm_version": "0.32.0", "options": [
        {"dest": "enable_sleep_mode", "flags": ["--enable-sleep-mode"], "takes_value": False,
         "negative_flag": "--no-enable-sleep-mode", "value_type": "bool"},
        {"dest": "model", "flags": ["--model"], "takes_value": True}]}
    if sleep_mode is not None:
        doc["platform"] = {"device_type": device, "sleep_mode": sleep_mode}
    return OptionTable(doc, "test table")


SLEEPY = """
    [instance.coder.docker]
    on_demand = true
    [instance.coder.server]
    enable_sleep_mode = true
    """ + GATEWAY


def test_enable_sleep_mode_on_an_image_whose_vllm_has_none_is_refused(write_toml):
    found = problems(write_toml, SLEEPY, tables={"img": _table(False)})
    error = by_path(found, "error")["instance.coder.server.enable_sleep_mode"]
    assert "cpu build" in error and "refuses to start" in error
    assert "stopped and started instead" in error


def test_enable_sleep_mode_is_fine_where_the_image_has_it_or_does_not_say(write_toml):
    assert "instance.coder.server.enable_sleep_mode" not in by_path(
        problems(write_toml, SLEEPY, tables={"img": _table(True, "cuda")}), "error")
    # A table recorded before the platform was asked, or the recorded table (no image asked).
    assert "instance.coder.server.enable_sleep_mode" not in by_path(
        problems(write_toml, SLEEPY, tables={"img": _table(None)}), "error")
    assert "instance.coder.server.enable_sleep_mode" not in by_path(problems(write_toml, SLEEPY), "error")


def test_the_option_table_reads_the_platform_the_dump_records():
    assert (_table(False).device_type, _table(False).sleep_mode) == ("cpu", False)
    assert (_table(None).device_type, _table(None).sleep_mode) == (None, None)
    assert OptionTable.bundled().sleep_mode is None  # recorded before the dump asked


def test_an_unpublished_on_demand_instance_is_an_error(write_toml):
    found = problems(write_toml, GATEWAY + """
        [instance.a.docker]
        on_demand = true
        publish = false
        [instance.a.server]
        served_model_name = "m1"
        port = 8001
        """)
    assert "not published" in by_path(found, "error")["instance.a.docker.publish"]


def test_on_demand_instances_sharing_a_gpu_take_turns_and_only_the_always_on_ones_must_fit_beside_each(write_toml):
    def config(embed: float, coder_on_demand: bool = True) -> str:
        parts = []
        for port, (name, share, on_demand) in enumerate((("chat", 0.6, True), ("coder", 0.6, coder_on_demand),
                                                         ("embed", embed, False)), start=8001):
            parts.append(f"[instance.{name}.control]\ngpu_ids = \"0\"\n")
            if on_demand:
                parts.append(f"[instance.{name}.docker]\non_demand = true\n")
            parts.append(f"[instance.{name}.server]\nport = {port}\ngpu_memory_utilization = {share}\n")
        return "".join(parts) + GATEWAY

    assert by_path(problems(write_toml, config(0.3)), "error") == {}
    (message,) = by_path(problems(write_toml, config(0.5)), "error").values()
    assert message.startswith("GPU 0: on-demand chat (0.6) cannot start beside the always-on embed (0.5): "
                              "gpu_memory_utilization sums to 1.1 > 1")
    # Always-on instances are still summed all together.
    (message,) = by_path(problems(write_toml, config(0.3, coder_on_demand=False)), "error").values()
    assert "sums to 1.5 > 1" in message
    # The launcher starts every instance at once: every share counts there. A Compose export
    # starts them all with its on-demand profile: a warning, the export is still made.
    errors = by_path(problems(write_toml, config(0.3), target="local"), "error")
    assert any("sums to 1.5 > 1" in m for m in errors.values()), errors
    found = problems(write_toml, config(0.3), target="compose")
    assert by_path(found, "error") == {}
    assert "`docker compose --profile on-demand up` starts every on-demand instance at once" in \
        " ".join(by_path(found, "warning").values())


def test_an_instance_named_activator_restart_always_and_sleep_routes_on_the_network(write_toml):
    found = problems(write_toml, """
        [instance.activator.server]
        port = 8001
        [instance.chat.docker]
        restart = "always"
        [instance.chat.server]
        port = 8002
        enable_sleep_mode = true
        """ + GATEWAY, docker="on_demand = true\npublish_address = \"0.0.0.0\"")
    errors, warnings = by_path(found, "error"), by_path(found, "warning")
    assert errors["instance.activator"].startswith("this name is the on-demand activator's")
    assert "reachable on 0.0.0.0:8002" in errors["instance.chat.server.enable_sleep_mode"]
    assert "/collective_rpc" in errors["instance.chat.server.enable_sleep_mode"]
    assert warnings["instance.chat.docker.restart"].startswith('"always" on an on-demand instance')
    # On loopback (the default) the development routes are the host's alone: no error.
    quiet = problems(write_toml, """
        [instance.chat.server]
        port = 8002
        enable_sleep_mode = true
        """ + GATEWAY, docker="on_demand = true")
    assert by_path(quiet, "error") == {}
