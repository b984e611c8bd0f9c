"""top's live view on a real pseudo-terminal: frames overwrite in place, `q` and Ctrl-C quit, and
the terminal gets its mode and main screen back."""

from __future__ import annotations

import os
import pty
import signal
import sys
import termios
import time

import pytest

from orchestrator.top_screen import ENTER, ERASE_BELOW, HOME, LEAVE, frame

CHILD = """
import sys, termios
from orchestrator.top_screen import run
before = termios.tcgetattr(0)
n = [0]
def draw():
    n[0] += 1
    return [f"frame {n[0]}", "row"]
run(draw, 0.1)
sys.stdout.write("RESTORED" if termios.tcgetattr(0) == before else "CHANGED")
sys.stdout.flush()
"""


def run_in_pty(send: bytes | None, sig: int | None = None) -> str:
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-c", CHILD])
    out = b""
    deadline = time.monotonic() + 20
    while b"frame 3" not in out and time.monotonic() < deadline:
        out += os.read(fd, 4096)
    if send is not None:
        os.write(fd, send)
    if sig is not None:
        os.kill(pid, sig)
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    return out.decode(errors="replace")


@pytest.mark.parametrize("send,sig", [(b"q", None), (None, signal.SIGINT)])
def test_quits_and_restores_the_terminal(send, sig):
    out = run_in_pty(send, sig)
    assert out.startswith(ENTER) and LEAVE in out and out.rstrip().endswith("RESTORED")
    assert "\x1b[2J" not in out  # never cleared (that is what flickers): overwritten in place


def test_a_frame_overwrites_the_last_one():
    text = frame(["abcdef", "x"], width=3)
    assert text.startswith(HOME) and text.endswith(ERASE_BELOW)
    assert "abc\x1b[K\r\n" in text and "abcd" not in text
