"""Why a vLLM server did not start, read from its log: log text -> (cause, fix), or None.

Pure and small on purpose: `up --wait`, `ps` and `launch` all end with the one line this makes,
above the traceback it was read from. Each pattern is a message vLLM, PyTorch, NCCL or the OS
really prints (tests/fixtures/start-failures/ holds real log tails, each with where it came
from). Causes are tried in the order below, not by where they sit in the log: an out-of-memory
error is often followed by NCCL teardown warnings, and the memory is the cause.
"""

from __future__ import annotations

import re

from orchestrator.value import Value

# The line both launchers write before each start (container.LOG_WRAPPER, local.py): a log is
# appended to across restarts, and only the last start's output says why that start failed.
START_MARKER = "vllm-orch: starting instance "


class Diagnosis(Value):
    cause: str
    fix: str

    def line(self) -> str:
        return f"cause: {self.cause}; fix: {self.fix}"

    def to_json(self) -> dict[str, str]:
        return {"cause": self.cause, "fix": self.fix}


# (pattern, cause, fix). The cause may use the pattern's named groups.
_RULES: list[tuple[re.Pattern[str], str, str]] = [
    # Our own line (container.SECRET_LOADER): the image runs as a user the secret files are not
    # given to (they belong to [docker] user when it is a uid, else to root).
    (re.compile(r"vllm-orch: cannot read the secret file (?P<path>\S+) as uid (?P<uid>\d*)"),
     "the server (uid {uid}) cannot read its secret file {path}",
     "set [docker] user to the uid:gid the image runs as (the secret files are given to that uid)"),
    (re.compile(r"error: unrecognized arguments: (?P<args>.+)"),
     "vLLM does not accept the argument(s) {args}",
     "remove or rename them in [instance.*.server] or server.extra_args (`vllm-orch flags` lists what the image's vLLM accepts)"),
    (re.compile(r"[Aa]ddress already in use"),
     "the server's port is already in use",
     "stop what holds it or give the instance another server.port (with network_mode = \"host\" the container shares the host's ports)"),
    (re.compile(r"Insufficient space in /dev/shm[^:]*: (?P<need>[\d.]+ \w+) required, (?P<free>[\d.]+ \w+) free"),
     "/dev/shm is too small ({need} required, {free} free)",
     "raise [docker] shm_size (e.g. \"8g\") or set ipc = \"host\""),
    (re.compile(r"Error while creating shared memory segment /dev/shm|ncclShmOpen|unable to write to file </torch_"),
     "/dev/shm is too small for NCCL / PyTorch shared memory",
     "raise [docker] shm_size (e.g. \"16g\" for tensor parallelism) or set ipc = \"host\""),
    (re.compile(r"(?i)Free memory on device \S* ?\((?P<free>[\d.]+/[\d.]+ GiB)\) on startup is less than desired GPU "
                r"memory utilization \((?P<util>[\d.]+)"),
     "the GPU had only {free} free at start, less than gpu_memory_utilization = {util} asks for",
     "lower server.gpu_memory_utilization, or free the GPU (another process or instance holds it; instances that "
     "share a GPU must together stay under 1.0)"),
    (re.compile(r"max seq len \((?P<len>\d+)\) is larger than the maximum number of tokens that can be stored in KV "
                r"cache \((?P<kv>\d+)\)"),
     "no room in the KV cache for max_model_len {len} (it holds {kv} tokens)",
     "lower server.max_model_len or raise server.gpu_memory_utilization"),
    (re.compile(r"No available memory for the cache blocks"),
     "no GPU memory left for the KV cache after loading the model",
     "raise server.gpu_memory_utilization, lower server.max_model_len, or spread the model over more GPUs "
     "(tensor_parallel_size)"),
    (re.compile(r"CUDA out of memory|OutOfMemoryError"),
     "out of GPU memory",
     "lower server.gpu_memory_utilization or server.max_model_len, or spread the model over more GPUs "
     "(tensor_parallel_size); check that no other process uses the GPU"),
    (re.compile(r"Invalid repository ID or local directory specified: '(?P<model>[^']+)'|"
                r"Repo id must .*: '(?P<model2>/[^']*)'|"
                r"(?:Can't|Cannot) load .* for '(?P<model3>/[^']+)'"),
     "the model path {model} does not exist in the container, so vLLM took it for a Hugging Face Hub name",
     "check [docker] volumes (the host directory must be mounted at that path) and server.model"),
    (re.compile(r"fatal error: Python\.h: No such file or directory"),
     "torch.compile's C++ build found no Python headers (Python.h) in the image",
     "set server.enforce_eager = true, or add the headers to the image (Debian: python3-dev)"),
    (re.compile(r"InvalidCxxCompiler|No working C\+\+ compiler found|Failed to find C compiler"),
     "no C/C++ compiler in the image for torch.compile / Triton",
     "set server.enforce_eager = true, or use an image with g++ (Debian: build-essential)"),
    (re.compile(r"CppCompileError"),
     "torch.compile's C++ build failed (the compiler's output is in the log)",
     "set server.enforce_eager = true, or fix the image's compiler setup"),
    (re.compile(r"NCCL error|ncclSystemError|ncclUnhandledCudaError|ncclInternalError|NCCL WARN"),
     "NCCL (multi-GPU communication) failed",
     "look for the NCCL WARN lines above (set NCCL_DEBUG = \"INFO\" in [docker] env for more); in containers raise "
     "shm_size or set ipc = \"host\", and check that the instance's GPUs can reach each other"),
    (re.compile(r"CUDA driver version is insufficient|NVIDIA driver on your system is too old|Found no NVIDIA driver|"
                r"no CUDA-capable device is detected|Error 803: system has unsupported display driver|"
                r"CUDA initialization: .*|Failed to infer device type"),
     "the CUDA driver or GPU is not usable from the server",
     "check control.gpu_ids, the NVIDIA container toolkit, and that the host driver supports the image's CUDA "
     "version (nvidia-smi)"),
]


def last_start(text: str) -> str:
    """The part of a log written since its last start marker (all of it when there is none)."""
    index = text.rfind(START_MARKER)
    if index < 0:
        return text
    return text[text.rfind("\n", 0, index) + 1:]


def diagnose(text: str) -> Diagnosis | None:
    """The first cause (in the order above) whose message is in the log of the last start."""
    text = last_start(text)
    for pattern, cause, fix in _RULES:
        match = pattern.search(text)
        if match:
            values = {k: v.strip() for k, v in match.groupdict().items() if v}
            values.setdefault("model", values.get("model2") or values.get("model3") or "")
            return Diagnosis(cause.format(**values), fix)
    return None


def cause_line(text: str) -> str | None:
    found = diagnose(text)
    return found.line() if found else None
