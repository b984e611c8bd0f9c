"""Host addresses as the checks read them: one loopback rule for every target and side service
(`validate`, the Kubernetes export, the gateway), so "LOCALHOST" means the same everywhere."""

from __future__ import annotations

import functools
import ipaddress
from typing import Any


@functools.lru_cache(maxsize=256)  # the same few addresses, once per instance
def ip_address(host: str) -> Any:
    """The address `host` is, or None when it is not an IP address."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only: "localhost" in any case (host names are
    case-insensitive, a trailing dot is the root), a *.localhost name, or a loopback address."""
    name = host.strip().lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    address = ip_address(name.strip("[]"))
    return address is not None and address.is_loopback


def bind_refused(address: str, port: int) -> str | None:
    """Why a TCP port cannot be bound on this machine now (the OS's words), None when it can:
    one bind, released at once, as the engine's own publish would do it."""
    import socket

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None
