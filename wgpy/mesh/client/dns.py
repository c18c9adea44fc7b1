"""The node's name table from its map: pure glue between the netmap (netmap.py) and the
resolver (wgpy/dns/).

The server names every node ``HOST.USER.BASE`` (``name`` in NODE and PEER). HOST and USER are
one label each, so this node's own name gives the base domain and its user; the table then
holds this node and every peer in the map that has a name, with the peer's overlay addresses
(its single-address entries in the overlay ranges: a subnet it routes for is not its name's
address). A server that sends no names (one from before names) gives no table.
"""

from __future__ import annotations

from collections.abc import Iterable

from ...dns.names import Host, IPAddress, NameTable, build_table
from .netmap import NodeRecord, PeerRecord
from .system import OVERLAY_NETWORKS


def name_table(node: NodeRecord, peers: Iterable[PeerRecord]) -> NameTable | None:
    """The names this node answers for, or None when its own record has no name."""
    parts = node.name.split(".", 2)
    if len(parts) < 3:
        return None
    _, user, base_domain = parts
    hosts = [Host(node.name, tuple(a.ip for a in node.addresses))]
    hosts.extend(Host(p.name, overlay_addresses(p)) for p in peers if p.name)
    return build_table(base_domain, hosts, self_user=user, networks=OVERLAY_NETWORKS)


def overlay_addresses(peer: PeerRecord) -> tuple[IPAddress, ...]:
    """The peer's own addresses: its /32 and /128 entries inside the overlay ranges."""
    return tuple(
        network.network_address
        for network in peer.allowed_ips
        if network.num_addresses == 1
        and any(network.network_address in pool for pool in OVERLAY_NETWORKS)
    )
