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

# Record fresh GPU fixtures (tests/fixtures/gpus): nvidia-smi's CSV answers to the GPU probe's
# queries and what NVML (nvidia-ml-py) returns, to $OUT/gpu-fixtures (a device run) or ./gpu-fixtures.
fixtures="${OUT:-.}/gpu-fixtures"
mkdir -p "$fixtures"
stamp="# Recorded by scripts/gpu-check.sh on $(hostname) at $(date -u +%Y-%m-%dT%H:%M:%SZ)"
if command -v nvidia-smi >/dev/null 2>&1; then
  { echo "$stamp"; echo "# nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used --format=csv,noheader,nounits"
    nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used --format=csv,noheader,nounits; } >"$fixtures/query-gpu.csv" || true
  { echo "$stamp"; echo "# nvidia-smi --query-compute-apps=gpu_uuid,pid,used_memory --format=csv,noheader,nounits"
    nvidia-smi --query-compute-apps=gpu_uuid,pid,used_memory --format=csv,noheader,nounits; } >"$fixtures/query-apps.csv" || true
  { echo "$stamp"; echo "# nvidia-smi -L"; nvidia-smi -L; } >"$fixtures/list.txt" || true
fi
"$PYTHON" - "$fixtures/nvml.json" "$stamp" <<'NVML' || true
"""What NVML answers (raw values, bytes), the calls orchestrator.gpu_readers.nvml_inventory makes."""
import json
import sys

out, stamp = sys.argv[1], sys.argv[2]
try:
    import pynvml
    pynvml.nvmlInit()
except Exception as exc:  # no nvidia-ml-py or no driver: the file says so
    json.dump({"_source": stamp, "error": repr(exc)}, open(out, "w"), indent=1)
    sys.exit(0)


def text(v):
    return v.decode() if isinstance(v, bytes) else str(v)


def memory(h):
    doc = {}
    for name, args in (("v2", {"version": pynvml.nvmlMemory_v2}), ("v1", {})):
        try:
            m = pynvml.nvmlDeviceGetMemoryInfo(h, **args)
            doc[name] = {"total": m.total, "used": m.used, "free": m.free}
        except Exception as exc:
            doc[name] = {"error": repr(exc)}
    return doc


def processes(h):
    try:
        return [{"pid": p.pid, "usedGpuMemory": p.usedGpuMemory} for p in pynvml.nvmlDeviceGetComputeRunningProcesses(h)]
    except Exception as exc:
        return {"error": repr(exc)}


devices = []
for i in range(pynvml.nvmlDeviceGetCount()):
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    doc = {"index": i, "uuid": text(pynvml.nvmlDeviceGetUUID(h)), "name": text(pynvml.nvmlDeviceGetName(h)),
           "memory": memory(h), "processes": processes(h)}
    try:
        doc["mig_mode"] = list(pynvml.nvmlDeviceGetMigMode(h))
    except Exception as exc:
        doc["mig_mode"] = repr(exc)
    devices.append(doc)
json.dump({"_source": stamp + " (NVML through nvidia-ml-py)", "driver_version": text(pynvml.nvmlSystemGetDriverVersion()),
           "devices": devices}, open(out, "w"), indent=1)
pynvml.nvmlShutdown()
NVML
echo "== GPU fixtures recorded in $fixtures: $(ls "$fixtures" | tr '\n' ' ')"
"$PYTHON" -m orchestrator gpus || echo "(vllm-orch gpus: no inventory here)"

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
