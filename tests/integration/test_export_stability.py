"""An unchanged config exports the same bytes after an upgrade of vllm-orch: the Compose file,
the Kubernetes manifests (a changed pod template alone rolls every Deployment, and every model
reloads) and `plan --json` (what provisioning tools diff). The earlier release runs from this
repository's git history, as in test_upgrade_release.py. Releases before 4a4232d exported other
bytes on purpose (the caches, the Kubernetes export itself), so the list starts there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_upgrade_release import install_release

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "releases" / "upgrade.toml"
STABLE_SINCE = ["4a4232d"]
REPO_CODE = Path(__file__).resolve().parents[2]
EXPORTS = [("compose", "--offline"), ("k8s", "--offline"), ("plan", "--json", "--offline")]
# Where secrets became files (issue 20: Compose `secrets:`, the container's record), the bytes
# changed on purpose for configs with secrets: those exports are compared on the fixture without
# its secrets; the Kubernetes export (secretKeyRef as before) on the whole fixture.
SECRETS_CHANGED = {"compose", "plan"}
SECRET_LINES = ('api_key = "fixture-api-key"', 'secret_env = ["UPGRADE_FIXTURE_TOKEN"]')


def export(code: Path, config: Path, *command: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(code), "UPGRADE_FIXTURE_TOKEN": "fixture-token-value",
           "VLLM_ORCH_COMPOSE_TEMPLATES": str(code / "compose-templates")}  # each release its own
    done = subprocess.run([sys.executable, "-m", "orchestrator", "-c", str(config), *command], cwd=code, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{code.name} {' '.join(command)}: {done.stderr[-800:]}"
    return done.stdout


@pytest.mark.parametrize("commit", STABLE_SINCE)
def test_an_unchanged_config_exports_the_same_bytes_as_an_earlier_release(tmp_path, commit):
    old = install_release(commit, tmp_path / f"release-{commit}")
    templates = subprocess.run(["git", "-C", str(REPO_CODE), "archive", commit, "compose-templates"],
                               capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(old)], input=templates, check=True)
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    config = tmp_path / "fleet.toml"
    shutil.copy(FIXTURE, config)
    without_secrets = tmp_path / "no-secrets.toml"
    text = FIXTURE.read_text()
    for line in SECRET_LINES:
        assert line in text
        text = text.replace(line, "")
    without_secrets.write_text(text)
    for command in EXPORTS:
        for path in ([without_secrets] if command[0] in SECRETS_CHANGED else [config, without_secrets]):
            assert export(REPO_CODE, path, *command) == export(old, path, *command), f"{path.name}: {' '.join(command)}"
