"""Fixtures shared by the tiers."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session")
def fresh_option_table_cache(tmp_path_factory):
    """An empty option-table cache for the session, so every run asks the images themselves
    (a throwaway container per image, as on a new host) instead of reading this machine's
    ~/.cache; subprocesses of the CLI inherit it through the environment."""
    before = os.environ.get("VLLM_ORCH_CACHE_DIR")
    os.environ["VLLM_ORCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("vllm-orch-cache"))
    yield
    if before is None:
        os.environ.pop("VLLM_ORCH_CACHE_DIR", None)
    else:
        os.environ["VLLM_ORCH_CACHE_DIR"] = before


@pytest.fixture(scope="session", autouse=True)
def _secret_files_of_the_session(tmp_path_factory):
    """The secret files `up` writes (orchestrator/secret_files.py) go to a directory of the
    session, not the host's /var/lib/vllm-orch/secrets; subprocesses inherit it."""
    before = os.environ.get("VLLM_ORCH_SECRETS_DIR")
    os.environ["VLLM_ORCH_SECRETS_DIR"] = str(tmp_path_factory.mktemp("vllm-orch-secrets"))
    yield
    if before is None:
        os.environ.pop("VLLM_ORCH_SECRETS_DIR", None)
    else:
        os.environ["VLLM_ORCH_SECRETS_DIR"] = before


_exit_status: list[int] = []


def pytest_sessionfinish(session, exitstatus) -> None:
    _exit_status.append(int(exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config) -> None:
    """A thread a failed test left running (a client loop whose stop was never set) would keep
    the interpreter alive after the summary and hang CI until its time limit: name it and end
    the run with pytest's own exit status instead."""
    import sys
    import threading

    left = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon and t.is_alive()]
    for thread in left:
        thread.join(5)
    left = [t for t in left if t.is_alive()]
    if left and _exit_status:
        print(f"pytest: threads left running by the tests: {', '.join(t.name for t in left)}; exiting",
              file=sys.stderr, flush=True)
        os._exit(_exit_status[-1])
