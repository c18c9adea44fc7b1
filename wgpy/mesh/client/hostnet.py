"""A mesh node's interface on the host: its overlay addresses, the link, and a route per
allowed IP of its peers (through :class:`~wgpy.mesh.client.system.HostNetwork`).

:class:`HostNet` is made by :class:`~wgpy.mesh.client.node.MeshNode` once the interface is
open, with the interface's name and device; the node passes it values, never itself. What it
cannot do raises :class:`~wgpy.mesh.client.system.HostNetworkError` when the caller asked for
``strict`` (the node turns that into a MeshError before its first map), else it is logged.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ...protocol.allowedips import IPNetwork
from ...protocol.device import Device
from . import reconcile
from .netmap import IPInterface
from .system import HostNetwork, HostNetworkError

__all__ = ["HostNet"]


class HostNet:
    """The addresses and routes this node has put on the host, and the way to change them."""

    def __init__(self, name: str, device: Device, host: HostNetwork, log: Any) -> None:
        self.name = name
        self.device = device
        self.host = host
        self.log = log
        self.addresses: list[IPInterface] = []  # on the interface now
        self.routes: set[IPNetwork] = set()  # through the interface now
        self._routes_lock = asyncio.Lock()

    async def configure(self, addresses: list[IPInterface], mtu: int) -> None:
        """Give the interface the node's first addresses and bring it up; HostNetworkError
        if an IPv4 address cannot be added or the link cannot be brought up."""
        await self.sync_addresses(addresses, strict=True)
        await self.host.link_up(self.name, mtu)

    async def set_addresses(self, addresses: list[IPInterface]) -> None:
        """The node's addresses changed: failures are logged."""
        try:
            await self.sync_addresses(addresses, strict=False)
        except HostNetworkError as e:  # pragma: no cover - strict=False logs instead
            self.log.error("cannot change the overlay addresses", error=str(e))

    async def sync_addresses(self, wanted: list[IPInterface], *, strict: bool) -> None:
        for address in self.addresses:
            if address not in wanted:
                try:
                    await self.host.remove_address(self.name, address)
                except HostNetworkError as e:
                    self.log.warning("cannot remove an old overlay address", error=str(e))
        current: list[IPInterface] = []
        for address in wanted:
            if address in self.addresses:
                current.append(address)
                continue
            try:
                await self.host.add_address(self.name, address)
            except HostNetworkError as e:
                if strict and address.version == 4:
                    raise
                self.log.error("cannot add an overlay address", error=str(e))
                continue
            current.append(address)
        self.addresses = current

    async def sync_routes(self, *, strict: bool) -> None:
        """Route every allowed IP of the device's peers through the interface (but a
        default route: an exit node's is in a table of its own), no more;
        HostNetworkError if that fails and ``strict``, else it is logged and tried again
        next time."""
        async with self._routes_lock:
            device = self.device
            # the default routes of an exit node are the policy routing's (exitroute.py)
            wanted = {
                n
                for p in device.peers.values()
                for n in device.allowed_ips.prefixes(p)
                if n.prefixlen
            }
            changes = reconcile.route_changes(wanted, self.routes)
            if not changes:
                return
            try:
                await self.host.set_routes(self.name, changes.add, changes.remove)
            except HostNetworkError as e:
                if strict:
                    raise
                self.log.error("cannot update the routes; will try again", error=str(e))
                self.routes -= set(changes.remove)  # the additions are tried again next time
                return
            self.routes = wanted
