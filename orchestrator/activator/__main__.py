"""`python -m orchestrator.activator --state FILE --port P --agent-port A`: the activator's
process (its container's command). Runs until SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from orchestrator.activator import state as state_file
from orchestrator.activator.control import DockerControl
from orchestrator.activator.core import Activator
from orchestrator.activator.server import serve, state_mtime

TICK_S = 1.0
RESYNC_EVERY = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vllm-orch-activator")
    parser.add_argument("--state", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--agent-port", type=int, required=True)
    args = parser.parse_args(argv)
    from orchestrator.backends.engine import engine_for_environment

    current = state_file.read(args.state)
    control = DockerControl(engine_for_environment(), current)
    activator = Activator(current, control, say=lambda line: print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}",
                                                                   flush=True))
    try:
        http_server, agent_server = serve(activator, args.host, args.port, args.agent_port)
    except OSError as exc:  # the next `up` makes it again on free ports (workflow._wanted)
        print(f"activator: cannot listen on {args.host}:{args.port}/{args.agent_port}: {exc.strerror}; "
              "run `vllm-orch up` again", file=sys.stderr, flush=True)
        return 75

    for server in (http_server, agent_server):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    print(f"activator of project {current.project}: http://{args.host}:{args.port}, agent port {args.agent_port}, "
          f"{len(current.instances)} on-demand instance(s)", flush=True)
    seen, count = state_mtime(args.state), 0
    while not stopping.wait(TICK_S):
        count += 1
        try:
            if state_mtime(args.state) != seen:
                seen = state_mtime(args.state)
                current = state_file.read(args.state)
                control.state = current
                activator.reload(current)
                print(f"state reloaded: {len(current.instances)} on-demand instance(s)", flush=True)
            if count % RESYNC_EVERY == 0:
                activator.resync()
            activator.tick()
        except Exception as exc:  # one bad tick (the engine restarting) must not end the activator
            print(f"tick failed: {exc}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
