"""The argv means to vLLM what the TOML says: render server tables with the option table of the
vLLM in the image, parse the argv with that same vLLM's parser (inside the image), and compare
the parsed values with the TOML's. Also every config under configs/, and the preflight's errors.
"""

from __future__ import annotations

import json
import textwrap

import docker
import pytest

from orchestrator.argv import render_server_args
from orchestrator.backends.docker import DockerBackend
from orchestrator.cli import main
from orchestrator.option_cache import dump_source, image_table
from orchestrator.resolve import apply_tables
from tests.builders import resolve_file
from tests.e2e.conftest import REPO

pytestmark = pytest.mark.vllm

# One process parses every argv (importing vLLM once costs ~15 s): the dump script's parse().
BATCH = textwrap.dedent("""
    import json, sys
    lib = {"__name__": "vllm_options_dump_lib"}
    exec(sys.argv[1], lib)
    for argv in json.loads(sys.argv[2]):
        print(json.dumps(lib["parse"](argv)))
""")

TRICKY: dict[str, dict] = {
    "bool on by default, turned off": {"enable_prefix_caching": False},
    "bool turned on": {"enable_prefix_caching": True, "trust_remote_code": True},
    "bool left at default": {"enforce_eager": False},
    "several values after one flag": {"served_model_name": ["a", "b"]},
    "one value for a several-values option": {"served_model_name": "solo"},
    "int list, several values": {"cudagraph_capture_sizes": [1, 2, 4]},
    "json table": {"limit_mm_per_prompt": {"image": 2, "video": 0}},
    "nested json table": {"hf_overrides": {"rope_scaling": {"factor": 2.0}}},
    "json list": {"allowed_origins": ["http://a.example", "http://b.example"]},
    "repeatable option": {"middleware": ["pkg.one", "pkg.two"]},
    "negative number": {"seed": -1},
    "scalars": {"max_model_len": 256, "gpu_memory_utilization": 0.5, "dtype": "float32"},
}


def expected_value(option, value):
    if option.takes_many and not isinstance(value, list):
        return [value]
    return value


@pytest.fixture(scope="module")
def table(vllm_image):
    backend = DockerBackend()
    image_id = backend.image_ids([vllm_image])[vllm_image]
    answer = image_table(backend, vllm_image, image_id, pixi_project_dir=None, pixi_environment="default")
    assert answer.table is not None, answer.note
    return answer.table


@pytest.fixture(scope="module")
def parse_in_image(vllm_image):
    def parse(argvs: list[list[str]]) -> list[dict]:
        client = docker.from_env(version="auto")
        out = client.containers.run(vllm_image, ["python", "-c", BATCH, dump_source(), json.dumps(argvs)],
                                    entrypoint=[], network_mode="none", remove=True, stderr=False)
        return [json.loads(line) for line in out.decode().splitlines() if line.startswith("{")]

    return parse


def test_tricky_server_tables_mean_what_the_toml_says(table, parse_in_image):
    cases = [(name, {"model": "/m", **server}) for name, server in TRICKY.items()]
    docs = parse_in_image([render_server_args(server, table=table) for _, server in cases])
    assert len(docs) == len(cases)
    for (name, server), doc in zip(cases, docs):
        assert "parse_error" not in doc, (name, doc["argv"], doc.get("parse_error"))
        parsed = doc["namespace"]
        for key, value in server.items():
            option = table.lookup(key)
            assert parsed[option.dest] == expected_value(option, value), (name, key, doc["argv"])


def test_every_bundled_config_renders_to_what_it_says(table, parse_in_image):
    configs = sorted((REPO / "configs").glob("*.toml"))
    assert configs, "configs/ has no example"
    argvs, expectations = [], []
    for path in configs:
        resolved = apply_tables(resolve_file(path),
                                {"vllm-orch/vllm-cpu:0.32.0": table})
        for spec in resolved.instances:
            argvs.append(list(spec.server_args))
            expectations.append((path.name, spec.name, spec.server))
    for (config, name, server), doc in zip(expectations, parse_in_image(argvs)):
        assert "parse_error" not in doc, (config, name, doc.get("parse_error"))
        for key, value in server.items():
            option = table.lookup(key)
            assert option is not None, (config, name, key)
            assert doc["namespace"][option.dest] == expected_value(option, value), (config, name, key)


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("disable_log_requests", True, "not an option of vLLM 0.32.0"),  # removed in 0.32
        ("max_model_length", 256, "did you mean max_model_len?"),
        ("dtype", "bf16", "is not one of vLLM 0.32.0's choices"),
        ("trust_remote_code", "yes", "is a plain flag"),
    ],
)
def test_preflight_refuses_what_this_vllm_would_reject(vllm_image, tmp_path, capsys, key, value, message):
    config = tmp_path / "bad.toml"
    config.write_text(textwrap.dedent(f"""
        [docker]
        image = "{vllm_image}"
        project = "preflight-{tmp_path.name[-8:].lower().replace('_', '-')}"
        [instance.control]
        gpu_ids = "none"
        [instance.x.server]
        model = "/m"
        {key} = {json.dumps(value)}
    """))
    code = main(["-c", str(config), "up"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"instance.x.server.{key}" in err and message in err
    assert "nothing was changed" in err
    code = main(["-c", str(config), "validate"])
    assert code == 2


def test_validate_offline_says_the_check_was_skipped(vllm_image, tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(f'[docker]\nimage = "{vllm_image}"\n[instance.x.server]\nmodel = "/m"\n')
    assert main(["-c", str(config), "validate", "--offline"]) == 0
    out = capsys.readouterr().out
    assert "image check skipped (--offline)" in out


def test_flags_lists_the_images_options(vllm_image, capsys):
    assert main(["flags", "--image", vllm_image, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    flags = {o["flag"]: o for o in doc["options"]}
    assert doc["vllm_version"].startswith("0.32")
    assert flags["--enable-prefix-caching"]["negative_flag"] == "--no-enable-prefix-caching"
    assert flags["--served-model-name"]["nargs"] == "+"
    assert "--disable-log-requests" not in flags
