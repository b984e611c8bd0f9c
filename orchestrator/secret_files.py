"""Secrets as files: where `up` keeps them on the host, and how they are written and removed.

A container's secret values never go into its configuration (Config.Env, labels, Cmd are what
`docker inspect` shows to anyone who may talk to the engine). Each value is a file instead, in
a root-only directory per instance (0700), written 0400 and handed to the server's user, and
bind-mounted read-only at /run/secrets/<NAME> (where Compose puts its `secrets:` too). Inside
the container the log wrapper reads them into the environment of vLLM alone
(container.SECRET_LOADER); the Hugging Face token stays a file, named by HF_TOKEN_PATH.

The files are written at `up` for the containers it creates, recreates or starts (atomically:
a temporary file renamed over the old one), and removed with the container by `down` (and by
`up` when it removes a disabled or orphaned instance).
"""

from __future__ import annotations

import os
import re
import urllib.parse
from typing import Any, Iterable, Mapping

from orchestrator.errors import OrchestratorError, Problem

SECRETS_DIR_ENV = "VLLM_ORCH_SECRETS_DIR"
TARGET_DIR = "/run/secrets"  # inside the container: Compose's place for `secrets:`
HF_TOKEN = "HF_TOKEN"
# vLLM's Hugging Face client reads the token from this file (huggingface_hub's HF_TOKEN_PATH).
HF_TOKEN_PATH = "HF_TOKEN_PATH"
_SHELL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def root(env: Mapping[str, str] | None = None) -> str:
    """Where the per-instance directories live: $VLLM_ORCH_SECRETS_DIR; else, as root,
    /var/lib/vllm-orch/secrets (persistent: a container restarted by its restart policy after
    a reboot needs its files); else ~/.local/state/vllm-orch/secrets. `up` and `down` read the
    same process environment, so the files `up` wrote are the ones `down` removes."""
    env = os.environ if env is None else env
    if env.get(SECRETS_DIR_ENV):
        return os.path.abspath(env[SECRETS_DIR_ENV])
    if os.geteuid() == 0:
        return "/var/lib/vllm-orch/secrets"
    state = env.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "vllm-orch", "secrets")


def instance_dir(project: str, instance: str) -> str:
    """The host directory of one instance's secret files."""
    return os.path.join(root(), project, urllib.parse.quote(instance, safe="") or "%00")


def file_name(name: str) -> str:
    """The secret's file name, on the host and in the container: the name itself where it is a
    shell name (the log wrapper reads /run/secrets/$name), else one path component that cannot
    leave the directory (`/`, `..` and the like %-quoted)."""
    if _SHELL_NAME.match(name):
        return name
    quoted = urllib.parse.quote(name, safe="")
    return "%2E" + quoted[1:] if quoted.startswith(".") else quoted


def target(name: str) -> str:
    """Where the secret `name` is mounted inside the container."""
    return f"{TARGET_DIR}/{file_name(name)}"


def exported_names(names: Iterable[str]) -> list[str]:
    """The secrets the log wrapper exports into vLLM's environment: all but the Hugging Face
    token, which huggingface_hub reads from its file (HF_TOKEN_PATH) instead, and names no
    shell can export (they stay files only; `problems` says so)."""
    return [name for name in names if name != HF_TOKEN and _SHELL_NAME.match(name)]


def _owner(user: str | None) -> tuple[int, int] | None:
    uid, _, gid = (user or "").partition(":")
    return (int(uid), int(gid) if gid.isdigit() else -1) if uid.isdigit() else None


def write(directory: str, secrets: Iterable[tuple[str, str | None]], *, user: str | None) -> None:
    """Write each secret to `directory`/NAME: the directory 0700 (made with its parents, root's),
    each file 0400 and owned by the server's uid where `user` names one. A named user's uid is
    known only inside the image: then the file is 0444 (readable in the container; the host
    directory stays closed). Each file is renamed into place, so a reader never sees half a
    value; files of secrets no longer configured are removed."""
    owner = _owner(user)
    mode = 0o444 if user and owner is None else 0o400
    wanted = {file_name(name): value for name, value in secrets}
    try:
        top = os.path.dirname(os.path.dirname(directory))
        if not os.path.isdir(top):  # the root, made here: root-only too (one we did not make is left as it is)
            _private_dir(top)
        _private_dir(os.path.dirname(directory))
        _private_dir(directory)
        for name, value in wanted.items():
            temporary = os.path.join(directory, f".{name}.tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, (value or "").encode())
                os.fchmod(fd, mode)
                if owner is not None:
                    os.fchown(fd, *owner)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, os.path.join(directory, name))
        for left in os.listdir(directory):
            if left not in wanted:
                os.unlink(os.path.join(directory, left))
    except OSError as exc:
        raise OrchestratorError(f"cannot write the secret files in {directory}: {exc.strerror or exc} "
                                f"(set {SECRETS_DIR_ENV} to a directory this user may write)") from None


def writable(directory: str) -> bool:
    """Whether `write` can make `directory` (checked before anything is changed): the nearest
    part of it that exists is a directory this user may write into."""
    existing = directory
    while not os.path.exists(existing) and os.path.dirname(existing) != existing:
        existing = os.path.dirname(existing)
    return os.path.isdir(existing) and os.access(existing, os.W_OK | os.X_OK)


def remove(directory: str) -> None:
    """Remove an instance's secret files (its container is gone). Only a directory under the
    secrets root of this run is touched: the path comes from the container's label."""
    directory = os.path.normpath(directory) if directory else ""
    if not directory or os.path.dirname(os.path.dirname(directory)) != root():
        return
    import shutil  # only `down` and removals pay for it

    shutil.rmtree(directory, ignore_errors=True)
    try:
        os.rmdir(os.path.dirname(directory))  # the project's directory, once empty
    except OSError:
        pass


def _private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


# vLLM before 0.28.0 hashed VLLM_API_KEY into its compile cache's key and wrote it, in plain
# text, into that cache's metadata (cache_key_factors.json): vllm-project/vllm#52523, merged on
# 2026-08-16; 0.27.1 (2026-08-13) predates it, 0.28.0 (2026-08-26) is the first release after.
CACHE_KEY_FIXED_IN = (0, 28, 0)


def _version(text: str) -> tuple[int, ...] | None:
    match = re.match(r"^v?(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    return tuple(int(part or 0) for part in match.groups()) if match else None


def problems(instances: Iterable[Any], containers: Mapping[str, Any], tables: Mapping[str, Any],
             source: str) -> list[Problem]:
    """What the file form means for a config: a secret whose name no shell can export is a file
    only (a warning: releases before the files gave it as a variable); and an API key next to a compile cache kept on the host, under a vLLM
    known (from its image's option table) to predate the fix above, is a warning. Where the
    version cannot be known, nothing is said. `containers`: the instances' Docker renderings
    by name (Resolved.containers)."""
    out: list[Problem] = []
    holders: dict[str, list[str]] = {}
    keyed = []
    for spec in instances:
        container = containers.get(spec.name)
        if container is None or not spec.enabled:
            continue
        names = [key for key, _ in container.secret_env]
        for name in names:
            if not _SHELL_NAME.match(name):
                out.append(Problem("warning", f"instance.{spec.name}.docker.secret_env",
                                   f"secret {name!r} is not a name a shell can export: the server gets it as the "
                                   f"file {target(name)} only, not in its environment",
                                   hint="rename it (letters, digits and _, not starting with a digit)", source=source))
        env = dict(container.env)
        caches = [c.source for c in container.cache_mounts if c.env == "VLLM_CACHE_ROOT"]
        cache = caches[0] if caches else env.get("VLLM_CACHE_ROOT")
        if cache:
            holders.setdefault(cache, []).append(spec.name)
        if "VLLM_API_KEY" in names and cache:
            keyed.append((spec, container, cache))
    for spec, container, cache in keyed:
        table = tables.get(container.image)
        if table is None:
            continue
        version = _version(getattr(table, "vllm_version", ""))
        if version is None or version >= CACHE_KEY_FIXED_IN:
            continue
        shared = [name for name in holders[cache] if name != spec.name]
        where = f"{cache}" + (f", shared with {', '.join(shared)}" if shared else "")
        fixed = ".".join(map(str, CACHE_KEY_FIXED_IN))
        out.append(Problem(
            "warning", f"instance.{spec.name}.server.api_key",
            f"vLLM {table.vllm_version} in image {container.image} writes the API key in plain text into its "
            f"compile cache's metadata ({where}); fixed in vLLM {fixed} (vllm-project/vllm#52523)",
            hint=f"use vLLM {fixed} or later, or [docker] cache_host_dir = false", source=source))
    return out
