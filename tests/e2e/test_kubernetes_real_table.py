"""`vllm-orch k8s` with the option table of the real vLLM image (no --offline): the container's
argv is the one `plan` (and so `up`) renders through that table, where it differs from the
contract's literal rules, and an option that vLLM does not know stops the export (exit 2).
The image is asked once per session (a fresh option-table cache, ~20 s)."""

from __future__ import annotations

import json
import textwrap

import kubernetes_validate
import pytest
import yaml

from orchestrator.cli import main

pytestmark = pytest.mark.vllm


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fleet(tmp_path, vllm_image):
    path = tmp_path / "fleet.toml"
    path.write_text(textwrap.dedent(f"""
        [instance.control]
        gpu_ids = "none"
        [instance.a.server]
        host = "0.0.0.0"
        model = "/llm-models/tiny-llama"
        served_model_name = ["tiny", "tiny-alias"]
        enable_prefix_caching = false
        [docker]
        image = "{vllm_image}"
        """))
    return path


def test_k8s_renders_the_argv_through_the_images_option_table(capsys, fleet, vllm_image):
    code, out, err = run(capsys, "-c", str(fleet), "k8s")
    assert code == 0, err
    assert f"vLLM options: vLLM 0.32.0 in image {vllm_image}" in err
    code, plan_out, plan_err = run(capsys, "-c", str(fleet), "plan", "--json")
    assert code == 0, plan_err
    (planned,) = json.loads(plan_out)["instances"]

    docs = list(yaml.safe_load_all(out))
    (container,) = docs[0]["spec"]["template"]["spec"]["containers"]
    assert container["command"] + container["args"] == planned["command"]
    # Where vLLM's parser would read the literal rules differently, its table won:
    assert "--no-enable-prefix-caching" in container["args"]  # literal rule: omitted
    names = container["args"].index("--served-model-name")
    assert container["args"][names:names + 3] == ["--served-model-name", "tiny", "tiny-alias"]  # not repeated
    for version in ("1.30", "1.37"):
        for doc in docs:
            assert kubernetes_validate.validate(doc, version, strict=True) == version


def test_an_option_the_images_vllm_does_not_know_stops_the_export(capsys, fleet, tmp_path):
    target = tmp_path / "out.yaml"
    code, out, err = run(capsys, "-c", str(fleet), "--set", "instance.a.server.disable_log_requests=true",
                         "k8s", "-o", str(target))
    assert code == 2 and out == ""
    assert "instance.a.server.disable_log_requests: error: not an option of vLLM 0.32.0" in err
    assert not target.exists()
