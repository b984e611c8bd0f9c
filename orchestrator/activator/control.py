"""What the activator does to an instance: the engine (start, stop), vLLM's sleep routes,
/health and /metrics. Only containers of this project that `up` made and the state file names
on demand are touched: each call checks the container's labels first.
"""

from __future__ import annotations

import contextlib
import http.client
from typing import Iterator

from orchestrator import sleep_api
from orchestrator.activator.state import OnDemand, State
from orchestrator.backends.engine import Engine, EngineError
from orchestrator.labels import LABEL_INSTANCE, LABEL_OWNER, LABEL_PROJECT, LABEL_ROLE, OWNER_UP


def get(address: str, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    host, _, port = address.rpartition(":")
    connection = http.client.HTTPConnection(host.strip("[]"), int(port), timeout=timeout)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        return answer.status, answer.read(1 << 20)
    finally:
        connection.close()


class DockerControl:
    def __init__(self, engine: Engine, state: State):
        self.engine = engine
        self.state = state

    def _rows(self) -> dict[str, dict]:
        """The project's instance containers `up` made, by instance name (one list call)."""
        rows = self.engine.containers(labels=[f"{LABEL_PROJECT}={self.state.project}", f"{LABEL_OWNER}={OWNER_UP}"])
        wanted = {i.name for i in self.state.instances}
        out = {}
        for row in rows:
            labels = row.get("Labels") or {}
            if not labels.get(LABEL_ROLE) and labels.get(LABEL_INSTANCE) in wanted:
                out[labels[LABEL_INSTANCE]] = row
        return out

    def _id(self, inst: OnDemand) -> str:
        row = self._rows().get(inst.name)
        if row is None:
            raise RuntimeError(f"no container for instance {inst.name!r} (run `vllm-orch up`)")
        return row["Id"]

    def observe(self) -> dict[str, str]:
        found: dict[str, str] = {}
        by_name = {i.name: i for i in self.state.instances}
        for name, row in self._rows().items():
            if row.get("State") not in ("running", "restarting"):
                found[name] = "stopped"
                continue
            found[name] = "running"
            if by_name[name].sleep:
                try:
                    if sleep_api.is_sleeping(by_name[name].address, timeout=2.0):
                        found[name] = "sleeping"
                except sleep_api.SleepApiError:
                    pass  # loading, or no sleep routes: running as far as we know
        return found

    def start(self, inst: OnDemand) -> None:
        self.engine.start(self._id(inst))

    def stop(self, inst: OnDemand) -> None:
        try:
            self.engine.stop(self._id(inst), grace_s=inst.stop_timeout_s)
        except EngineError as exc:
            if not exc.not_found:
                raise

    def sleep(self, inst: OnDemand) -> None:
        sleep_api.sleep(inst.address, 1)

    def wake(self, inst: OnDemand) -> None:
        if not sleep_api.wake_up(inst.address):
            raise RuntimeError(f"{inst.address}: /wake_up left it partly asleep")

    def healthy(self, inst: OnDemand) -> bool:
        try:
            return get(inst.address, "/health", timeout=1.0)[0] == 200
        except (OSError, http.client.HTTPException, ValueError):
            return False

    def exited(self, inst: OnDemand) -> str | None:
        row = self._rows().get(inst.name)
        if row is None:
            return "its container is gone"
        if row.get("State") in ("running", "restarting", "created"):
            return None
        return f"{row.get('Status', 'exited')}; last log line: {last_line(inst.log_file) or '(none)'}"

    def _metrics(self, inst: OnDemand) -> str | None:
        try:
            status, body = get(inst.address, "/metrics", timeout=1.0)
        except (OSError, http.client.HTTPException, ValueError):
            return None
        return body.decode(errors="replace") if status == 200 else None

    def busy(self, inst: OnDemand) -> float | None:
        from orchestrator.vllm_metrics import parse

        text = self._metrics(inst)
        if text is None:
            return None
        try:
            sample = parse(text)
        except ValueError:
            return None
        return sample.gauges.get("requests_running", 0.0) + sample.gauges.get("requests_waiting", 0.0)

    def finished(self, inst: OnDemand) -> float | None:
        """vLLM's `vllm:request_success_total` (all its finished_reason series summed): a request
        that came and went between two looks at the gauges still moves it. None without it."""
        text = self._metrics(inst)
        return None if text is None else success_total(text)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The project's run lock (a concurrent `up`/`down` waits for a start, and the other way round)."""
        from orchestrator.run_lock import run_lock

        with run_lock(self.state.project, self.state.engine_address, waiting=lambda _: None):
            yield


def success_total(text: str) -> float | None:
    """The sum of the `vllm:request_success_total` samples in a /metrics text; None when absent
    (a server without the counter: the gauges alone tell its load)."""
    total, seen = 0.0, False
    for line in text.splitlines():
        if line.startswith(SUCCESS) and line[len(SUCCESS):len(SUCCESS) + 1] in ("{", " "):
            try:
                total += float(line.rsplit(None, 1)[-1])
                seen = True
            except ValueError:
                continue
    return total if seen else None


SUCCESS = "vllm:request_success_total"


def last_line(path: str) -> str:
    """The log file's last non-empty line (the reason a start failed, usually)."""
    from orchestrator.logs import tail_lines

    try:
        lines = [line for line in tail_lines(path, 20) if line.strip()] if path else []
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""
