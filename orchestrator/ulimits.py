"""`[docker] ulimits`: the resource limits of a container's processes, read in the spellings
people bring from Compose and `docker run`, and checked before any container is made.

    ulimits = { memlock = -1, nofile = { soft = 65536, hard = 65536 } }   # Compose's spelling
    ulimits = ["memlock=-1", "nofile=65536:65536"]                         # docker run --ulimit

Both give one canonical value, `{name: {"soft": N, "hard": N}}` sorted by name, so the spelling
never counts as a change of the container. -1 is "unlimited" (RLIM_INFINITY), as Docker takes it.
"""

from __future__ import annotations

import re
from typing import Any

# The names the engine accepts (Docker's go-units table; it leaves out "as" on purpose).
NAMES = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss", "rtprio",
         "rttime", "sigpending", "stack")
UNLIMITED = -1
MAX_VALUE = 2**63 - 1  # the engine keeps them as int64
_DOCKER_FORM = re.compile(r"^([a-z]+)=(-?\d+)(?::(-?\d+))?$")

Ulimits = dict[str, dict[str, int]]


def parse_ulimits(value: Any) -> Ulimits:
    """The canonical form of a `ulimits` value; ValueError (one line naming the limit) when the
    engine or the kernel would refuse it at create or start."""
    limits: dict[str, tuple[Any, Any]] = {}
    if isinstance(value, dict):
        for name, limit in value.items():
            if isinstance(limit, dict):
                unknown = sorted(set(limit) - {"soft", "hard"})
                if unknown or "soft" not in limit or "hard" not in limit:
                    raise ValueError(f"{name}: give both soft and hard ({{ soft = N, hard = N }}), "
                                     "or one number for both")
                limits[name] = (limit["soft"], limit["hard"])
            else:
                limits[name] = (limit, limit)
    elif isinstance(value, list):
        for entry in value:
            match = _DOCKER_FORM.match(entry) if isinstance(entry, str) else None
            if not match:
                raise ValueError(f"{str(entry)[:40]!r} is not NAME=SOFT[:HARD] (e.g. \"nofile=65536:65536\")")
            name, soft, hard = match.group(1), int(match.group(2)), int(match.group(3) or match.group(2))
            if name in limits:
                raise ValueError(f"{name} is given twice")
            limits[name] = (soft, hard)
    else:
        raise ValueError("must be a table such as { nofile = 65536 } or a list such as [\"nofile=65536\"]")
    return {name: _checked(name, *limits[name]) for name in sorted(limits)}


def _checked(name: str, soft: Any, hard: Any) -> dict[str, int]:
    if name not in NAMES:
        import difflib  # only for a wrong name

        close = difflib.get_close_matches(name, NAMES, n=1)
        hint = f" (did you mean {close[0]}?)" if close else f" (known: {', '.join(NAMES)})"
        raise ValueError(f"{name[:40]!r} is not a limit the engine knows{hint}")
    for which, number in (("soft", soft), ("hard", hard)):
        if not isinstance(number, int) or isinstance(number, bool):
            raise ValueError(f"{name}: the {which} limit must be an integer, got {str(number)[:40]!r}")
        if number < UNLIMITED or number > MAX_VALUE:
            raise ValueError(f"{name}: the {which} limit must be >= 0, or -1 for unlimited; got {number}")
    if _rlimit(soft) > _rlimit(hard):
        raise ValueError(f"{name}: the soft limit ({soft}) is above the hard limit ({hard})")
    if name == "nofile" and hard == UNLIMITED:
        # The kernel caps open files at fs.nr_open: an unlimited nofile fails the container's start.
        raise ValueError("nofile cannot be unlimited (the kernel caps it at fs.nr_open): give a number, e.g. 1048576")
    return {"soft": soft, "hard": hard}


def _rlimit(number: int) -> int:
    return MAX_VALUE + 1 if number == UNLIMITED else number


def engine_ulimits(limits: Ulimits) -> list[dict[str, Any]]:
    """HostConfig.Ulimits, as docker-py's `Ulimit` builds each entry."""
    return [{"Name": name, "Soft": limit["soft"], "Hard": limit["hard"]} for name, limit in limits.items()]


def compose_ulimits(limits: Ulimits) -> dict[str, Any]:
    """Compose's `ulimits:` (one number where soft and hard are equal, as people write it)."""
    return {name: limit["soft"] if limit["soft"] == limit["hard"] else dict(limit) for name, limit in limits.items()}
