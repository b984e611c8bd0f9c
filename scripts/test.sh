#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs and starts the Docker engine and
# Compose v2, builds the local images and the tiny model, then runs pytest (all tiers:
# unit, integration against the real engine, e2e with the real vLLM CPU build, and the fleet
# tier: Ansible over SSH to three Docker hosts in network namespaces).
# Extra arguments go to pytest, e.g. `scripts/test.sh tests/unit -q`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-host.sh
scripts/bootstrap-venv.sh
scripts/build-images.sh all
scripts/setup-vllm-venv.sh   # real vLLM as host processes, for the local launcher's e2e test
scripts/setup-fleet-tools.sh # sshd, namespaces and Ansible, for the fleet tier
exec .venv/bin/python -m pytest "$@"
