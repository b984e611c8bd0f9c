"""The Docker rendering of an instance: its container as the Docker backend creates it and the
Compose export describes it (one rendering for both, so they cannot disagree).

From the target-neutral `InstanceSpec` (spec.py) this adds what only a Docker container needs:
the log wrapper that appends the server's output to a bind-mounted host file (so logs outlive
the container), that file's mount, the `CMD` health test, the DeviceRequest, and the labels that
make the container ours. `resolve` renders each instance once and keeps the result beside its
spec (`Resolved.containers`), never in it. `ContainerSpec.to_json()` is the container's *record*
(its `.spec` label): every release must produce the same keys and values for the same config, or
an upgrade would recreate containers whose config did not change (tests/unit/test_upgrade.py).
"""

from __future__ import annotations

import json
from typing import Any, Callable

from orchestrator import options, secret_files
from orchestrator.labels import (LABEL_CONFIG, LABEL_GPUS, LABEL_INSTANCE, LABEL_LOG, LABEL_MODEL, LABEL_OWNER,
                                 LABEL_PREFIX, LABEL_PROJECT, LABEL_URL, OWNER_UP)
from orchestrator.spec import SECRET_MASK, CacheMount, GpuRequest, HealthProbe, InstanceSpec, Mount, OptionValues, PortBinding
from orchestrator.value import Value, field

# The container's fixed entrypoint: append the instance's output to its log file (bind-mounted
# from the host, so it outlives the container) and `exec` the argv so vLLM itself receives
# SIGTERM. The script is a constant; config values only ever arrive as "$@" and env values.
_LOG_START = (
    'printf "%s vllm-orch: starting instance %s\\n" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" '
    '"$VLLM_ORCH_INSTANCE" >>"$VLLM_ORCH_LOG_FILE" || exit 70; '
)
_LOG_EXEC = 'exec "$@" >>"$VLLM_ORCH_LOG_FILE" 2>&1'
LOG_WRAPPER = _LOG_START + _LOG_EXEC
ENTRYPOINT = ("/bin/sh", "-c", LOG_WRAPPER, "vllm-orch-log")
# Between the two, for a container with secrets: read each file named in VLLM_ORCH_SECRET_ENV
# (names, never values) from /run/secrets into the shell's environment, which the `exec` hands to
# vLLM alone: the container's configuration (`docker inspect`) holds no value. A file the server's
# user cannot read ends the start with a line in the log (diagnose.py names the fix). A container
# without secrets keeps the plain wrapper, so its record and the Compose export stay what they were.
SECRET_LOADER = (  # its own variables are named so that no secret's name can be one of them
    'for vllm_orch_name in $VLLM_ORCH_SECRET_ENV; do '
    'vllm_orch_value=$(cat "/run/secrets/$vllm_orch_name" 2>>"$VLLM_ORCH_LOG_FILE") || { printf "vllm-orch: cannot '
    'read the secret file /run/secrets/%s as uid %s\\n" "$vllm_orch_name" "$(id -u)" >>"$VLLM_ORCH_LOG_FILE"; '
    'exit 78; }; export "$vllm_orch_name=$vllm_orch_value"; done; '
    'unset vllm_orch_name vllm_orch_value VLLM_ORCH_SECRET_ENV; '
)
SECRET_ENTRYPOINT = ("/bin/sh", "-c", _LOG_START + SECRET_LOADER + _LOG_EXEC, "vllm-orch-log")
SECRET_ENV_LIST = "VLLM_ORCH_SECRET_ENV"
HEALTH_PROBE = "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=4)"
HEALTH_TEST_FORMS = ("CMD", "CMD-SHELL", "NONE")


class HealthCheck(Value):
    """The engine's health check (Docker's `test` form)."""

    test: tuple[str, ...]
    interval_s: int
    timeout_s: int
    retries: int
    start_period_s: int

    def to_json(self) -> dict[str, Any]:
        return {
            "test": list(self.test),
            "interval_s": self.interval_s,
            "timeout_s": self.timeout_s,
            "retries": self.retries,
            "start_period_s": self.start_period_s,
        }


def config_digest(record: dict[str, Any], secret_env: Any) -> str:
    """sha256 of a settings record (secrets masked) plus digests of the secret values: the
    config-hash label of every release. Given the record a container carries and today's
    secrets, it reproduces that label exactly when no secret value changed."""
    import hashlib  # only hashing commands pay for it

    doc = dict(record)
    doc["secret_digests"] = {key: hashlib.sha256((value or "").encode()).hexdigest() for key, value in secret_env}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def device_requests(gpu: GpuRequest, driver: str = "nvidia") -> list[dict[str, Any]]:
    """The Engine API's HostConfig.DeviceRequests. The engine hands DeviceIDs, indexes or UUIDs
    alike, to the NVIDIA runtime as NVIDIA_VISIBLE_DEVICES."""
    if gpu.mode == "none":
        return []
    request: dict[str, Any] = {"Driver": driver, "Capabilities": [["gpu"]]}
    if gpu.mode == "all":
        request.update(Count=-1, DeviceIDs=None)
    else:
        request.update(Count=0, DeviceIDs=list(gpu.device_ids))
    request["Options"] = {}
    return [request]


def health_check(health: HealthProbe) -> HealthCheck:
    test = health.command or ("CMD", "python3", "-c", HEALTH_PROBE, health.url)
    if test[0] not in HEALTH_TEST_FORMS:
        test = ("CMD", *test)
    return HealthCheck(test=tuple(test), interval_s=health.interval_s, timeout_s=health.timeout_s,
                       retries=health.retries, start_period_s=health.start_period_s)


class ContainerSpec(OptionValues, Value):
    """Everything the engine needs to run one instance. Secrets are held apart from `env`."""

    name: str
    image: str
    entrypoint: tuple[str, ...]
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    secret_env: tuple[tuple[str, str | None], ...] = field(repr=False)  # value None: not set on this host
    mounts: tuple[Mount, ...]
    port: PortBinding | None
    gpu: GpuRequest
    gpu_driver: str
    stop_signal: str
    healthcheck: HealthCheck | None
    init: bool
    labels: tuple[tuple[str, str], ...]  # ours and the user's, without the hash
    host_log_file: str
    # Kept apart from `mounts` and `env` (and under its own key in to_json) so that containers
    # made before the caches existed compare equal on every earlier key; see plan.explain_change.
    cache_mounts: tuple[CacheMount, ...] = ()
    cache_is_default: bool = True  # came from the default [docker] cache_host_dir (not compared itself)
    # The pass-through options of the option table (options.CONTAINER_OPTIONS), in its order.
    options: tuple[tuple[str, Any], ...] = ()
    # The host directory of the secret files (secret_files.py); "" with secrets: delivered in
    # the environment, as releases before the files did (plan.py compares such containers so).
    # Not compared (a host fact, like the engine's address): a new place applies at a recreate.
    secret_dir: str = ""

    @property
    def secrets_as_files(self) -> bool:
        return bool(self.secret_dir and self.secret_env)

    def secret_mounts(self) -> tuple[Mount, ...]:
        """One read-only bind mount per secret file (a file, not the directory: the host
        directory is root-only, and the server may run as another user)."""
        if not self.secrets_as_files:
            return ()
        return tuple(Mount(f"{self.secret_dir}/{secret_files.file_name(key)}", secret_files.target(key), True)
                     for key, _ in self.secret_env)

    def secrets_in_env(self) -> "ContainerSpec":
        """This container as releases before the secret files made it (values in Config.Env)."""
        return self.replace(secret_dir="", entrypoint=ENTRYPOINT)

    def environment(self, *, reveal: bool = False, caches: bool = True) -> dict[str, str]:
        """The container's environment; `caches`: with the variables naming the cache mounts
        (to_json keeps those under cache_mounts only, so its "env" is what it always was)."""
        env = {cache.env: cache.target for cache in self.cache_mounts} if caches else {}
        env.update(self.env)
        if self.secrets_as_files:  # names and paths only: the values are files (secret_files.py)
            names = [key for key, _ in self.secret_env]
            exported = secret_files.exported_names(names)
            if exported:
                env[SECRET_ENV_LIST] = " ".join(exported)
            if secret_files.HF_TOKEN in names:
                env[secret_files.HF_TOKEN_PATH] = secret_files.target(secret_files.HF_TOKEN)
            return env
        for key, value in self.secret_env:
            env[key] = (value or "") if reveal else SECRET_MASK
        return env

    def to_json(self) -> dict[str, Any]:
        """The record, secrets masked: what `plan --json` prints, the `.spec` label, what the hash covers."""
        return {
            "name": self.name,
            "image": self.image,
            "entrypoint": list(self.entrypoint),
            "command": list(self.command),
            "env": self.environment(caches=False),
            "secret_env": [key for key, _ in self.secret_env],
            "mounts": [m.to_json() for m in self.mounts],
            "port": self.port.to_json() if self.port else None,
            "device_requests": device_requests(self.gpu, self.gpu_driver),
            "stop_signal": self.stop_signal,
            "healthcheck": self.healthcheck.to_json() if self.healthcheck else None,
            "init": self.init,
            "labels": dict(self.labels),
            "host_log_file": self.host_log_file,
            "cache_mounts": [cache.to_json() for cache in self.cache_mounts],
            **options.record_fields(self.options),  # an unset option added later stays out
            # Only where there are secret files: a container without secrets keeps the record
            # (and the hash) of every earlier release. The host directory is not in it (it
            # depends on the user and host that render it): the create body labels it apart.
            **({"secret_files": {"target": secret_files.TARGET_DIR}} if self.secrets_as_files else {}),
        }

    def config_hash(self) -> str:
        """sha256 of the canonical spec. Secrets enter as digests so a changed API key still
        recreates the container without the key ever being written into a label."""
        return config_digest(self.to_json(), self.secret_env)


def _caches_before_they_existed(container: ContainerSpec) -> list[dict[str, Any]]:
    """A container made before the per-instance caches is left alone while they are the default
    ones (so the upgrade that brought them restarts nothing); a cache_host_dir set by hand is a
    change of its own."""
    return [cache.to_json() for cache in container.cache_mounts] if container.cache_is_default else []


def _always(value: Any) -> Callable[[ContainerSpec], Any]:
    return lambda container: value


# Keys of the record that a release after the first recorded one (options.FIRST_RELEASE, see
# tests/fixtures/releases/) added, each with what a container made without it is taken to have
# had, given today's rendering: such a container is recreated only when today's value differs
# from that. tests/unit/test_upgrade.py fails when a key is added to the record without an entry.
ADDED_RECORD_KEYS: dict[str, Callable[[ContainerSpec], Any]] = {
    **{key: _always(unset) for key, unset in options.OPTIONS_ADDED_LATER.items()},
    "cache_mounts": _caches_before_they_existed,
    # Containers made before the secret files are compared with today's config delivered the
    # way they were (ContainerSpec.secrets_in_env, in plan.explain_change), never by this key.
    "secret_files": lambda container: None,
}


def render_container(spec: InstanceSpec, *, project: str, config_file: str, host_log_file: str,
                     gpu_driver: str, secret_dir: str = "") -> ContainerSpec:
    """The instance as a Docker container named `<project>-<instance>`; `host_log_file` is where
    its log file lives on the engine's host (bind-mounted at `spec.log_file`); `secret_dir`
    where its secret files are kept ("" : in the environment, as before the files)."""
    work = spec.workload
    assert work is not None, "a container is rendered from a resolved instance"
    # The log wrapper's file goes right after the instance's name: the order every release has
    # written (`docker inspect`, and the bytes of the Compose export). A user's value for either
    # still wins, in place, as it always did.
    env: dict[str, str] = {}
    for key, value in work.env:
        env[key] = value
        if key == "VLLM_ORCH_INSTANCE":
            env.setdefault("VLLM_ORCH_LOG_FILE", spec.log_file)
    network_mode = work.option("network_mode")
    url = work.publish.url if work.publish else (f"http://127.0.0.1:{spec.port}" if network_mode == "host" else "")
    labels = {
        LABEL_OWNER: OWNER_UP,
        LABEL_PROJECT: project,
        LABEL_INSTANCE: spec.name,
        LABEL_CONFIG: config_file,
        LABEL_GPUS: spec.gpu.describe(),
        LABEL_URL: url,
        LABEL_MODEL: spec.served_model or "",
        LABEL_LOG: host_log_file,
    }
    labels.update((key, value) for key, value in work.labels if not key.startswith(LABEL_PREFIX + "."))
    # The log file alone is bind-mounted (not its directory): the contract's default log_dir
    # is /tmp, and a host directory over the container's /tmp would collect every temp file.
    return ContainerSpec(
        name=f"{project}-{spec.name}",
        image=work.image,
        entrypoint=SECRET_ENTRYPOINT if secret_dir and work.secret_env else ENTRYPOINT,
        command=spec.command,
        env=tuple(env.items()),
        secret_env=work.secret_env,
        mounts=(Mount(host_log_file, spec.log_file), *work.mounts),
        port=work.publish,
        gpu=spec.gpu,
        gpu_driver=gpu_driver,
        stop_signal=work.stop_signal,
        healthcheck=health_check(work.health),
        init=True,
        labels=tuple(labels.items()),
        host_log_file=host_log_file,
        options=work.options,
        cache_mounts=work.caches,
        cache_is_default=work.cache_is_default,
        secret_dir=secret_dir if work.secret_env else "",
    )


def instance_json(spec: InstanceSpec, container: ContainerSpec) -> dict[str, Any]:
    """`plan --json`'s instance run as a Docker container: the neutral spec's document with the
    container's environment (in place of the launcher's), host log file, record and hash."""
    doc = spec.to_json()
    doc["env"] = container.environment()  # keeps its place after "command"
    doc["log_file_host"] = container.host_log_file
    doc["container"] = container.to_json()
    doc["config_hash"] = container.config_hash()
    return doc
