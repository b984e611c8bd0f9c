#!/usr/bin/env bash
# GPU-machine check of the local (process) backend: does gpu_ids reach PyTorch as the contract
# says? For a machine with an NVIDIA GPU and PyTorch, but no Docker and no pixi. Run it from the
# repository root after `pip install -e .`:
#
#   scripts/gpu-check.sh            # uses `python` on PATH (the one with torch and vllm-orch)
#
# It writes a TOML with two foreground instances whose api_server_module is a tiny test module
# (not vLLM) that prints torch.cuda.device_count() and exits: one with gpu_ids = "0", one with
# gpu_ids = "none". `python -m orchestrator launch -c that.toml` runs both in config order and
# the script asserts the counts 1 and 0 from their log files. Exit 0 when both match.
set -euo pipefail

PYTHON=${PYTHON:-python}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
work=$(mktemp -d "${TMPDIR:-/tmp}/vllm-orch-gpu-check.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/mod/gpucheck" "$work/bin"

# `python -m <module>` is the contract's command; make sure `python` is the interpreter given.
# A wrapper, not a symlink: a venv's python only finds its site-packages when called by its path.
printf '#!/bin/sh\nexec %q "$@"\n' "$(command -v "$PYTHON")" >"$work/bin/python"
chmod +x "$work/bin/python"

cat >"$work/mod/gpucheck/__init__.py" <<'EOF'
EOF
cat >"$work/mod/gpucheck/count.py" <<'EOF'
"""Print what this process sees of the GPUs, then exit (stands in for vLLM's api_server)."""
import json
import os
import sys

import torch

print("GPU-CHECK " + json.dumps({
    "argv": sys.argv[1:],
    "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "device_count": torch.cuda.device_count(),
    "names": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
}), flush=True)
EOF

cat >"$work/gpu-check.toml" <<EOF
[master]
api_server_module = "gpucheck.count"

[instance.control]
log_dir = "$work/logs"
background = false

[instance.server]
host = "127.0.0.1"
gpu_memory_utilization = 0.1

[instance.one_gpu.control]
gpu_ids = "0"
[instance.one_gpu.server]
port = 18901

[instance.no_gpu.control]
gpu_ids = "none"
[instance.no_gpu.server]
port = 18902
EOF

echo "== host: $("$PYTHON" -c 'import torch; print("torch", torch.__version__, "sees", torch.cuda.device_count(), "GPU(s); CUDA_VISIBLE_DEVICES =", repr(__import__("os").environ.get("CUDA_VISIBLE_DEVICES")))')"
nvidia-smi -L 2>/dev/null || echo "(no nvidia-smi)"

status=0
start=$(date +%s.%N)
PATH="$work/bin:$PATH" PYTHONPATH="$work/mod${PYTHONPATH:+:$PYTHONPATH}" VLLM_ORCH_STATE_DIR="$work/state" \
  "$PYTHON" -m orchestrator launch -c "$work/gpu-check.toml" || status=$?
end=$(date +%s.%N)
echo "== launch exit code: $status ($(awk "BEGIN{printf \"%.1f\", $end-$start}")s for both instances)"

"$PYTHON" - "$work/logs" "$status" <<'EOF'
import json
import pathlib
import sys

logs, status = pathlib.Path(sys.argv[1]), int(sys.argv[2])
expected = {"one_gpu": ("0", 1), "no_gpu": ("", 0)}
failed = status != 0
for name, (cvd, count) in expected.items():
    text = (logs / f"vllm-server-{name}.log").read_text(errors="replace")
    lines = [l for l in text.splitlines() if l.startswith("GPU-CHECK ")]
    if not lines:
        print(f"FAIL {name}: no GPU-CHECK line; log:\n{text}")
        failed = True
        continue
    seen = json.loads(lines[-1][len("GPU-CHECK "):])
    ok = seen["CUDA_VISIBLE_DEVICES"] == cvd and seen["device_count"] == count
    failed |= not ok
    print(f"{'ok  ' if ok else 'FAIL'} {name}: CUDA_VISIBLE_DEVICES={seen['CUDA_VISIBLE_DEVICES']!r} "
          f"device_count={seen['device_count']} {seen['names']} (want {cvd!r} -> {count})")
print("GPU CHECK " + ("FAILED" if failed else "PASSED"))
sys.exit(1 if failed else 0)
EOF
