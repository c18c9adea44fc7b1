"""The server's NODE and PEER objects (docs/mesh-api.md), checked and typed.

The server is trusted to say who the peers are, but what it sends is still input: a record
that does not parse raises :class:`MapError` (a ValueError) saying which field is wrong, and
the node skips that record instead of stopping. Unknown fields are ignored, so a newer server
can add some. A peer's ICE candidates come from another node: unusable ones are dropped (the
record keeps its other fields) and ``PeerRecord.dropped_candidates`` says why. A ``name``
that is not a DNS name is ignored (the record stays, without a name). A peer's ``routes`` (the
subnets it routes for this node, also in its ``addresses``) are kept out of its allowed IPs
when the node does not accept routes (``wgpy up --accept-routes=false``), and so are those
inside a prefix the node advertises itself (a router keeps its own subnets on its own link,
also while another router of the prefix is primary); ``exit_node`` says the peer may be this
node's exit node.

"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ... import candidates as ice
from ...dns.names import check_name
from ...endpoint import Endpoint
from ...keys import key_from_base64
from ...protocol.allowedips import IPNetwork

__all__ = [
    "DEFAULT_ROUTES",
    "MapError",
    "NodeRecord",
    "PeerRecord",
    "parse_node",
    "parse_peer",
    "parse_time",
]

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
# what a peer that is this node's exit node gets on top of the map's prefixes (never from the map)
DEFAULT_ROUTES: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("0.0.0.0/0"),
    ipaddress.ip_network("::/0"),
)


class MapError(ValueError):
    """A NODE or PEER object that cannot be used."""


def _field(data: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = data.get(name, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise MapError(f"{name!r} has the wrong type")
    return value


def _strings(data: dict[str, Any], name: str) -> tuple[str, ...]:
    values = _field(data, name, list, [])
    if not all(isinstance(v, str) for v in values):
        raise MapError(f"{name!r} is not a list of strings")
    return tuple(values)


def _public_key(data: dict[str, Any]) -> bytes:
    text = data.get("public_key")
    if not isinstance(text, str):
        raise MapError("'public_key' is missing")
    try:
        return key_from_base64(text)
    except ValueError as e:
        raise MapError(f"'public_key' is not a valid WireGuard key: {e}") from None


def parse_time(value: Any) -> float | None:
    """Seconds since the epoch from a number of seconds or an ISO 8601 text (None: never)."""
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise MapError(f"{value!r} is not a time") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    raise MapError("a time is neither a number nor ISO 8601 text")


@dataclass(frozen=True)
class NodeRecord:
    """This node as the server describes it (``self``, or ``node`` in a login reply)."""

    public_key: bytes | None
    hostname: str
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None
    expires_at: float | None
    expired_flag: bool
    ephemeral: bool
    raw: dict[str, Any]
    name: str = ""  # HOST.USER.BASE, canonical; "" when the server gave none

    def expired(self, now: float) -> bool:
        """Whether the node's key has expired at wall-clock time ``now`` (seconds)."""
        return self.expired_flag or (self.expires_at is not None and self.expires_at <= now)

    @property
    def addresses(self) -> list[IPInterface]:
        """The overlay addresses as the interface carries them: /32 and /128."""
        out: list[IPInterface] = []
        if self.ipv4 is not None:
            out.append(ipaddress.IPv4Interface((self.ipv4, 32)))
        if self.ipv6 is not None:
            out.append(ipaddress.IPv6Interface((self.ipv6, 128)))
        return out


def _address(data: dict[str, Any], name: str, version: int) -> Any:
    text = _field(data, name, str, None)
    if text is None:
        return None
    try:
        address = ipaddress.ip_interface(text).ip
    except ValueError:
        raise MapError(f"{name!r} is not an IP address") from None
    if address.version != version:
        raise MapError(f"{name!r} is not an IPv{version} address")
    return address


def parse_node(data: Any) -> NodeRecord:
    if not isinstance(data, dict):
        raise MapError("a node is not a JSON object")
    key = _public_key(data) if data.get("public_key") is not None else None
    return NodeRecord(
        public_key=key,
        hostname=_field(data, "hostname", str, ""),
        ipv4=_address(data, "ipv4", 4),
        ipv6=_address(data, "ipv6", 6),
        expires_at=parse_time(data.get("expires_at")),
        expired_flag=_field(data, "expired", bool, False),
        ephemeral=_field(data, "ephemeral", bool, False),
        raw=data,
        name=_name(data),
    )


def _name(data: dict[str, Any]) -> str:
    """The record's DNS name, canonical, or "" (absent, or not a DNS name)."""
    text = data.get("name")
    if not isinstance(text, str):
        return ""
    try:
        return check_name(text)
    except ValueError:
        return ""


@dataclass(frozen=True)
class PeerRecord:
    """One entry of the netmap: a peer this node may reach or be reached from."""

    public_key: bytes
    hostname: str
    user: str
    allowed_ips: tuple[IPNetwork, ...]
    endpoints: tuple[str, ...]
    tags: tuple[str, ...]
    online: bool
    can_reach: bool  # this node may start flows to the peer
    reachable_from: bool  # the peer may start flows to this node
    # ICE (candidates canonical, wgpy/candidates.py); empty for a peer that reported none
    candidates: tuple[str, ...] = ()
    ice_ufrag: str = ""
    dropped_candidates: tuple[str, ...] = ()  # why each unusable candidate was dropped
    name: str = ""  # HOST.USER.BASE, canonical; "" when the server gave none
    routes: tuple[IPNetwork, ...] = ()  # subnets the peer routes for this node
    exit_node: bool = False  # the peer may be this node's exit node
    # of this node's own routes (default routes too, for an exit node), those the policy
    # lets the peer use through it: all that the router forwards from it (forwarder.py)
    routed_for: tuple[IPNetwork, ...] = ()

    @property
    def endpoint(self) -> tuple[str, int] | None:
        """The first reported endpoint that is a numeric ``ip:port`` (host names are not
        resolved: nodes report addresses)."""
        for text in self.endpoints:
            try:
                endpoint = Endpoint.parse_address(text)
            except ValueError:
                continue
            if endpoint.port:
                return endpoint.as_key()
        return None


def _networks(data: dict[str, Any], name: str) -> list[IPNetwork]:
    networks: list[IPNetwork] = []
    for text in _strings(data, name):
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise MapError(f"{name!r} holds {text!r}, which is not a network") from None
        if network.prefixlen == 0:
            # a default route through a peer (an exit node) needs policy routing; never
            # let a map take over this machine's traffic by accident
            raise MapError(f"{name!r} holds the default route {text!r}")
        networks.append(network)
    return networks


def _prefixes(data: dict[str, Any], name: str) -> tuple[IPNetwork, ...]:
    """Networks, default routes allowed (they only widen what this node forwards for the
    peer, never where this node sends its own traffic)."""
    found = []
    for text in _strings(data, name):
        try:
            found.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise MapError(f"{name!r} holds {text!r}, which is not a network") from None
    return tuple(found)


def parse_peer(
    data: Any, *, accept_routes: bool = True, own_routes: Collection[IPNetwork] = ()
) -> PeerRecord:
    """A PEER; with ``accept_routes`` False, its ``routes`` are left out of its allowed IPs
    (only its own addresses stay), and so are those inside one of ``own_routes`` (the
    prefixes this node advertises)."""
    if not isinstance(data, dict):
        raise MapError("a peer is not a JSON object")
    networks = _networks(data, "addresses")
    routes = tuple(_networks(data, "routes"))
    if not accept_routes:
        networks = [n for n in networks if n not in routes]
    elif own_routes:
        networks = [n for n in networks if n not in routes or not _inside(n, own_routes)]
    return PeerRecord(
        public_key=_public_key(data),
        hostname=_field(data, "hostname", str, ""),
        user=_field(data, "user", str, ""),
        allowed_ips=tuple(networks),
        endpoints=_strings(data, "endpoints"),
        tags=_strings(data, "tags"),
        online=_field(data, "online", bool, False),
        # a missing direction is a denied one
        can_reach=_field(data, "can_reach", bool, False),
        reachable_from=_field(data, "reachable_from", bool, False),
        name=_name(data),
        routes=routes,
        exit_node=_field(data, "exit_node", bool, False),
        routed_for=_prefixes(data, "routed_for"),
        **_ice(data),
    )


def _inside(network: IPNetwork, prefixes: Collection[IPNetwork]) -> bool:
    return any(
        network.version == p.version and network.subnet_of(p)  # type: ignore[arg-type]
        for p in prefixes
    )


def _ice(data: dict[str, Any]) -> dict[str, Any]:
    """The peer's candidates and ufrag; what cannot be used is dropped, with why. An
    ``ice_pwd`` (from a server before per-pair keys) is ignored: the checks' keys are
    derived per pair of nodes, not published."""
    raw = data.get("candidates")
    if raw is None or raw == []:
        return {}
    dropped: list[str] = []
    try:
        ufrag = ice.check_ice_ufrag(data.get("ice_ufrag"))
    except ice.CandidateError as e:
        return {"dropped_candidates": (f"all: the peer's ICE ufrag is unusable ({e})",)}
    if not isinstance(raw, list):
        return {"dropped_candidates": ("all: 'candidates' is not a list",)}
    candidates: list[str] = []
    for i, text in enumerate(raw):
        if i >= ice.MAX_CANDIDATES:
            dropped.append(f"{len(raw) - i} beyond the first {ice.MAX_CANDIDATES}")
            break
        try:
            candidate = ice.check_candidate(text)
        except ice.CandidateError as e:
            dropped.append(f"#{i}: {e}")
            continue
        if candidate not in candidates:
            candidates.append(candidate)
    return {
        "candidates": tuple(candidates),
        "ice_ufrag": ufrag if candidates else "",
        "dropped_candidates": tuple(dropped),
    }
