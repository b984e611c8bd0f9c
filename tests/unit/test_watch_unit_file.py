"""The shipped systemd unit runs a command vllm-orch accepts, stops it with the signal watch
handles, and shares `up`'s state directory (the run lock must be the same file)."""

from __future__ import annotations

import configparser
import shlex
from pathlib import Path

from orchestrator.cli import build_parser, command_named

UNIT = Path(__file__).resolve().parents[2] / "scripts" / "vllm-orch-watch@.service"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_exec_start_is_a_watch_command_the_parser_takes():
    argv = shlex.split(unit()["Service"]["ExecStart"].replace("%i", "fleet"))
    assert argv[0].endswith("vllm-orch")
    args = build_parser(only=command_named(argv[1:])).parse_args(argv[1:])
    assert args.command == "watch" and args.config == "/etc/vllm-orch/fleet.toml"


def test_stopped_with_sigterm_after_docker_and_in_ups_state_dir():
    service, section = unit()["Service"], unit()["Unit"]
    assert service["KillSignal"] == "SIGTERM"
    assert "docker.service" in section["After"] and "docker.service" in section["Requires"]
    # what `up` run as root uses (run_lock.default_state_dir): the same run lock
    assert service["Environment"] == "VLLM_ORCH_STATE_DIR=/run/vllm-orch"
