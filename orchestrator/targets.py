"""What a config is rendered for: a target. Two targets run instances and are backends
(`--backend`: Docker's containers, the launcher's processes); two are exports that write a file
for another tool to run (Compose, Kubernetes) and have no backend. The checks that depend on
where the instances will run ask the predicates below, never a target's name."""

from __future__ import annotations

from typing import Final, Literal

Target = Literal["docker", "local", "compose", "kubernetes"]

DOCKER: Final = "docker"
LOCAL: Final = "local"
COMPOSE: Final = "compose"
KUBERNETES: Final = "kubernetes"

BACKENDS: Final = (DOCKER, LOCAL)  # the targets that run instances: what `--backend` accepts, in its help's order
EXPORTS: Final = (COMPOSE, KUBERNETES)  # the targets that are written to a file
TARGETS: Final = BACKENDS + EXPORTS


def runs_containers(target: str) -> bool:
    """Its instances run their image (so the image's vLLM option table applies)."""
    return target in (DOCKER, COMPOSE, KUBERNETES)


def renders_docker(target: str) -> bool:
    """It is rendered through the Docker rendering (container.ContainerSpec): the Docker backend
    and the Compose export, which share one."""
    return target in (DOCKER, COMPOSE)


def shares_one_host(target: str) -> bool:
    """Its instances share one machine's ports and GPUs (not Kubernetes: there every pod has its
    own address and the device plugin gives each pod GPUs of its own)."""
    return target != KUBERNETES
