"""`up --wait`: which signal counts as ready, against a real HTTP server on this machine."""

from __future__ import annotations

import http.server
import threading

import pytest

from orchestrator.errors import InstanceFailed
from orchestrator.plan import Observed
from orchestrator.waiter import probe_health, probe_many, wait_healthy
from tests.builders import instance


def serve(status: int):
    """Something on this machine's 127.0.0.1 that answers /health with `status`."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def answering_port():
    server = serve(200)
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_only_a_200_from_health_counts():
    ok, loading = serve(200), serve(503)  # vLLM answers 503 while its engine is not ready
    try:
        urls = [f"http://127.0.0.1:{s.server_address[1]}" for s in (ok, loading)]
        assert probe_many(urls + ["http://127.0.0.1:1", "not a url"]) == [True, False, False, False]
        assert probe_health(urls[0]) and not probe_health(urls[1])
    finally:
        for server in (ok, loading):
            server.shutdown()
            server.server_close()


def spec_on(tmp_path, port: int):
    return instance(f'[docker]\nimage = "img"\n[instance.a.server]\nmodel = "/m"\nport = {port}\n', tmp_path)


def observed(health: str) -> dict[str, Observed]:
    status = f"Up 2 seconds ({health})" if health else "Up 2 seconds"
    return {"a": Observed("id", "p-a", "a", "vllm-orch", "running", status, "img-id", "hash")}


def test_a_local_engine_counts_the_first_200_from_the_published_port(tmp_path, answering_port):
    messages: list[str] = []
    ready = wait_healthy([spec_on(tmp_path, answering_port)], lambda: observed("health: starting"),
                         timeout=5, progress=messages.append, log_tail=lambda spec: "")
    assert list(ready) == ["a"] and "answers /health" in messages[-1]


def test_a_remote_engine_waits_for_its_own_health_check(tmp_path, answering_port):
    """The port answering here is not the instance (its engine is elsewhere): only the engine's
    health check may end the wait, and while it says `starting` the wait goes on."""
    rounds = iter(["health: starting", "health: starting", "healthy"])
    messages: list[str] = []
    ready = wait_healthy([spec_on(tmp_path, answering_port)], lambda: observed(next(rounds)),
                         timeout=5, progress=messages.append, log_tail=lambda spec: "", probe_http=False)
    assert list(ready) == ["a"] and "the engine's health check" in messages[-1]
    assert next(rounds, None) is None  # it took the third round

    with pytest.raises(InstanceFailed, match="not healthy after 0.3s"):
        wait_healthy([spec_on(tmp_path, answering_port)], lambda: observed("health: starting"),
                     timeout=0.3, progress=lambda m: None, log_tail=lambda spec: "", probe_http=False)


def test_an_exited_server_fails_with_the_cause_and_fix_from_its_log(tmp_path):
    spec = spec_on(tmp_path, 1)
    gone = {"a": Observed("id", "p-a", "a", "vllm-orch", "exited", "Exited (1) 2 seconds ago", "img-id", "hash")}
    log = "INFO loading\n" * 30 + ("RuntimeError: Insufficient space in /dev/shm for shared-memory allocation: "
                                   "160 MiB required, 64 MiB free. Increase /dev/shm (e.g. --shm-size or --ipc=host)\n")
    with pytest.raises(InstanceFailed) as raised:
        wait_healthy([spec], lambda: gone, timeout=5, progress=lambda m: None, log_tail=lambda s: log, probe_http=False)
    assert str(raised.value) == ("instance 'a' exited while waiting for it to become healthy (Exited (1) 2 seconds ago): cause: /dev/shm is too small "
                                 "(160 MiB required, 64 MiB free); fix: raise [docker] shm_size (e.g. \"8g\") or set "
                                 "ipc = \"host\"")
    shown = raised.value.details.splitlines()
    assert len(shown) == 20 and shown[-1].startswith("  | RuntimeError: Insufficient space in /dev/shm")


def test_ps_names_the_cause_of_a_failed_container_only(tmp_path):
    from orchestrator.status import ps_rows

    log = tmp_path / "a.log"
    log.write_text("2026-01-01T00:00:00Z vllm-orch: starting instance a\nOSError: [Errno 98] Address already in use\n")

    def container(instance: str, state: str, status: str) -> Observed:
        return Observed("id-" + instance, "p-" + instance, instance, "vllm-orch", state, status, "img", "hash",
                        labels={"io.vllm-orch.log-file": str(log)})

    rows = {r["name"]: r["cause"] for r in ps_rows([
        container("a", "exited", "Exited (1) 3 minutes ago"),
        container("clean", "exited", "Exited (0) 3 minutes ago"),
        container("up", "running", "Up 3 minutes (healthy)"),
    ], [], {})}
    assert rows["a"].startswith("cause: the server's port is already in use; fix: ")
    assert rows["clean"] is None and rows["up"] is None
