"""DNS servers for an interface through ``resolvconf``, as wg-quick sets them."""

from __future__ import annotations

import re

__all__ = ["add", "delete", "interface_name", "records"]

RESOLVCONF = "resolvconf"


def interface_name(name: str, interface_order: str | None) -> str:
    """The name to register ``name``'s servers under: with the first ``PREFIX*`` pattern of
    /etc/resolvconf/interface-order (``interface_order``, None if there is none) as its
    prefix, so that resolvconf orders it as the system expects (``tun.wg0``)."""
    for line in (interface_order or "").splitlines():
        match = re.fullmatch(r"([A-Za-z0-9-]+)\*", line.strip())
        if match:
            return f"{match.group(1)}.{name}"
    return name


def records(servers: list[str], search: list[str]) -> str:
    """The resolv.conf lines that :func:`add` reads on stdin."""
    text = "".join(f"nameserver {server}\n" for server in servers)
    if search:
        text += f"search {' '.join(search)}\n"
    return text


def add(name: str) -> list[str]:
    """Register the servers on stdin as ``name``'s (exclusive, highest priority)."""
    return [RESOLVCONF, "-a", name, "-m", "0", "-x"]


def delete(name: str) -> list[str]:
    return [RESOLVCONF, "-d", name, "-f"]
