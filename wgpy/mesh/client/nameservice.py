"""The node's resolver as a service of the running node (Tailscale's MagicDNS): the
:mod:`wgpy.dns` server fed with the name table (:mod:`.dns`) on every map change, and the
host's resolver pointed at it (:mod:`.hostdns`) unless ``--accept-dns=false``.

It listens on UDP and TCP port 53 of the fixed service addresses 100.100.100.100 and
fd7a:115c:a1e0::53 (put on the interface here; the server never gives them to a node) and of
the node's overlay addresses. Only queries from overlay or loopback sources are answered
(:func:`overlay_or_loopback`): a host on the underlay that routes to those addresses gets
nothing, so the node is no open resolver. Names outside the base domain are forwarded to the
servers the host's resolv.conf named before the node changed it (read after a crashed run's
leftovers are undone).

:meth:`NameService.start` runs once the first map is in (the base domain comes with the
node's name); :meth:`NameService.update` after each map change; :meth:`NameService.close`
at the end puts the host's DNS back. Nothing here is fatal to the node: what fails is logged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import Any

from ...dns.names import DEFAULT_BASE_DOMAIN, NameTable, build_table
from ...dns.resolver import Resolver
from ...dns.server import Address, DNSServer
from ...dns.upstreams import nameservers
from .dns import name_table
from .hostdns import HostDNS
from .netmap import IPInterface, NodeRecord, PeerRecord
from .system import OVERLAY_NETWORKS, HostNetwork, HostNetworkError

__all__ = ["SERVICE_ADDRESSES", "NameService", "overlay_or_loopback"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SERVICE_ADDRESSES: tuple[IPInterface, ...] = (
    ipaddress.IPv4Interface("100.100.100.100/32"),
    ipaddress.IPv6Interface("fd7a:115c:a1e0::53/128"),
)
PORT = 53


def overlay_or_loopback(source: str) -> bool:
    """Whether a query from ``source`` is answered: from the mesh or from this host."""
    try:
        address = ipaddress.ip_address(source.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or any(address in network for network in OVERLAY_NETWORKS)


class NameService:
    """The resolver of one node; see the module docstring."""

    def __init__(
        self,
        interface: str,
        host: HostNetwork,
        log: Any,
        *,
        host_dns: HostDNS | None,
        port: int = PORT,
        service_addresses: Sequence[IPInterface] = SERVICE_ADDRESSES,
    ) -> None:
        self.interface = interface
        self.host = host
        self.log = log
        self.host_dns = host_dns  # None: --accept-dns=false, the host's DNS is left alone
        self.port = port
        self.service_addresses = tuple(service_addresses)
        self.resolver = Resolver(build_table(DEFAULT_BASE_DOMAIN, []))
        self.servers: list[DNSServer] = []
        self.upstreams: list[Address] = []
        self.listening: list[Address] = []

    @property
    def table(self) -> NameTable:
        return self.resolver.table

    async def start(self, node: NodeRecord, peers: Iterable[PeerRecord]) -> None:
        """Listen, and point the host's resolver here."""
        self.update(node, peers)
        own = [a.ip for a in node.addresses]
        service: list[IPAddress] = []
        for address in self.service_addresses:
            try:
                await self.host.add_address(self.interface, address)
            except HostNetworkError as e:
                self.log.warning("cannot add the resolver's service address", error=str(e))
                continue
            service.append(address.ip)
        if self.host_dns is not None:
            await self.host_dns.recover()
            text = self.host_dns.read()
        else:
            text = _read_resolv_conf()
        self.upstreams = nameservers(text, exclude=[*service, *own])
        for where in [*service, *own]:
            server = DNSServer(
                self.resolver,
                self.upstreams,
                limiter=self.servers[0].limiter if self.servers else None,
                allow=overlay_or_loopback,
            )
            try:
                self.listening.append(await server.start(str(where), self.port))
            except OSError as e:
                self.log.warning(
                    "the resolver cannot listen here",
                    address=str(where),
                    error=e.strerror or str(e),
                )
                continue
            self.servers.append(server)
        self.log.info(
            "resolver up",
            listening=[f"{a}:{p}" for a, p in self.listening],
            upstreams=[f"{a}:{p}" for a, p in self.upstreams],
            base_domain=self.table.base_domain,
        )
        if self.host_dns is None or not self.servers or not node.name:
            return  # nothing to point the host at, or told not to
        answering = [a for a in service if any(s.address and s.address[0] == str(a)
                                                for s in self.servers)]  # fmt: skip
        await self.host_dns.apply(answering or [own[0]], [self.table.base_domain])

    def update(self, node: NodeRecord | None, peers: Iterable[PeerRecord]) -> None:
        """The map changed: answer from its names from now on."""
        if node is None:
            return
        table = name_table(node, peers)
        if table is not None:
            self.resolver.update(table)

    async def close(self) -> None:
        """Stop answering; the host's DNS put back."""
        if self.host_dns is not None:
            await self.host_dns.revert()
        for server in self.servers:
            await server.close()
        self.servers.clear()


def _read_resolv_conf() -> str:
    try:
        with open("/etc/resolv.conf", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""
