"""The node's name table from its map: pure glue between the netmap (netmap.py) and the
resolver (wgpy/dns/).

The server names every node ``HOST.USER.BASE`` (``name`` in NODE and PEER). HOST and USER are
one label each, so this node's own name gives the base domain and its user; the table then
holds this node and every peer in the map that has a name, with the peer's overlay addresses
(its single-address entries in the overlay ranges: a subnet it routes for is not its name's
address). A server that sends no names (one from before names) gives no table.

:func:`split_domains` reads the admin's split DNS domains from ``GET /api/v1/node/dns``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from ...dns.names import Host, IPAddress, NameTable, build_table, check_name
from .netmap import NodeRecord, PeerRecord
from .system import OVERLAY_NETWORKS

MAX_SPLIT_DOMAINS = 32
MAX_RESOLVERS = 3


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


def split_domains(data: Any, base_domain: str) -> dict[str, list[tuple[str, int]]]:
    """The split DNS domains in the server's DNS settings (``{"domains": {DOMAIN: [ADDRESS,
    ...]}}``) as domain -> resolvers (address, 53); ValueError if they are unusable. A domain
    that is the base domain or under it is refused (the node answers those itself)."""
    domains = data.get("domains") if isinstance(data, dict) else None
    if domains is None:
        return {}
    if not isinstance(domains, dict) or len(domains) > MAX_SPLIT_DOMAINS:
        raise ValueError(f"'domains' is not an object of at most {MAX_SPLIT_DOMAINS} domains")
    out: dict[str, list[tuple[str, int]]] = {}
    for domain, resolvers in domains.items():
        name = check_name(str(domain))
        if name == base_domain or name.endswith("." + base_domain):
            raise ValueError(f"the split domain {name} is under the base domain")
        if not isinstance(resolvers, list) or not 1 <= len(resolvers) <= MAX_RESOLVERS:
            raise ValueError(f"{name} has not 1 to {MAX_RESOLVERS} resolvers")
        try:
            out[name] = [(str(ipaddress.ip_address(str(r))), 53) for r in resolvers]
        except ValueError:
            raise ValueError(f"{name} has a resolver that is not an IP address") from None
    return out
