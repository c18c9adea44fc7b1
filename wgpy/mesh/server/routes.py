"""Subnet routes and exit nodes, without I/O: checking the prefixes a node advertises
(``POST /api/v1/node/routes``) and choosing one primary router per prefix.

A node advertises a list of prefixes it can forward to; an admin approves them (or the
policy's ``autoApprovers`` do); an approved prefix of an online router goes into the allowed
IPs of that router for the peers the policy lets reach it. An exit node is a node that
advertises both default routes, ``0.0.0.0/0`` and ``::/0``: it is approved as an exit node
when both are. Of several routers approved for one prefix, one is primary: the one that has
been primary keeps it while it is online; otherwise the online router that advertised first
(then the lowest node id), so the choice is stable and the same on every replica.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import BadRequest
from .models import IPV4_POOL, IPV6_POOL, iso

__all__ = [
    "EXIT_ROUTES",
    "MAX_ROUTES",
    "HostBitsSet",
    "Prefix",
    "Route",
    "Router",
    "is_exit",
    "parse_prefix",
    "parse_routes",
    "primaries",
    "strict_prefix",
]

Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_ROUTES = 64  # prefixes one node may advertise
MAX_PREFIX_TEXT = 64  # characters of one prefix as sent
EXIT_ROUTES: frozenset[Prefix] = frozenset(
    {ipaddress.IPv4Network("0.0.0.0/0"), ipaddress.IPv6Network("::/0")}
)
_OVERLAY: tuple[Prefix, ...] = (IPV4_POOL, IPV6_POOL)


class HostBitsSet(ValueError):
    """A prefix written with host bits set (``192.168.1.7/24``); ``network`` is the network it
    lies in (``192.168.1.0/24``), for a "did you mean" in the caller's own sentence."""

    def __init__(self, text: str, network: Prefix) -> None:
        super().__init__(f'"{text}" has host bits set; the network is {network}')
        self.network = network


def strict_prefix(text: str) -> Prefix:
    """``text`` as an IP network in its network form (a bare address is its one-address
    prefix). Raises :class:`HostBitsSet` (a ValueError) carrying the network when host bits are
    set, and a plain ValueError when ``text`` is no prefix at all; callers word their own
    errors."""
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        pass
    loose = ipaddress.ip_network(text, strict=False)  # a ValueError here: not a prefix at all
    raise HostBitsSet(text, loose)


def parse_prefix(text: object) -> Prefix:
    """One advertised prefix, in its network form (``192.168.1.0/24``, not ``192.168.1.7/24``);
    BadRequest with the reason otherwise. A default route is a prefix like any other here
    (:func:`is_exit` tells the two apart); a prefix inside or around the overlay range is
    refused: the mesh's own addresses are routed by the mesh."""
    if not isinstance(text, str) or not text or len(text) > MAX_PREFIX_TEXT:
        raise BadRequest("each route must be a prefix such as 192.168.1.0/24 or fd00:1::/64")
    if "/" not in text:
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            pass
        else:
            raise BadRequest(
                f'the route "{text}" has no prefix length; write it as {address}/'
                f"{address.max_prefixlen} for the one address"
            )
    try:
        prefix = strict_prefix(text)
    except HostBitsSet as e:
        raise BadRequest(
            f'the route "{text}" has host bits set; advertise the network {e.network}'
        ) from None
    except ValueError:
        raise BadRequest(
            f'"{text}" is not a prefix; write one such as 192.168.1.0/24 or fd00:1::/64'
        ) from None
    if prefix not in EXIT_ROUTES:
        for overlay in _OVERLAY:
            if prefix.version == overlay.version and prefix.overlaps(overlay):
                raise BadRequest(
                    f"the route {prefix} overlaps the mesh's own range {overlay}; "
                    "advertise only networks outside it"
                )
    if prefix.is_multicast or prefix.is_link_local:
        raise BadRequest(f"the route {prefix} is link-local or multicast and cannot be routed")
    return prefix


def parse_routes(value: object) -> tuple[Prefix, ...]:
    """The list a node advertises: each checked by :func:`parse_prefix`, at most
    :data:`MAX_ROUTES`, duplicates dropped, sorted (IPv4 first), so that advertising the same
    set in another order changes nothing."""
    if not isinstance(value, list):
        raise BadRequest('"routes" must be a list of prefixes such as ["192.168.1.0/24"]')
    if len(value) > MAX_ROUTES:
        raise BadRequest(f"a node may advertise at most {MAX_ROUTES} routes, not {len(value)}")
    return sort_prefixes({parse_prefix(item) for item in value})


def sort_prefixes(prefixes: Iterable[Prefix]) -> tuple[Prefix, ...]:
    return tuple(sorted(prefixes, key=lambda p: (p.version, p.network_address.packed, p.prefixlen)))


def is_exit(approved: Iterable[Prefix]) -> bool:
    """Whether a node with these approved prefixes is an exit node (both default routes)."""
    return set(approved) >= EXIT_ROUTES


@dataclass(frozen=True)
class Route:
    """One node's prefix as the store keeps it (migration 11): advertised (since when), approved
    (when, by whom: an admin's name or ``policy``), and whether the node is its primary router.
    It is served (peers may route it through the node) while advertised and approved."""

    node_id: int
    node: str  # the node's hostname
    user: str  # the node's user
    prefix: Prefix
    advertised_at: float | None
    approved_at: float | None
    approved_by: str | None
    primary: bool = False

    @property
    def advertised(self) -> bool:
        return self.advertised_at is not None

    @property
    def approved(self) -> bool:
        return self.approved_at is not None

    @property
    def served(self) -> bool:
        return self.advertised and self.approved

    @property
    def exit(self) -> bool:
        return self.prefix in EXIT_ROUTES

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node_id,
            "name": self.node,
            "user": self.user,
            "prefix": str(self.prefix),
            "advertised": self.advertised,
            "advertised_at": iso(self.advertised_at),
            "approved": self.approved,
            "approved_at": iso(self.approved_at),
            "approved_by": self.approved_by,
            "primary": self.primary,
            "exit": self.exit,
        }


@dataclass(frozen=True)
class Router:
    """One node's approved prefix, as :func:`primaries` sees it."""

    node_id: int
    prefix: Prefix
    advertised_at: float
    online: bool


def primaries(routers: Iterable[Router], previous: Mapping[Prefix, int]) -> dict[Prefix, int]:
    """The primary router (node id) of each prefix that has an online router: the previous
    primary while it is online, else the online router that advertised the prefix first (then
    the lowest node id). Prefixes with no online router have none. Exit routes are left out:
    a node chooses its exit node itself."""
    online: dict[Prefix, list[Router]] = {}
    for r in routers:
        if r.online and r.prefix not in EXIT_ROUTES:
            online.setdefault(r.prefix, []).append(r)
    chosen = {}
    for prefix, candidates in online.items():
        ids = {r.node_id for r in candidates}
        before = previous.get(prefix)
        if before is not None and before in ids:
            chosen[prefix] = before
        else:
            chosen[prefix] = min(candidates, key=lambda r: (r.advertised_at, r.node_id)).node_id
    return chosen
