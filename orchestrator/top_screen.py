"""`vllm-orch top`'s live view: the table redrawn in place on the terminal's alternate screen.

Each frame is written in one call: cursor home, every line followed by "erase to end of line", then
"erase below" — the old frame is overwritten, never cleared first, so nothing flickers. The
keyboard is read in cbreak mode (no echo, no line buffering) so `q` quits at once; Ctrl-C quits
too. Whatever ends the view, the terminal gets its mode, cursor and main screen back.
"""

from __future__ import annotations

import os
import select
import sys
import time
from typing import Callable, TextIO

ENTER = "\x1b[?1049h\x1b[?25l"  # alternate screen, cursor hidden
LEAVE = "\x1b[?25h\x1b[?1049l"
HOME, ERASE_LINE, ERASE_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"


def frame(lines: list[str], width: int) -> str:
    """One frame: the lines cut to the terminal's width, each erasing what the last frame left."""
    return HOME + "".join(line[:width] + ERASE_LINE + "\r\n" for line in lines) + ERASE_BELOW


def run(draw: Callable[[], list[str]], interval: float, *, keyboard: TextIO = sys.stdin,
        screen: TextIO = sys.stdout) -> None:
    """Redraw every `interval` seconds until `q` (or Ctrl-C); restores the terminal however it ends."""
    import termios
    import tty

    fd = keyboard.fileno()
    saved = termios.tcgetattr(fd)
    screen.write(ENTER)
    screen.flush()
    try:
        tty.setcbreak(fd)
        while True:
            started = time.monotonic()
            lines = draw()
            width = _width(screen)
            screen.write(frame(lines, width))
            screen.flush()
            remaining = max(0.0, interval - (time.monotonic() - started))
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable and b"q" in os.read(fd, 32).lower():
                return
    except KeyboardInterrupt:
        return
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        screen.write(LEAVE)
        screen.flush()


def _width(screen: TextIO) -> int:
    """The terminal's columns; a terminal that says 0 (a fresh pty, a serial console) gets 200."""
    try:
        return os.get_terminal_size(screen.fileno()).columns or 200
    except OSError:
        return 200
