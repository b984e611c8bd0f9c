"""`vllm-orch logs`: the last lines of a log cost what the tail costs, however big the file, and
`logs -f` keeps following through truncation and rotation, as `tail -F` does."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from orchestrator import logs
from orchestrator.logs import all_lines, follow, tail_lines

POLL_S = 0.01
DEADLINE_S = 3  # a bound on a broken follow, never reached by a working one


class CountingOs:
    """The os module as orchestrator.logs sees it, counting the bytes read through fdopen."""

    def __init__(self) -> None:
        self.bytes_read = 0

    def __getattr__(self, name: str):
        return getattr(os, name)

    def fdopen(self, fd: int, *args, **kwargs):
        handle = os.fdopen(fd, *args, **kwargs)
        counter = self
        read = handle.read

        def counting_read(*a):
            data = read(*a)
            counter.bytes_read += len(data)
            return data

        handle.read = counting_read
        return handle


def test_the_tail_of_a_big_log_reads_only_its_end(tmp_path, monkeypatch):
    log = tmp_path / "big.log"
    with open(log, "wb") as handle:
        handle.truncate(32 << 20)  # 32 MiB of earlier output (sparse: costs no disk)
        handle.seek(0, os.SEEK_END)
        handle.write(b"".join(b"line %d\n" % i for i in range(1000)))
    counting = CountingOs()
    monkeypatch.setattr(logs, "os", counting)
    assert tail_lines(log, 3) == ["line 997", "line 998", "line 999"]
    assert counting.bytes_read <= 128 << 10


def test_tail_edge_cases(tmp_path):
    log = tmp_path / "a.log"
    assert tail_lines(log, 5) == []  # no log yet
    log.write_bytes(b"one\ntwo\nthree")  # the last line still being written
    assert tail_lines(log, 2) == ["two", "three"]
    assert tail_lines(log, 0) == [] and tail_lines(log, 10) == ["one", "two", "three"]
    log.write_bytes(b"caf\xc3\xa9 \xff\n")  # undecodable bytes do not stop the command
    assert tail_lines(log, 1) == ["caf\u00e9 \ufffd"] and all_lines(log) == ["caf\u00e9 \ufffd"]


def test_lines_longer_than_a_read_chunk_come_back_whole(tmp_path):
    log = tmp_path / "a.log"
    long = "x" * (3 * 64 * 1024 + 5)
    log.write_text(f"first\n{long}\nlast\n")
    assert tail_lines(log, 2) == [long, "last"]


def following(path: Path, *, start_at_end: bool = True, on_poll: Callable[[int], None] = lambda n: None,
              deadline_s: float = DEADLINE_S):
    """follow() with a short poll, ending by itself after deadline_s; on_poll(n) runs before its
    n-th round."""
    deadline = time.monotonic() + deadline_s
    rounds = iter(range(1, 1 << 30))

    def stop() -> bool:
        on_poll(next(rounds))
        return time.monotonic() > deadline

    return follow(path, start_at_end=start_at_end, stop=stop, poll_s=POLL_S)


def test_follow_survives_truncation_and_rotation(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("already there\n")

    def append(text: str, path: Path = log) -> None:
        with open(path, "a") as out:
            out.write(text)

    # The first line is written once follow() has opened the file (its second round); the
    # generator then stays open between the writes below.
    lines = following(log, on_poll=lambda n: append("one\n") if n == 2 else None)
    assert next(lines) == "one"
    log.write_text("two\n")  # copytruncate: the same file, emptied and written again
    assert next(lines) == "two"
    log.rename(tmp_path / "a.log.1")  # rotation: a new file under the old name
    append("three\n")
    assert next(lines) == "three"
    append("fo")
    append("ur\nfive\n")
    assert [next(lines), next(lines)] == ["four", "five"]
    lines.close()


def test_follow_from_the_start_yields_what_is_there(tmp_path):
    log = tmp_path / "a.log"
    log.write_text("one\ntwo\n")
    lines = following(log, start_at_end=False)
    assert [next(lines), next(lines)] == ["one", "two"]
    lines.close()


def test_follow_of_a_log_that_appears_later_shows_it_from_its_start(tmp_path):
    log = tmp_path / "a.log"

    def appear(round_: int) -> None:
        if round_ == 2:  # after follow() found no file and waited once
            log.write_text("vllm-orch: starting instance a\n")

    lines = following(log, on_poll=appear, deadline_s=0.3)
    assert next(lines, None) == "vllm-orch: starting instance a"
