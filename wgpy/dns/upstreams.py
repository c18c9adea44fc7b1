"""The resolvers the host had: where the node's resolver forwards names outside the mesh.

Pure: it reads the text of a resolv.conf. Like glibc, it takes the first three ``nameserver``
addresses (``MAXNS``; a line that is not an IP address does not count). A scoped IPv6 server
(``fe80::1%eth0``) is then dropped, as is ``0.0.0.0``, and so are the node's own resolver's
addresses, so that it never forwards to itself.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from .names import IPAddress

MAXNS = 3  # glibc's resolv.h
PORT = 53
_NAMESERVER = re.compile(r"^\s*nameserver\s+(\S+)", re.MULTILINE)


def nameservers(resolv_conf: str, *, exclude: Iterable[IPAddress] = ()) -> list[tuple[str, int]]:
    """The upstreams in ``resolv_conf``, in order, as (address, 53)."""
    skip = set(exclude)
    valid: list[IPAddress] = []
    for text in _NAMESERVER.findall(resolv_conf):
        try:
            valid.append(ipaddress.ip_address(text))
        except ValueError:
            continue  # glibc skips it and does not count it
    out: list[tuple[str, int]] = []
    for address in valid[:MAXNS]:
        if address in skip or address.is_unspecified or getattr(address, "scope_id", None):
            continue
        entry = (str(address), PORT)
        if entry not in out:
            out.append(entry)
    return out
