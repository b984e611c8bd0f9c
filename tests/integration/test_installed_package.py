"""What `pip install .` gives a user works without the checkout: the package is built as a
wheel, installed into a directory of its own, and run from elsewhere (not the repository)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    wheels = tmp_path_factory.mktemp("wheel")
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels),
                    str(REPO)], check=True, capture_output=True, timeout=300)
    [wheel] = wheels.glob("vllm_orch-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return target


def run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("VLLM_ORCH_COMPOSE_TEMPLATES", None)
    return subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_installed_package_is_the_one_that_runs(installed, tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import orchestrator; print(orchestrator.__file__)"], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(installed)}, capture_output=True, text=True, check=True)
    assert probe.stdout.startswith(str(installed))


def test_compose_works_from_an_installed_package(installed, tmp_path):
    config = tmp_path / "fleet.toml"
    config.write_text(
        '[docker]\nimage = "vllm-orch/vllm-cpu:0.32.0"\n[instance.control]\ngpu_ids = "none"\n'
        '[instance.chat.server]\nmodel = "/m"\nport = 8001\n[instance.embed.server]\nmodel = "/m"\nport = 8002\n')
    result = run_installed(installed, tmp_path, "-c", str(config), "compose", "--offline")
    assert result.returncode == 0, result.stderr
    assert list(yaml.safe_load(result.stdout)["services"]) == ["chat", "embed"]
