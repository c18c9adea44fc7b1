"""The host side of a mesh node: addresses, link state and routes (with ``ip``), and the
local addresses the node reports as its endpoints.

:class:`HostNetwork` is the seam: :class:`IpCommand` is the real one; tests pass a fake that
records what would have been done.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Sequence
from typing import Any, Protocol

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


class HostNetworkError(Exception):
    """An ``ip`` command failed; the message says which and why."""


class HostNetwork(Protocol):
    async def add_address(self, name: str, address: IPInterface) -> None: ...

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

    async def _run(self, *args: str, stdin: str | None = None) -> str:
        argv = [self.program, *args]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as e:
            raise HostNetworkError(f"cannot run `{self.program}': {e.strerror or e}") from None
        try:
            async with asyncio.timeout(IP_TIMEOUT):
                out, err = await proc.communicate(None if stdin is None else stdin.encode())
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise HostNetworkError(f"`{' '.join(argv)}' did not finish in time") from None
        if proc.returncode:
            lines = [line.strip() for line in err.decode(errors="replace").splitlines()]
            detail = next((line for line in lines if line), f"exit status {proc.returncode}")
            raise HostNetworkError(f"`{' '.join(argv)}' failed: {detail}")
        return out.decode(errors="replace")

    async def add_address(self, name: str, address: IPInterface) -> None:
        extra = ("nodad",) if address.version == 6 else ()
        await self._run("address", "replace", str(address), "dev", name, *extra)

    async def remove_address(self, name: str, address: IPInterface) -> None:
        await self._run("address", "del", str(address), "dev", name)

    async def link_up(self, name: str, mtu: int) -> None:
        await self._run("link", "set", "dev", name, "mtu", str(mtu), "up")

    async def set_routes(
        self, name: str, add: Sequence[IPNetwork], remove: Sequence[IPNetwork]
    ) -> None:
        # one `ip` for the lot; -force goes on past a route that is already gone
        lines = [f"route del {network} dev {name}" for network in remove]
        lines += [f"route replace {network} dev {name}" for network in add]
        if lines:
            await self._run("-force", "-batch", "-", stdin="\n".join(lines) + "\n")

    async def local_addresses(self, exclude: str) -> list[IPAddress]:
        return parse_ip_addresses(await self._run("-json", "address", "show"), exclude)


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
