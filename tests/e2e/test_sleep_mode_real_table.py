"""The real vLLM CPU image has no sleep mode, and says so in its option table: its dump records
the platform ("cpu", no sleep mode), and `validate` refuses enable_sleep_mode for an instance of
that image (that vLLM would refuse to start: "Sleep mode is not supported on current platform").
The image is asked once per session (a fresh option-table cache, ~20 s)."""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from orchestrator.cli import main
from orchestrator.vllm_options_dump import __file__ as DUMP

pytestmark = pytest.mark.vllm


def test_the_cpu_images_table_says_it_has_no_sleep_mode(vllm_image):
    with open(DUMP, encoding="utf-8") as handle:
        source = handle.read()
    done = subprocess.run(["docker", "run", "--rm", "--entrypoint", "python", vllm_image, "-c", source],
                          capture_output=True, text=True, timeout=600)
    doc = json.loads(done.stdout.strip().splitlines()[-1])
    assert doc["platform"] == {"device_type": "cpu", "sleep_mode": False}


def test_validate_refuses_enable_sleep_mode_on_the_cpu_image(capsys, tmp_path, vllm_image):
    path = tmp_path / "fleet.toml"
    path.write_text(textwrap.dedent(f"""
        [docker]
        image = "{vllm_image}"
        [instance.control]
        gpu_ids = "none"
        [instance.coder.server]
        host = "0.0.0.0"
        model = "/llm-models/tiny-llama"
        enable_sleep_mode = true
        [instance.coder.docker]
        on_demand = true
        [gateway]
        port = 9000
        """))
    capsys.readouterr()
    code = main(["-c", str(path), "validate"])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    line = next(line for line in (out + err).splitlines() if "instance.coder.server.enable_sleep_mode" in line)
    assert "error:" in line and "cpu build" in line and "has no sleep mode" in line
    assert "stopped and started instead" in line
