"""The unit tier's FakeEngine (tests/unit/fake_engine.py) answers as the real engine does: one
script of Engine calls runs against both, and what the Docker backend reads of the answers (list
rows, states, status words, published ports, exit codes, log streams, error statuses) must be
the same. Keeps the stand-in honest as the engine or the backend's use of it changes."""

from __future__ import annotations

import uuid
from typing import Any, Callable

from orchestrator.backends.engine import Engine, EngineError, engine_for_environment
from orchestrator.backends.engine_body import PROBE_OWNER, probe_body
from orchestrator.labels import LABEL_OWNER
from tests.integration.conftest import STANDIN_IMAGE, free_port
from tests.unit.fake_engine import FakeEngine

# A server that ends cleanly on SIGTERM, as vLLM does (sh as the init's child traps it).
SERVER = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"]


def error_status(call: Callable[[], Any]) -> int | None:
    try:
        call()
    except EngineError as exc:
        return exc.status
    return None


def script(engine: Engine, run_label: str, port: int) -> list[Any]:
    """The calls, and what of each answer the backend reads."""
    seen: list[Any] = []
    labels = {run_label: "1", "io.example.role": "server"}
    name = f"parity-{run_label.rsplit('.', 1)[-1]}"
    body = {
        "Image": STANDIN_IMAGE, "Entrypoint": SERVER[:1], "Cmd": SERVER[1:], "Labels": labels, "StopTimeout": 5,
        "ExposedPorts": {"8000/tcp": {}},
        "HostConfig": {"Init": True, "PortBindings": {"8000/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(port)}]}},
    }

    def rows(*filters: str) -> list[tuple]:
        return [(r["Names"], r["State"], r["Status"].split(" ")[0], r["Ports"], r["Labels"].get("io.example.role"))
                for r in engine.containers(labels=[run_label, *filters])]

    image_id = engine.inspect_image(STANDIN_IMAGE)["Id"]
    seen.append(("inspect missing image", error_status(lambda: engine.inspect_image("vllm-orch/no-such:image"))))
    created = engine.create(name, body)
    seen.append(("created", rows()))
    seen.append(("image id in the row", [r["ImageID"] == image_id for r in engine.containers(labels=[run_label])]))
    seen.append(("same name again", error_status(lambda: engine.create(name, body))))
    seen.append(("missing image", error_status(lambda: engine.create(None, {**body, "Image": "vllm-orch/no-such:image"}))))
    engine.start(created)
    engine.start(name)  # already running: no error
    seen.append(("running", rows()))
    seen.append(("label filters", rows("io.example.role=server"), rows("io.example.role=other"), rows("io.example.role")))
    seen.append(("remove while running", error_status(lambda: engine.remove(created))))
    engine.stop(created, grace_s=5)
    seen.append(("exit code", engine.wait(created, 30)))
    seen.append(("stopped", rows()))
    engine.stop(created)  # not running: no error
    engine.remove(created)
    seen.append(("removed", rows()))
    for call in ("start", "stop", "remove"):
        seen.append((f"{call} of a removed container", error_status(lambda: getattr(engine, call)(created))))
    seen.append(("wait of a removed container", error_status(lambda: engine.wait(created, 5))))

    probe = probe_body(STANDIN_IMAGE, ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
    probe["Labels"][run_label] = "1"
    made = engine.create(None, probe)
    engine.start(made)
    seen.append(("probe exit code", engine.wait(made, 30)))
    seen.append(("probe streams", engine.logs(made, stdout=True, stderr=False), engine.logs(made, stdout=False, stderr=True)))
    seen.append(("probe row", [(r["State"], r["Status"].split(" ")[:2], r["Labels"][LABEL_OWNER])
                               for r in engine.containers(labels=[run_label, f"{LABEL_OWNER}={PROBE_OWNER}"])]))
    engine.remove(made, force=True)
    seen.append(("nothing left", rows()))
    return seen


def test_the_fake_engine_answers_the_backends_calls_as_the_real_engine_does(engine):
    real = engine_for_environment()
    run = uuid.uuid4().hex[:10]
    port = free_port()
    try:
        on_real = script(real, f"io.vllm-orch-test.parity.{run}", port)
    finally:
        for row in real.containers(labels=[f"io.vllm-orch-test.parity.{run}"]):
            real.remove(row["Id"], force=True)
    fake = FakeEngine({STANDIN_IMAGE: real.inspect_image(STANDIN_IMAGE)["Id"]},
                      probe=lambda body: (3, b"out\n", b"err\n"))
    on_fake = script(fake, f"io.vllm-orch-test.parity.{run}", port)
    assert on_fake == on_real
    assert on_real[1] == ("created", [([f"/parity-{run}"], "created", "Created", [], "server")])
    assert ("exit code", 0) in on_real and ("probe exit code", 3) in on_real
