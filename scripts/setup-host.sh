#!/usr/bin/env bash
# Make this machine ready for vllm-orch and its tests: a running Docker engine (Debian's
# docker.io), Docker Compose v2 (Debian 13's static plugin), and, on a host without the NVIDIA
# container toolkit, a stand-in `nvidia-container-runtime-hook` so GPU DeviceRequests can start.
# Idempotent: each step is skipped when already done. Needs root on Debian 12.
set -euo pipefail

STATE_DIR=${VLLM_ORCH_HOST_STATE:-/var/lib/vllm-orch-host}
HOOK_DIR="$STATE_DIR/nvidia-hook-standin"
DOCKERD_LOG=${VLLM_ORCH_DOCKERD_LOG:-/var/log/vllm-orch-dockerd.log}
mkdir -p "$STATE_DIR"

log() { printf '[setup-host] %s\n' "$*" >&2; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then apt-get update -qq >/dev/null; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# 1. The engine. The machine ships only the docker client; Debian's docker.io brings dockerd.
if ! command -v dockerd >/dev/null 2>&1; then
  log "installing Debian's docker.io (engine)"
  apt_install docker.io
fi
# mmdebstrap builds the base image's root filesystem (no registry can be pulled from here).
if ! command -v mmdebstrap >/dev/null 2>&1; then
  log "installing mmdebstrap"
  apt_install mmdebstrap
fi

# iproute2 (`ip netns`): the fault tests run a throwaway second dockerd in a network namespace of
# its own (tests/integration/dedicated_engine.py). Priority "important": usually there already.
if ! command -v ip >/dev/null 2>&1; then
  log "installing iproute2"
  apt_install iproute2
fi

# 2. Compose v2: only Debian 13 packages it. Reuse this machine's configured Debian mirror.
if ! docker compose version >/dev/null 2>&1; then
  log "installing Docker Compose v2 from Debian 13's docker-compose package"
  # The first non-security Debian URI of the configured sources (deb822 "URIs:" or one-line "deb").
  mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
           | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+' | grep -v -e security -e nodesource | head -n1 || true)
  [ -n "$mirror" ] || { log "no Debian mirror configured in apt sources"; exit 1; }
  tmp=$(mktemp -d)
  mkdir -p "$tmp/lists/partial" "$tmp/archives/partial"
  echo "deb [trusted=yes] ${mirror%/} trixie main" > "$tmp/sources.list"
  aptopts=(-o APT::Sandbox::User=root -o Dir::Etc::SourceList="$tmp/sources.list" -o Dir::Etc::SourceParts=/dev/null
           -o Dir::State::Lists="$tmp/lists" -o Dir::Cache::Archives="$tmp/archives")
  apt-get "${aptopts[@]}" update -qq >/dev/null
  (cd "$tmp" && apt-get "${aptopts[@]}" download docker-compose >/dev/null)
  dpkg -x "$tmp"/docker-compose_*.deb "$tmp/x"
  mkdir -p /usr/local/lib/docker/cli-plugins
  install -m 0755 "$tmp/x/usr/libexec/docker/cli-plugins/docker-compose" /usr/local/lib/docker/cli-plugins/
  rm -rf "$tmp"
fi

# 3. GPU path without a GPU. dockerd registers its built-in "nvidia" device driver only when it
# finds this executable on its PATH at start. This stand-in does nothing (reads the OCI state
# from stdin and exits 0): no GPU is emulated, only the engine's DeviceRequest plumbing, which
# then puts NVIDIA_VISIBLE_DEVICES into the container's environment. Skipped on a real GPU host.
use_hook_standin=0
if ! command -v nvidia-container-runtime-hook >/dev/null 2>&1; then
  use_hook_standin=1
  mkdir -p "$HOOK_DIR"
  cat > "$HOOK_DIR/nvidia-container-runtime-hook" <<'HOOK'
#!/bin/sh
# Stand-in for the NVIDIA container toolkit's hook (no GPU here): accept and do nothing.
cat >/dev/null
exit 0
HOOK
  chmod 0755 "$HOOK_DIR/nvidia-container-runtime-hook"
fi

# 4. Start the engine when none answers. There is no systemd here: run it detached.
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd (log: $DOCKERD_LOG)"
  path="$PATH"
  [ "$use_hook_standin" = 1 ] && path="$HOOK_DIR:$PATH"
  PATH="$path" setsid nohup dockerd --host unix:///var/run/docker.sock >"$DOCKERD_LOG" 2>&1 < /dev/null &
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not answer; see $DOCKERD_LOG"; tail -n 20 "$DOCKERD_LOG" >&2; exit 1; }
fi
log "docker engine $(docker version --format '{{.Server.Version}}') and compose $(docker compose version --short) ready"
