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
