"""Secrets out of `docker inspect`, on the real engine: `up` delivers the API key, the Hugging
Face token and a `secret_env` variable as root-only files bind-mounted read-only; the log wrapper
reads them into the environment of the server alone; the server (the stand-in, which like vLLM
wants VLLM_API_KEY on /v1/*) requires the key; `down` removes the files."""

from __future__ import annotations

import json
import os
import stat

from tests.integration.conftest import free_port, http_json

API_KEY = "sk-inspect-9c2e51"
HF_TOKEN = "hf_inspect_07aa3d"
EXTRA = "extra-inspect-5b7f"
VALUES = (API_KEY, HF_TOKEN, EXTRA)

CONFIG = """
[instance.control]
gpu_ids = "none"

[instance.server]
host = "0.0.0.0"
api_key = "{api_key}"

[instance.one.server]
port = {port}

[instance.one.docker]
user = "1000:1000"
secret_env = ["HF_TOKEN", "EXTRA_SECRET"]
env = {{ EXTRA_SECRET = "{extra}" }}
"""


def test_docker_inspect_shows_no_secret_and_the_server_reads_them_from_files(fleet, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    port = free_port()
    fleet.write(CONFIG.format(api_key=API_KEY, port=port, extra=EXTRA))
    code, out, err = fleet.cli("up", "--wait", "--timeout", "60")
    assert code == 0, err
    container = fleet.container("one")
    container.reload()
    inspect = json.dumps(container.attrs)
    for value in VALUES:  # Config.Env, Cmd, Entrypoint, labels, mounts: nowhere
        assert value not in inspect and value not in out + err
    env = dict(item.split("=", 1) for item in container.attrs["Config"]["Env"])
    assert "VLLM_API_KEY" not in env and "HF_TOKEN" not in env and "EXTRA_SECRET" not in env
    assert env["VLLM_ORCH_SECRET_ENV"] == "VLLM_API_KEY EXTRA_SECRET" and env["HF_TOKEN_PATH"] == "/run/secrets/HF_TOKEN"

    # The server requires the key, which only its own environment holds.
    assert http_json(f"http://127.0.0.1:{port}/v1/models")[0] == 401
    assert http_json(f"http://127.0.0.1:{port}/v1/models", {"Authorization": f"Bearer {API_KEY}"})[0] == 200
    status, info = http_json(f"http://127.0.0.1:{port}/standin/info")
    assert status == 200 and info["uid"] == 1000
    assert info["env"]["VLLM_API_KEY"] == API_KEY and info["env"]["EXTRA_SECRET"] == EXTRA
    assert "HF_TOKEN" not in info["env"] and "VLLM_ORCH_SECRET_ENV" not in info["env"]
    # The container's first process (its init) never had them; the token is a file its user reads.
    code, init_env = container.exec_run(["cat", "/proc/1/environ"])
    assert code == 0 and not any(value.encode() in init_env for value in VALUES)
    code, token = container.exec_run(["cat", "/run/secrets/HF_TOKEN"])
    assert code == 0 and token.decode() == HF_TOKEN
    code, _ = container.exec_run(["sh", "-c", "echo x > /run/secrets/HF_TOKEN"])
    assert code != 0  # read-only

    # On the host: a root-only directory of 0400 files owned by the server's user.
    mounts = {m["Destination"]: m["Source"] for m in container.attrs["Mounts"]}
    path = mounts["/run/secrets/VLLM_API_KEY"]
    info = os.stat(path)
    assert stat.S_IMODE(info.st_mode) == 0o400 and info.st_uid == 1000
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert open(path).read() == API_KEY

    # ps and plan --json show none of them either. (Not the log: the stand-in prints its whole
    # environment there at start, which vLLM does not.)
    for args in (("ps", "--json"), ("plan", "--json")):
        code, out, err = fleet.cli(*args)
        assert code == 0 and not any(value in out + err for value in VALUES), args

    # A second `up` changes nothing; a rotated key recreates, and the new key is the one required.
    code, out, err = fleet.cli("up", "--dry-run")
    assert code == 0 and "noop one" in out + err, out + err
    fleet.write(CONFIG.format(api_key="sk-rotated-3e", port=port, extra=EXTRA))
    code, out, err = fleet.cli("up", "--wait", "--timeout", "60")
    assert code == 0 and "sk-rotated-3e" not in out + err, err
    assert http_json(f"http://127.0.0.1:{port}/v1/models", {"Authorization": f"Bearer {API_KEY}"})[0] == 401
    assert http_json(f"http://127.0.0.1:{port}/v1/models", {"Authorization": "Bearer sk-rotated-3e"})[0] == 200

    code, _, err = fleet.cli("down")
    assert code == 0, err
    assert not os.path.exists(os.path.dirname(path))



def test_a_secret_file_the_server_cannot_read_stops_the_start_with_a_named_cause(fleet, monkeypatch):
    """The wrapper's failure path, through the real engine: the file is taken from the server's
    user behind vllm-orch's back, then the container is started by the engine alone."""
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    port = free_port()
    fleet.write(CONFIG.format(api_key=API_KEY, port=port, extra=EXTRA))
    code, _, err = fleet.cli("up", "--wait", "--timeout", "60")
    assert code == 0, err
    container = fleet.container("one")
    container.stop(timeout=5)
    source = {m["Destination"]: m["Source"] for m in container.attrs["Mounts"]}["/run/secrets/VLLM_API_KEY"]
    os.chown(source, 0, 0)
    container.start()
    assert container.wait(timeout=30)["StatusCode"] == 78
    log = fleet.log_file("one").read_text()
    assert "vllm-orch: cannot read the secret file /run/secrets/VLLM_API_KEY as uid 1000" in log
    assert API_KEY not in log.split("vllm-orch: starting instance one")[-1]
    code, out, err = fleet.cli("ps")
    assert "the server (uid 1000) cannot read its secret file /run/secrets/VLLM_API_KEY" in out + err, out + err
    # `up` gives the file back to the server's user and starts it again.
    code, _, err = fleet.cli("up", "--wait", "--timeout", "60")
    assert code == 0, err
