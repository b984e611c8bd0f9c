"""Start-up failures named from real log tails (tests/fixtures/start-failures, each with its source).
The failures the CPU image can show are also provoked for real in tests/e2e/test_start_failures.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.diagnose import START_MARKER, diagnose

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "start-failures"


@pytest.mark.parametrize("fixture, cause, fix_words", [
    ("kv-cache-no-memory.log", "no GPU memory left for the KV cache after loading the model", "gpu_memory_utilization"),
    ("max-seq-len-over-kv-cache.log", "no room in the KV cache for max_model_len 60000 (it holds 58384 tokens)",
     "lower server.max_model_len"),
    ("free-memory-below-utilization.log",
     "the GPU had only 59.32/79.15 GiB free at start, less than gpu_memory_utilization = 0.9 asks for",
     "another process or instance holds it"),
    ("free-memory-below-utilization-cuda0.log",
     "the GPU had only 19.77/22.05 GiB free at start, less than gpu_memory_utilization = 0.9 asks for",
     "lower server.gpu_memory_utilization"),
    ("cuda-out-of-memory.log", "out of GPU memory", "tensor_parallel_size"),
    ("nccl-shm-segment.log", "/dev/shm is too small for NCCL / PyTorch shared memory", "shm_size"),
    ("nccl-unhandled-system-error.log", "NCCL (multi-GPU communication) failed", "NCCL_DEBUG"),
    ("triton-no-c-compiler.log", "no C/C++ compiler in the image for torch.compile / Triton", "enforce_eager = true"),
    ("cpu-inductor-no-python-headers.log", "torch.compile's C++ build found no Python headers (Python.h) in the image",
     "python3-dev"),
    ("cuda-driver-too-old.log", "the CUDA driver or GPU is not usable from the server", "nvidia-smi"),
])
def test_each_recorded_failure_gets_its_cause_and_fix(fixture, cause, fix_words):
    text = (FIXTURES / fixture).read_text()
    assert text.startswith("# source: "), "every fixture names where it came from"
    found = diagnose(text)
    assert found is not None and found.cause == cause
    assert fix_words in found.fix


@pytest.mark.parametrize("line, cause", [
    # Messages as this machine's vLLM CPU image prints them (tests/e2e/test_start_failures.py provokes each).
    ("RuntimeError: Insufficient space in /dev/shm for shared-memory allocation: 160 MiB required, 64 MiB free. "
     "Increase /dev/shm (e.g. --shm-size or --ipc=host)", "/dev/shm is too small (160 MiB required, 64 MiB free)"),
    ("api_server.py: error: unrecognized arguments: --no-such-flag 3", "vLLM does not accept the argument(s) --no-such-flag 3"),
    ("OSError: [Errno 98] Address already in use", "the server's port is already in use"),
    ("huggingface_hub.errors.HFValidationError: Repo id must use alphanumeric chars, '-', '_' or '.'. The name cannot "
     "start or end with '-' or '.' and the maximum length is 96: '/no-such-model'.",
     "the model path /no-such-model does not exist in the container, so vLLM took it for a Hugging Face Hub name"),
    ("torch._inductor.exc.InvalidCxxCompiler: No working C++ compiler found in torch._inductor.config.cpp.cxx: (None, 'g++')",
     "no C/C++ compiler in the image for torch.compile / Triton"),
])
def test_the_cpu_image_messages(line, cause):
    assert diagnose(f"INFO starting\n{line}\n").cause == cause


def test_only_the_last_start_counts():
    # The log is appended to across restarts: an old failure must not explain a new one.
    old = "2026-01-01T00:00:00Z vllm-orch: starting instance a\nOSError: [Errno 98] Address already in use\n"
    new = f"2026-01-01T00:05:00Z {START_MARKER}a\nINFO loading\nKilled\n"
    assert diagnose(old) is not None
    assert diagnose(old + new) is None


def test_memory_is_named_before_the_nccl_noise_that_follows_it():
    text = ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 MiB.\n"
            "[rank0]:[W423 ProcessGroupNCCL.cpp:1497] Warning: destroy_process_group() was not called\n"
            "NCCL WARN [Service thread] Connection closed\n")
    assert diagnose(text).cause == "out of GPU memory"


def test_a_clean_log_has_no_cause():
    assert diagnose("INFO:     Started server process [1]\nINFO:     Application startup complete.\n") is None
    assert diagnose("") is None


def test_a_secret_file_the_server_cannot_read_names_the_user_to_set():
    log = ("2026-12-02T10:00:00Z vllm-orch: starting instance a\n"
           "cat: /run/secrets/VLLM_API_KEY: Permission denied\n"
           "vllm-orch: cannot read the secret file /run/secrets/VLLM_API_KEY as uid 1000\n")
    found = diagnose(log)
    assert found.cause == "the server (uid 1000) cannot read its secret file /run/secrets/VLLM_API_KEY"
    assert "[docker] user" in found.fix
