"""The contract's pixi launch path, with the pixi project bind-mounted.

pixi itself cannot be installed here: the stand-in image carries a minimal stand-in `pixi`
that checks the manifest exists, logs how it was called and execs the command.
"""

from __future__ import annotations

from tests.integration.conftest import PIXI_PROJECT, free_port


def test_pixi_launch_with_mounted_project(fleet):
    port = free_port()
    fleet.write(f"""
        [instance.control]
        gpu_ids = "none"
        [instance.p.server]
        host = "0.0.0.0"
        port = {port}
        """,
        docker_extra=f'pixi_project_host_dir = "{PIXI_PROJECT}"\n',
    )
    text = fleet.path.read_text().replace(
        "[master]\n", '[master]\npixi_project_dir = "/hard/volume/workspace/vllm-pixi"\npixi_environment = "cpu"\n', 1)
    fleet.path.write_text(text)
    code, _, err = fleet.cli("up", "--wait", "--timeout", "120")
    assert code == 0, err
    cmd = fleet.container("p").attrs["Config"]["Cmd"]
    assert cmd[:8] == ["pixi", "run", "--manifest-path", "/hard/volume/workspace/vllm-pixi", "--environment", "cpu",
                       "--frozen", "python"]
    log = fleet.log_file("p").read_text()
    assert "PIXI-STANDIN manifest=/hard/volume/workspace/vllm-pixi environment=cpu frozen=1" in log
    assert "STANDIN-START" in log
