"""One changing run (`up`, `down`) per project and engine at a time, on this machine.

Two `up`s of one project at once (a provisioning loop that retries, a second terminal) would both
see a container missing and both create it, and the second would fail on the engine's name
conflict; a `down` racing an `up` would remove what the `up` is starting. An flock on a file in the
state directory serializes them: the second run says that it waits, then plans against what the
first one left. `up --wait` lets go before it waits, so a `down` never waits on a model loading.
"""

from __future__ import annotations

import contextlib
import os
import re
import zlib
from pathlib import Path
from typing import Callable, Iterator, Mapping

from orchestrator.errors import OrchestratorError

try:
    import fcntl
except ImportError:  # pragma: no cover - not Linux
    fcntl = None  # type: ignore[assignment]

STATE_DIR_ENV = "VLLM_ORCH_STATE_DIR"


def default_state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """$VLLM_ORCH_STATE_DIR; else /run/vllm-orch as root (tmpfs: it goes with the container or
    the boot, as the pids do); else $XDG_RUNTIME_DIR/vllm-orch; else ~/.local/state/vllm-orch."""
    if env.get(STATE_DIR_ENV):
        return Path(env[STATE_DIR_ENV])
    if os.geteuid() == 0 and os.path.isdir("/run") and os.access("/run", os.W_OK):
        return Path("/run/vllm-orch")
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "vllm-orch"
    return Path(env.get("HOME") or os.path.expanduser("~")) / ".local" / "state" / "vllm-orch"


def lock_state_dir(env: Mapping[str, str] = os.environ) -> Path:
    """Where the locks live: as `default_state_dir`, but never $XDG_RUNTIME_DIR, which a login
    shell sets and cron or a provisioning tool's session does not; two runs of one user must
    find the same lock whichever way they were started (and the on-demand activator, which
    shares it, must not be recreated because the caller's session changed)."""
    if env.get(STATE_DIR_ENV) or os.geteuid() == 0:
        return default_state_dir(env)
    return Path(env.get("HOME") or os.path.expanduser("~")) / ".local" / "state" / "vllm-orch"


@contextlib.contextmanager
def run_lock(project: str, engine_address: str, *, waiting: Callable[[str], None],
             env: Mapping[str, str] = os.environ) -> Iterator[None]:
    """Hold the project's lock for the block; `waiting` hears once that another run holds it."""
    directory = ensure_dir(lock_state_dir(env) / "docker-runs")
    # The readable part may lose characters (a -p name is not checked); the CRC keeps names apart.
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", project)[:64]
    key = zlib.crc32(f"{engine_address}\0{project}".encode())
    with exclusive(directory / f"{readable}-{key:08x}.lock",
                   lambda: waiting(f"waiting for another vllm-orch run on project {project!r} to finish")):
        yield


def ensure_dir(directory: Path) -> Path:
    """The directory, made if missing; one clear error if it cannot be."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OrchestratorError(f"cannot create the state directory {directory}: {exc.strerror} "
                                f"(set {STATE_DIR_ENV} to a writable directory)") from None
    return directory


@contextlib.contextmanager
def sole_watcher(project: str, engine_address: str, env: Mapping[str, str] = os.environ) -> Iterator[Path]:
    """`vllm-orch watch`'s lock: one supervisor per project and engine on this machine. A second
    one does not wait (two would restart the same container twice): it fails with one line."""
    directory = ensure_dir(lock_state_dir(env) / "watch")
    readable = re.sub(r"[^A-Za-z0-9_.-]", "_", project)[:64]
    key = zlib.crc32(f"{engine_address}\0{project}".encode())
    path = directory / f"{readable}-{key:08x}.lock"
    with open(path, "a+") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "?"
                raise OrchestratorError(f"another vllm-orch watch (pid {holder}) already supervises project "
                                        f"{project!r} on this engine (lock {path}); this one exits") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield path
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def exclusive(path: Path, on_wait: Callable[[], None] = lambda: None) -> Iterator[None]:
    """An flock on `path` (made if missing) for the block; `on_wait` runs once if it is taken."""
    with open(path, "a") as handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                on_wait()
                fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)
