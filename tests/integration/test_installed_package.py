"""The exporters from an installed package (`pip install .`): the repository built as a wheel,
installed into a new virtual environment, run from outside the repository. It catches what an editable install
hides: a module or package left out of the wheel.

The wheel's dependencies (PyYAML, deepmerge, ...) are not downloaded again: a .pth file lends the
new venv this interpreter's site-packages, after its own, so the vllm-orch it runs is the wheel's
(checked below). No Docker needed (--offline), but building the wheel (pip fetches setuptools for an isolated
build) takes 10-45 s here, hence this tier rather than the unit tier.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def run(argv: list, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{argv}: {result.stderr[-2000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """(the venv's bin directory, an environment without this checkout on the path)."""
    tmp_path = tmp_path_factory.mktemp("installed")
    # Built from a copy: setuptools writes build/ and *.egg-info into the tree it builds.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "orchestrator", source / "orchestrator", ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, source], cwd=tmp_path)
    (wheel,) = wheels.glob("vllm_orch-*.whl")

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel])
    own_site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (own_site / "lent-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AUTO_INFER_VLLM_CONFIG")}
    where = run([python, "-c", "import orchestrator.exporters.kubernetes as m; print(m.__file__)"],
                env=env, cwd=tmp_path).stdout.strip()
    assert Path(where).is_relative_to(own_site), f"not the installed package: {where}"
    return venv / "bin", env


def test_k8s_works_from_a_wheel_installed_into_a_new_venv(installed, tmp_path):
    bin_dir, env = installed
    out = tmp_path / "demo.yaml"
    result = run([bin_dir / "vllm-orch", "-c", REPO / "configs" / "demo.toml", "k8s", "--offline",
                  "--namespace", "demo", "-o", out], env=env, cwd=tmp_path)
    assert f"wrote {out}" in result.stderr
    docs = list(yaml.safe_load_all(out.read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service"] * 2
    for version in ("1.30", "1.37"):
        for doc in docs:
            assert kubernetes_validate.validate(doc, version, strict=True) == version
    assert {d["metadata"]["namespace"] for d in docs} == {"demo"}


def test_compose_works_from_a_wheel_installed_into_a_new_venv(installed, tmp_path):
    """The Compose templates travel inside the package (they were found only in a checkout)."""
    bin_dir, env = installed
    config = tmp_path / "fleet.toml"
    config.write_text('[docker]\nimage = "vllm-orch/vllm-cpu:0.32.0"\n[instance.control]\ngpu_ids = "none"\n'
                      '[instance.chat.server]\nmodel = "/m"\nport = 8001\n[instance.embed.server]\nmodel = "/m"\nport = 8002\n')
    result = run([bin_dir / "vllm-orch", "-c", config, "compose", "--offline"], env=env, cwd=tmp_path)
    assert list(yaml.safe_load(result.stdout)["services"]) == ["chat", "embed"]
