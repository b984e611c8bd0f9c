"""Container settings the engine (or Kubernetes' API server) would refuse only at create, after
other instances have changed: found by `validate` instead, each as one problem with its key."""

from __future__ import annotations

import re
from typing import Any

from orchestrator.errors import Problem, show_value

# Docker's reference grammar (distribution/reference): [domain[:port]/]path[:tag][@digest], the
# path in lower case. "IMG:Latest" (capitals) and "--privileged" (an option, not a name) fail.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
_IMAGE_REFERENCE = re.compile(
    rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
    r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$")
_IMAGE_NAME_MAX = 255
# "name", "uid", "name:group", "uid:gid": no spaces, line breaks or control characters.
_USER = re.compile(r"^[^\s:\x00-\x1f\x7f]+(?::[^\s:\x00-\x1f\x7f]+)?$")
# Kubernetes' rule for environment variable names (before 1.34's relaxed one, which clusters of
# earlier releases do not have).
_KUBERNETES_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
MIN_CPUS = 0.01  # Docker's lower bound for NanoCPUs (1e7); less rounds to 0, which means "no limit"
SHM_TARGET = "/dev/shm"  # the Kubernetes export mounts the shm_size emptyDir there


def image_problem(image: str) -> str | None:
    """Why Docker would refuse `image` as a reference, or None."""
    name = image.split("@", 1)[0]
    if len(name.rsplit(":", 1)[0]) > _IMAGE_NAME_MAX:
        return f"longer than {_IMAGE_NAME_MAX} characters"
    if not _IMAGE_REFERENCE.match(image):
        return ("is not an image reference Docker accepts ([registry/]name[:tag][@digest]; the name in "
                "lower case)")
    return None


def container_setting_problems(spec: Any, source: str, backend: str) -> list[Problem]:
    """The image, the user, the network and the CPU settings of one instance; `backend`: docker
    (every setting reaches the engine) or kubernetes (image, user and env names only)."""
    out: list[Problem] = []
    work = spec.workload
    path = f"instance.{spec.name}.docker"
    if work.image:
        why = image_problem(work.image)
        if why:
            out.append(Problem("error", f"{path}.image", f"{show_value(work.image)} {why}",
                               hint='e.g. "vllm/vllm-openai:v0.8.5"', source=source))
    if work.user is not None and not _USER.match(str(work.user)):
        out.append(Problem("error", f"{path}.user", f"{show_value(work.user)} is not a user: "
                           '"name", "uid", "name:group" or "uid:gid", without spaces or line breaks', source=source))
    if backend == "kubernetes":
        for key, _ in list(work.env) + list(work.secret_env):
            if not _KUBERNETES_ENV_NAME.match(key):
                out.append(Problem("error", f"{path}.env", f"{show_value(key)} is not a Kubernetes environment "
                                   "variable name", hint="letters, digits, '_', '-' and '.', not starting with a digit",
                                   source=source))
        return out
    network = work.network_mode or ""
    if network.startswith("container:") and work.publish:
        out.append(Problem("error", f"{path}.network_mode", f"{show_value(network)} shares another container's "
                           "network, where this one cannot publish a port", hint="set publish = false", source=source))
    cpuset = work.option("cpuset")
    if isinstance(cpuset, str):
        for part in cpuset.split(","):
            low, _, high = part.partition("-")
            if high and low.isdigit() and high.isdigit() and int(low) > int(high):
                out.append(Problem("error", f"{path}.cpuset", f"range {part} runs backwards",
                                   hint=f"write {high}-{low}", source=source))
    cpus = work.option("cpus")
    if isinstance(cpus, (int, float)) and not isinstance(cpus, bool) and 0 < cpus < MIN_CPUS:
        out.append(Problem("error", f"{path}.cpus", f"{cpus:g} is below Docker's minimum of {MIN_CPUS} CPUs "
                           "(less would round to no limit at all)", source=source))
    return out


def mount_target_problems(spec: Any, container: Any, source: str, backend: str) -> list[Problem]:
    """Paths inside the container that the engine or the API server refuse: the root, a path
    with `..`, and one path mounted twice (Docker: with the log file and the caches; Kubernetes:
    with the /dev/shm volume the export adds)."""
    out: list[Problem] = []
    path = f"instance.{spec.name}.docker.volumes"
    for target in (m.target for m in spec.workload.mounts):  # the log file's is checked as log_file
        if target == "/":
            out.append(Problem("error", path, "mounts over the container's root (/)",
                               hint="mount a directory such as /models", source=source))
        elif ".." in target.split("/"):
            out.append(Problem("error", path, f"{show_value(target)} holds '..': a mount path must name its "
                               "directory directly", source=source))
    if backend == "docker" and container is not None:  # its Docker rendering (container.py)
        targets = [m.target for m in container.mounts]
    else:
        targets = [m.target for m in spec.workload.mounts] + [SHM_TARGET]
    seen: set[str] = set()
    for target in targets:
        if target in seen:
            hint = "the Kubernetes export mounts shm_size there" if target == SHM_TARGET and backend == "kubernetes" else ""
            out.append(Problem("error", path, f"two mounts at {printable_target(target)}", hint=hint, source=source))
        seen.add(target)
    return out


def printable_target(target: str) -> str:
    return target if target.isprintable() else show_value(target)
