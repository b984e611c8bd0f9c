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
# the script asserts the counts 1 and 0 from their log files. Then, where vLLM (CUDA) is installed,
# the sleep-mode check (below). Exit 0 when everything that ran passed.
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
echo "== GPU fixtures recorded in $fixtures: $(find "$fixtures" -mindepth 1 -maxdepth 1 -printf '%f ')"
"$PYTHON" -m orchestrator gpus || echo "(vllm-orch gpus: no inventory here)"

echo "== host: $("$PYTHON" -c 'import torch; print("torch", torch.__version__, "sees", torch.cuda.device_count(), "GPU(s); CUDA_VISIBLE_DEVICES =", repr(__import__("os").environ.get("CUDA_VISIBLE_DEVICES")))')"
nvidia-smi -L 2>/dev/null || echo "(no nvidia-smi)"

status=0
start=$(date +%s.%N)
PATH="$work/bin:$PATH" PYTHONPATH="$work/mod${PYTHONPATH:+:$PYTHONPATH}" VLLM_ORCH_STATE_DIR="$work/state" \
  "$PYTHON" -m orchestrator launch -c "$work/gpu-check.toml" || status=$?
end=$(date +%s.%N)
echo "== launch exit code: $status ($(awk "BEGIN{printf \"%.1f\", $end-$start}")s for both instances)"

ids_status=0
"$PYTHON" - "$work/logs" "$status" <<'EOF' || ids_status=$?
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

# ---------------------------------------------------------------------------------------------
# Sleep mode (issue 23): a real vLLM with --enable-sleep-mode on GPU 0, put to sleep (level 1)
# and woken through orchestrator/sleep_api.py, with the GPU memory nvidia-smi reports at each
# step and the times. Needs vLLM (a CUDA build) in $PYTHON; skipped, with a line saying so,
# where there is none. The model: $GPU_CHECK_SLEEP_MODEL (a directory or a name vLLM can load),
# else a tiny random Llama made here with transformers (no download: the KV cache, which
# gpu_memory_utilization sizes, is what a sleep frees then).
sleep_status=0
if "$PYTHON" -c 'import vllm' >/dev/null 2>&1 && command -v nvidia-smi >/dev/null 2>&1; then
  echo "== sleep mode: vLLM $("$PYTHON" -c 'import vllm; print(vllm.__version__)' 2>/dev/null)"
  model=${GPU_CHECK_SLEEP_MODEL:-}
  if [ -z "$model" ]; then
    model="$work/tiny-llama"
    "$PYTHON" - "$model" <<'MODEL' || sleep_status=$?
"""A tiny random Llama (vocabulary 512, 2 layers): enough for vLLM to load and answer."""
import sys

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

out = sys.argv[1]
tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
tokenizer.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 50,
                              trainers.BpeTrainer(vocab_size=512, special_tokens=["<unk>", "<s>", "</s>"]))
fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
fast.save_pretrained(out)
LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                             bos_token_id=1, eos_token_id=2)).save_pretrained(out)
MODEL
  fi
  port=18911
  if [ "$sleep_status" = 0 ]; then
    start=$(date +%s.%N)
    VLLM_SERVER_DEV_MODE=1 CUDA_VISIBLE_DEVICES=0 "$PYTHON" -m vllm.entrypoints.openai.api_server \
      --model "$model" --host 127.0.0.1 --port "$port" --enable-sleep-mode --gpu-memory-utilization 0.3 \
      --max-model-len 256 --served-model-name sleepy >"$work/sleep-server.log" 2>&1 &
    server=$!
    "$PYTHON" - "127.0.0.1:$port" "$start" "$server" <<'SLEEP' || sleep_status=$?
"""Sleep and wake a real vLLM through orchestrator.sleep_api; GPU memory from nvidia-smi at each step."""
import json
import os
import subprocess
import sys
import time
import urllib.request

from orchestrator import sleep_api

address, started, server = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])


def used_mib() -> int:
    out = subprocess.run(["nvidia-smi", "--id=0", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def answered() -> float:
    t = time.monotonic()
    body = json.dumps({"model": "sleepy", "prompt": "the quick", "max_tokens": 4}).encode()
    request = urllib.request.Request(f"http://{address}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        assert answer.status == 200 and json.loads(answer.read())["choices"], "no completion"
    return time.monotonic() - t


deadline = time.time() + 600
while True:
    try:
        with urllib.request.urlopen(f"http://{address}/health", timeout=2) as answer:
            if answer.status == 200:
                break
    except OSError:
        pass
    try:
        os.kill(server, 0)
    except OSError:
        sys.exit("FAIL sleep mode: vLLM exited before it was healthy (see its log above)")
    if time.time() > deadline:
        sys.exit("FAIL sleep mode: vLLM not healthy within 600 s")
    time.sleep(1)
print(f"start to healthy: {time.time() - started:.1f} s")
failed = False
first = answered()
awake = used_mib()
t = time.monotonic()
sleep_api.sleep(address, level=1)
slept_s = time.monotonic() - t
asleep = used_mib()
sleeping = sleep_api.is_sleeping(address)
t = time.monotonic()
fully = sleep_api.wake_up(address)
woke_s = time.monotonic() - t
again = answered()
woken = used_mib()
print(f"GPU 0 memory used: awake {awake} MiB, asleep {asleep} MiB ({awake - asleep} MiB freed), woken {woken} MiB")
print(f"sleep level 1: {slept_s:.2f} s; wake: {woke_s:.2f} s; first completion {first:.2f} s, after the wake {again:.2f} s")
for ok, what in ((sleeping, "is_sleeping true while asleep"), (asleep < awake * 0.5, "at least half the GPU memory freed"),
                 (fully and not sleep_api.is_sleeping(address), "fully awake after wake_up")):
    print(("ok   " if ok else "FAIL ") + what)
    failed |= not ok
print("SLEEP CHECK " + ("FAILED" if failed else "PASSED"))
sys.exit(1 if failed else 0)
SLEEP
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    if [ "$sleep_status" != 0 ]; then tail -n 40 "$work/sleep-server.log"; fi
  fi
else
  echo "== sleep mode: skipped (needs vLLM, a CUDA build, in $PYTHON and nvidia-smi)"
fi

exit $(( ids_status != 0 || sleep_status != 0 ))
