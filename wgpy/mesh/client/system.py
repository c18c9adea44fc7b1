"""The host side of a mesh node: addresses, link state and routes (with ``ip``, through
:mod:`wgpy.host`), and the local addresses the node reports as its endpoints.

:class:`HostNetwork` is the seam: :class:`IpCommand` is the real one; tests pass a fake that
records what would have been done.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from typing import Any, Protocol

from ...host import ip
from ...host.run import HostNetworkError, run_async
from ...protocol.allowedips import IPNetwork
from .netmap import IPInterface

__all__ = ["OVERLAY_NETWORKS", "HostNetwork", "HostNetworkError", "IpCommand"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# the mesh's own ranges: an address in them is not a way to reach this node from outside
OVERLAY_NETWORKS = (
    ipaddress.ip_network("100.64.0.0/10"),
    ipaddress.ip_network("fd7a:115c:a1e0::/48"),
)
IP_TIMEOUT = 10.0  # seconds for one run of `ip`


class HostNetwork(Protocol):
    async def add_address(self, name: str, address: IPInterface) -> None: ...

    async def add_service_address(self, name: str, address: IPInterface) -> None: ...

    async def remove_address(self, name: str, address: IPInterface) -> None: ...

    async def link_up(self, name: str, mtu: int) -> None: ...

    async def set_routes(
        self, name: str, add: Sequence[IPNetwork], remove: Sequence[IPNetwork]
    ) -> None:
        """Route ``add`` through interface ``name`` and stop routing ``remove`` there."""
        ...

    async def local_addresses(self, exclude: str) -> list[IPAddress]:
        """This host's addresses that others may reach it on, but those of ``exclude``."""
        ...


class IpCommand:
    """:class:`HostNetwork` with iproute2's ``ip``."""

    def __init__(self, program: str = "ip") -> None:
        self.program = program

    async def _run(self, argv: list[str], stdin: str | None = None) -> str:
        return await run_async([self.program, *argv[1:]], stdin=stdin, timeout=IP_TIMEOUT)

    async def add_address(self, name: str, address: IPInterface) -> None:
        await self._run(ip.address_replace(name, address))

    async def add_service_address(self, name: str, address: IPInterface) -> None:
        await self._run(ip.service_address_replace(name, address))

    async def remove_address(self, name: str, address: IPInterface) -> None:
        await self._run(ip.address_delete(name, address))

    async def link_up(self, name: str, mtu: int) -> None:
        await self._run(ip.link_up(name, mtu))

    async def set_routes(
        self, name: str, add: Sequence[IPNetwork], remove: Sequence[IPNetwork]
    ) -> None:
        batch = ip.route_batch(name, list(add), list(remove))
        if batch is not None:
            await self._run(*batch)

    async def local_addresses(self, exclude: str) -> list[IPAddress]:
        return parse_ip_addresses(await self._run(ip.addresses_json()), exclude)


def parse_ip_addresses(text: str, exclude: str) -> list[IPAddress]:
    """The usable addresses in ``ip -json address show`` output: global scope, on links that
    are up and not loopback, not tentative, outside the mesh's ranges; IPv4 first."""
    try:
        links: Any = json.loads(text or "[]")
    except ValueError:
        return []
    v4: list[IPAddress] = []
    v6: list[IPAddress] = []
    for link in links if isinstance(links, list) else []:
        if not isinstance(link, dict) or link.get("ifname") == exclude:
            continue
        flags = link.get("flags") or []
        if "LOOPBACK" in flags or "UP" not in flags:
            continue
        for info in link.get("addr_info") or []:
            if not isinstance(info, dict) or info.get("scope") != "global":
                continue
            if info.get("tentative") or info.get("dadfailed") or info.get("deprecated"):
                continue
            try:
                address = ipaddress.ip_address(str(info.get("local")))
            except ValueError:
                continue
            if any(address in network for network in OVERLAY_NETWORKS):
                continue
            (v4 if address.version == 4 else v6).append(address)
    return v4 + v6
