"""What a map message asks of the node, worked out without I/O.

The node (:mod:`wgpy.mesh.client.node`) hands each message of the map stream, with a
:class:`Current` (the map as applied, the device's peers, whether the node has expired), to
one function here per message type: :func:`full_map`, :func:`peer_upsert`,
:func:`peer_remove`, :func:`peer_online`, :func:`self_update`. Each returns a :class:`Plan`:
the operations that bring the node in step, in the order they are to be applied, and the
input it skipped (for the log). The node applies the operations; nothing here touches the
device, the host, the state directory or a clock (wall-clock time comes in ``Current.now``).
A new message type is one more function of the same shape.

The rules, as the node has always applied them:

- the device's peers are the truth for which peers exist; a full map is applied as a diff
  (peers not in it removed, the others added or updated), and a peer whose entry did not
  change gives no operation at all;
- the server's endpoint replaces the device's only when the server's view changed: a peer
  that roamed (WireGuard learns that from its packets) keeps the address it roamed to;
- a peer that policy does not let start flows to this node gets a reply-only inbound filter;
  a filter already there is kept, with the flows it tracks;
- this node's own key is never a peer;
- an expired node has no peers: it says so once, removes them all and ignores upserts until
  it is valid again; a ``self`` delta that says so asks for a fresh full map (:class:`Resync`).

What the server sends is parsed by :mod:`wgpy.mesh.client.netmap`: a record it rejects is
skipped (a :class:`Skipped` in the plan) and the rest of the message still applies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Set
from dataclasses import dataclass
from typing import Any, Literal

from ...keys import key_from_base64
from ...protocol.allowedips import IPNetwork
from .netmap import (
    DEFAULT_ROUTES,
    IPInterface,
    MapError,
    NodeRecord,
    PeerRecord,
    parse_node,
    parse_peer,
)

__all__ = [
    "AddPeer",
    "Current",
    "DeviceOperation",
    "DevicePeer",
    "Expire",
    "ForgetPeer",
    "Operation",
    "Plan",
    "RemovePeer",
    "Resync",
    "Revive",
    "RouteChanges",
    "SendStaged",
    "SetAddresses",
    "SetAllowedIPs",
    "SetEndpoint",
    "SetIce",
    "SetInboundFilter",
    "SetSelf",
    "SetVersion",
    "Skipped",
    "StorePeer",
    "exit_node_changed",
    "full_map",
    "key_expired",
    "peer_ice",
    "peer_online",
    "peer_remove",
    "peer_upsert",
    "route_changes",
    "self_update",
    "tear_down",
    "wanted_allowed_ips",
]

# an endpoint as the netmap gives it (the type of PeerRecord.endpoint): numeric host, port
MapEndpoint = tuple[str, int]

EXPIRED_AT_SERVER = "this node has expired at the coordination server"
EXPIRED_AT_SERVER_CONTROL = "the node's key has expired at the server"
KEY_EXPIRED = "this node's key has expired"
KEY_EXPIRED_CONTROL = "the node's key has expired"


# ---------------------------------------------------------------------- the current state


@dataclass(frozen=True)
class DevicePeer:
    """A peer as the device holds it, as far as reconciling needs to know."""

    allowed_ips: frozenset[IPNetwork]
    reply_only: bool  # an inbound filter lets in only replies to flows this node started


@dataclass(frozen=True)
class Current:
    """What the node has now. The mappings are read, never changed."""

    public_key: bytes  # this node's: never a peer
    peers: Mapping[bytes, PeerRecord]  # the map as applied, by public key
    device: Mapping[bytes, DevicePeer]  # the device's peers, by public key
    expired: bool = False  # expired or refused by the server: no peers
    now: float = 0.0  # wall-clock seconds, for the node's expiry time
    accept_routes: bool = True  # False: peers' subnet routes stay out of their allowed IPs
    own_routes: frozenset[IPNetwork] = frozenset()  # advertised here: never through a peer
    exit_node: bytes | None = None  # the peer this node sends all its traffic to (exitnode.py)


# ---------------------------------------------------------------------- operations


@dataclass(frozen=True)
class AddPeer:
    """Add a peer to the device with these allowed IPs (and endpoint, if known)."""

    public_key: bytes
    endpoint: MapEndpoint | None
    allowed_ips: tuple[IPNetwork, ...]
    hostname: str  # for the log


@dataclass(frozen=True)
class RemovePeer:
    """Remove a peer from the device (its sessions and allowed IPs go with it)."""

    public_key: bytes
    hostname: str | None  # for the log, if the map knew the peer


@dataclass(frozen=True)
class SetEndpoint:
    public_key: bytes
    endpoint: MapEndpoint


@dataclass(frozen=True)
class SetAllowedIPs:
    """Replace the peer's allowed IPs with these."""

    public_key: bytes
    allowed_ips: tuple[IPNetwork, ...]


@dataclass(frozen=True)
class SetInboundFilter:
    """Let in only replies to flows this node started (``reply_only``), or everything."""

    public_key: bytes
    reply_only: bool


@dataclass(frozen=True)
class SendStaged:
    """Something about the peer changed: send what waits for it now."""

    public_key: bytes


@dataclass(frozen=True)
class SetIce:
    """The peer's ICE changed (its candidates or ufrag): its path manager checks again; all
    empty: the peer reports none (its endpoint is the map's, with WireGuard's roaming)."""

    public_key: bytes
    ufrag: str
    candidates: tuple[str, ...]


DeviceOperation = AddPeer | RemovePeer | SetEndpoint | SetAllowedIPs | SetInboundFilter | SendStaged


@dataclass(frozen=True)
class StorePeer:
    """Keep this record as the peer's entry in the map (policy flags, ``wgpy status``)."""

    record: PeerRecord


@dataclass(frozen=True)
class ForgetPeer:
    public_key: bytes


@dataclass(frozen=True)
class SetSelf:
    """Keep this description of the node (and save it in the state directory)."""

    node: NodeRecord


@dataclass(frozen=True)
class SetAddresses:
    """Give the interface exactly these overlay addresses."""

    addresses: tuple[IPInterface, ...]


@dataclass(frozen=True)
class SetVersion:
    """The version the full map says it is (for the log)."""

    version: Any


@dataclass(frozen=True)
class Expire:
    """The node has expired or was refused: no peers until it logs in again (the
    :class:`RemovePeer` operations follow). ``announce``: say so in the log (not again
    when already expired and without peers); ``control_error``: record the control state
    as expired with this sentence (None: leave it)."""

    why: str
    control_error: str | None
    announce: bool


@dataclass(frozen=True)
class Revive:
    """The node is valid again at the server."""


@dataclass(frozen=True)
class Resync:
    """Drop the map stream and open a new one at once, for a fresh full map."""


Operation = (
    DeviceOperation
    | SetIce
    | StorePeer
    | ForgetPeer
    | SetSelf
    | SetAddresses
    | SetVersion
    | Expire
    | Revive
    | Resync
)


@dataclass(frozen=True)
class Skipped:
    """Input that was not used: ``event`` is the log line, ``error`` what was wrong."""

    event: str
    error: str | None = None
    level: Literal["warning", "error"] = "warning"


@dataclass(frozen=True)
class Plan:
    operations: tuple[Operation, ...] = ()
    skipped: tuple[Skipped, ...] = ()


# ---------------------------------------------------------------------- one function per message


def full_map(message: Mapping[str, Any], current: Current) -> Plan:
    """``full``: this node (if it parses), the version, and every peer, applied as a diff."""
    ops: list[Operation] = []
    skipped: list[Skipped] = []
    expired = current.expired
    try:
        node = parse_node(message.get("self"))
    except MapError as e:
        skipped.append(Skipped("the full map's self is unusable: kept as it was", str(e), "error"))
    else:
        ops += _apply_self(node, current, in_full_map=True)
        expired = node.expired(current.now)
    ops.append(SetVersion(message.get("version")))
    desired: dict[bytes, PeerRecord] = {}
    entries = message.get("peers")
    for entry in entries if isinstance(entries, list) else []:
        try:
            peer = parse_peer(
                entry, accept_routes=current.accept_routes, own_routes=current.own_routes
            )
        except MapError as e:
            skipped.append(Skipped("unusable peer in the map: skipped", str(e)))
            continue
        skipped += _dropped_candidates(peer)
        if peer.public_key != current.public_key:
            desired[peer.public_key] = peer
    if expired:
        desired = {}
    gone = {op.public_key for op in ops if isinstance(op, RemovePeer)}  # by a tear-down
    for key in list(current.device):
        if key not in desired and key not in gone:
            ops += _remove(key, current)
    for peer in desired.values():
        ops += _upsert(peer, current)
    return Plan(tuple(ops), tuple(skipped))


def peer_upsert(message: Mapping[str, Any], current: Current) -> Plan:
    """``peer_upsert``: one peer added or changed (ignored while the node is expired)."""
    if current.expired:
        return Plan()
    try:
        peer = parse_peer(
            message.get("peer"), accept_routes=current.accept_routes, own_routes=current.own_routes
        )
    except MapError as e:
        return Plan(skipped=(Skipped("unusable peer in the map: skipped", str(e)),))
    return Plan(tuple(_upsert(peer, current)), tuple(_dropped_candidates(peer)))


def peer_remove(message: Mapping[str, Any], current: Current) -> Plan:
    """``peer_remove``: one peer gone."""
    try:
        key = key_from_base64(str(message.get("public_key")))
    except ValueError:
        return Plan(skipped=(Skipped("peer_remove without a valid public key: skipped"),))
    return Plan(tuple(_remove(key, current)))


def peer_online(message: Mapping[str, Any], current: Current) -> Plan:
    """``peer_online``: only what ``wgpy status`` shows changes; nothing on the device.
    A line that names no known peer or carries no boolean is ignored."""
    try:
        key = key_from_base64(str(message.get("public_key")))
    except ValueError:
        return Plan()
    record = current.peers.get(key)
    online = message.get("online")
    if record is None or not isinstance(online, bool) or record.online == online:
        return Plan()
    return Plan((StorePeer(dataclasses.replace(record, online=online)),))


def self_update(message: Mapping[str, Any], current: Current) -> Plan:
    """``self``: this node changed (addresses, expiry)."""
    try:
        node = parse_node(message.get("self"))
    except MapError as e:
        return Plan(skipped=(Skipped("unusable self update: skipped", str(e)),))
    return Plan(tuple(_apply_self(node, current, in_full_map=False)))


# ---------------------------------------------------------------------- outside the stream


def exit_node_changed(old: bytes | None, current: Current) -> Plan:
    """The exit node changed from ``old`` to ``current.exit_node`` (either may be None): the
    old one's allowed IPs lose the default routes, the new one's gain them."""
    ops: list[Operation] = []
    for key in dict.fromkeys((old, current.exit_node)):
        record = None if key is None else current.peers.get(key)
        device = None if key is None else current.device.get(key)
        if record is None or device is None:
            continue
        wanted = wanted_allowed_ips(record, current)
        if device.allowed_ips != frozenset(wanted):
            ops += [SetAllowedIPs(record.public_key, wanted), SendStaged(record.public_key)]
    return Plan(tuple(ops))


def tear_down(current: Current, why: str, control_error: str | None = None) -> Plan:
    """No peers until the node logs in again: ``why`` starts the sentence in the log."""
    return Plan(tuple(_tear_down(current, why, control_error)))


def key_expired(node: NodeRecord | None, current: Current) -> Plan:
    """The node's key ran out while the map stream said nothing: tear down, once."""
    if node is None or current.expired or not node.expired(current.now):
        return Plan()
    return tear_down(current, KEY_EXPIRED, KEY_EXPIRED_CONTROL)


@dataclass(frozen=True)
class RouteChanges:
    add: tuple[IPNetwork, ...] = ()
    remove: tuple[IPNetwork, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


def route_changes(wanted: Set[IPNetwork], installed: Set[IPNetwork]) -> RouteChanges:
    """The routes to add and remove so that exactly ``wanted`` go through the interface;
    IPv4 first, longest prefixes first (a stable order for ``ip -batch``)."""
    return RouteChanges(
        tuple(sorted(wanted - installed, key=_route_order)),
        tuple(sorted(installed - wanted, key=_route_order)),
    )


def _route_order(network: IPNetwork) -> tuple[int, int, int]:
    return network.version, -network.prefixlen, int(network.network_address)


# ---------------------------------------------------------------------- the rules


def wanted_allowed_ips(peer: PeerRecord, current: Current) -> tuple[IPNetwork, ...]:
    """The peer's allowed IPs on the device: the map's, and the default routes for the exit
    node (the map never carries those: the node that chose the exit node adds them)."""
    if peer.public_key != current.exit_node:
        return peer.allowed_ips
    return peer.allowed_ips + tuple(n for n in DEFAULT_ROUTES if n not in peer.allowed_ips)


def _upsert(peer: PeerRecord, current: Current) -> list[Operation]:
    key = peer.public_key
    if key == current.public_key:
        return []
    endpoint = peer.endpoint
    device = current.device.get(key)
    ops: list[Operation] = []
    allowed_ips = wanted_allowed_ips(peer, current)
    if device is None:
        ops.append(AddPeer(key, endpoint, allowed_ips, peer.hostname))
        if not peer.reachable_from:
            ops.append(SetInboundFilter(key, reply_only=True))
        ops.append(StorePeer(peer))
        ice = peer_ice(peer, None)
        return ops if ice is None else [*ops, ice]
    if device.allowed_ips != frozenset(allowed_ips):
        ops.append(SetAllowedIPs(key, allowed_ips))
    applied = current.peers.get(key)
    if endpoint is not None and (applied.endpoint if applied else None) != endpoint:
        ops.append(SetEndpoint(key, endpoint))
    if device.reply_only == peer.reachable_from:
        ops.append(SetInboundFilter(key, reply_only=not peer.reachable_from))
    if applied != peer:
        ops.append(StorePeer(peer))
    if ops:
        ops.append(SendStaged(key))
    ice = peer_ice(peer, applied)
    return ops if ice is None else [*ops, ice]


def peer_ice(peer: PeerRecord, applied: PeerRecord | None) -> SetIce | None:
    """What the peer's ICE fields ask: :class:`SetIce` when they differ from the applied
    record's (a new peer: when it has any), else None. The fields are checked where they
    are used (:func:`wgpy.nat.ice.parse_remote`), not here."""
    fields = (peer.ice_ufrag, peer.candidates)
    before = ("", ()) if applied is None else (applied.ice_ufrag, applied.candidates)
    if fields == before:
        return None
    return SetIce(peer.public_key, *fields)


def _dropped_candidates(peer: PeerRecord) -> list[Skipped]:
    """A peer's ICE candidates that were unusable (netmap.py dropped them), for the log."""
    if not peer.dropped_candidates:
        return []
    why = "; ".join(peer.dropped_candidates)
    return [Skipped(f"unusable ICE candidates of peer {peer.hostname!r} dropped", why[:500])]


def _remove(key: bytes, current: Current) -> list[Operation]:
    record = current.peers.get(key)
    ops: list[Operation] = []
    if record is not None:
        ops.append(ForgetPeer(key))
    if key in current.device:
        ops.append(RemovePeer(key, record.hostname if record else None))
    return ops


def _tear_down(current: Current, why: str, control_error: str | None) -> list[Operation]:
    announce = not current.expired or bool(current.device)
    ops: list[Operation] = [Expire(why, control_error, announce)]
    for key in list(current.device):
        ops += _remove(key, current)
    return ops


def _apply_self(node: NodeRecord, current: Current, *, in_full_map: bool) -> list[Operation]:
    ops: list[Operation] = [SetSelf(node)]
    if node.expired(current.now):
        ops += _tear_down(current, EXPIRED_AT_SERVER, EXPIRED_AT_SERVER_CONTROL)
    elif current.expired:
        ops.append(Revive())
        if not in_full_map:
            return [*ops, Resync()]  # the peers come back with the fresh full map
    if node.addresses:
        ops.append(SetAddresses(tuple(node.addresses)))
    return ops
