"""What a launched process gets and how it is shown: its user, its environment (secrets
revealed, never printed), its URL, its exit status and uptime as a shell and `ps` word them."""

from __future__ import annotations

import os
import pwd
import socket
from typing import Callable, Mapping

from orchestrator.spec import InstanceSpec
from orchestrator.value import Value

USER_ENV = "AUTO_INFER_VLLM_USER"
_WILDCARD_HOSTS = {"", "0.0.0.0", "::"}

Out = Callable[[str], None]

# ----------------------------------------------------------------------------- environment and user
class RunAs(Value):
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def resolve_user(env: Mapping[str, str], out: Out) -> RunAs | None:
    """AUTO_INFER_VLLM_USER, as the old runner had it: when root and the user exists, instances
    run as that user; otherwise one notice and they run as the current user."""
    wanted = env.get(USER_ENV, "").strip()
    if not wanted:
        return None
    current = _current_user()
    try:
        entry = pwd.getpwuid(int(wanted)) if wanted.isdigit() else pwd.getpwnam(wanted)
    except (KeyError, ValueError):
        out(f"vllm-orch launch: {USER_ENV}={wanted}: no such user; instances run as {current}")
        return None
    if entry.pw_uid == os.geteuid():
        return None  # already that user
    if os.geteuid() != 0:
        out(f"vllm-orch launch: {USER_ENV}={wanted}: switching users needs root; instances run as {current}")
        return None
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return RunAs(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"


def process_environment(spec: InstanceSpec, project: str, base: Mapping[str, str] = os.environ,
                        run_as: RunAs | None = None) -> dict[str, str]:
    """The launcher's environment + the instance's env (PYTHONUNBUFFERED=1) + CUDA_VISIBLE_DEVICES
    from gpu_ids ("all" leaves whatever is set alone) + the secrets, revealed. Never print it."""
    env = dict(base)
    env.update(dict(spec.env))
    env.update(spec.gpu.process_env())
    env.update(dict(spec.secrets))
    env["VLLM_ORCH_PROJECT"] = project
    env["VLLM_ORCH_INSTANCE"] = spec.name
    if run_as is not None:
        env.update(HOME=run_as.home, USER=run_as.name, LOGNAME=run_as.name)
    return env


def connect_url(spec: InstanceSpec) -> str:
    host = spec.host if spec.host and spec.host not in _WILDCARD_HOSTS else "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{spec.port}"


def _port_in_use(spec: InstanceSpec) -> bool:
    host = spec.host if spec.host and spec.host not in _WILDCARD_HOSTS else "127.0.0.1"
    try:
        with socket.create_connection((host, spec.port), timeout=0.2):
            return True
    except OSError:
        return False


def _exit_cause(log_file: str) -> str | None:
    from orchestrator.status import failure_cause

    return failure_cause(log_file)


def exit_status(returncode: int) -> int:
    """Popen's returncode -> a shell's: killed by signal N -> 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def format_uptime(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"
