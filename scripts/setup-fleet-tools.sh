#!/usr/bin/env bash
# What the fleet tier (tests/fleet) needs beyond setup-host.sh: Debian's openssh-server (an sshd
# per test host), iproute2 and util-linux (network namespaces, nsenter), and in .venv the pinned
# Ansible and ansible-lint (requirements-fleet.txt). Idempotent; needs root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '[setup-fleet-tools] %s\n' "$*" >&2; }

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nsenter >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

stamp=.venv/.fleet-tools-installed
want=$(sha256sum requirements-fleet.txt | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Ansible and ansible-lint into .venv"
  .venv/bin/python -m pip install -q -r requirements-fleet.txt 2> >(grep -v '^WARNING: Location' >&2)
  echo "$want" > "$stamp"
fi
log "$(.venv/bin/ansible --version | sed -n 1p), $(.venv/bin/ansible-lint --nocolor --version 2>/dev/null | head -n1 | cut -d' ' -f1-2)"
