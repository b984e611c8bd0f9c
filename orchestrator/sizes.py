"""Sizes as Docker and Compose write them ("8g", "512m", plain bytes): the one parser, shared by
the option table (options.py) and the spec (spec.py) without either importing the other."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^(\d+(?:\.\d+)?) ?([kmg]?)b?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
MAX_SIZE = 1 << 50  # far below the engine's int64, far above any host's memory


def parse_size(value: str | int) -> int:
    """Bytes of a size such as "8g", "512m", "1.5G", "64mb" or a plain number of bytes (the
    forms docker-py and Compose both accept); ValueError for anything else."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SIZE:
        return value
    match = _SIZE.match(str(value)) if len(str(value)) <= 32 else None
    if not match:
        raise ValueError(f"{str(value)[:40]!r} is not a size (use a number with b, k, m or g, e.g. \"8g\")")
    size = int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])
    if size > MAX_SIZE:
        raise ValueError(f"{value!r} is larger than the engine accepts (at most 1 PiB)")
    return size
