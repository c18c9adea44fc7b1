"""The mesh client's reconcile step without I/O: a map message and the node's current state
in, the operations out (wgpy/mesh/client/reconcile.py).

No server, no device, no clock: ``Current`` is built from plain dicts, and :func:`applied`
plays the operations back onto such dicts, so a test can check that a plan converges (the
same map again gives no operation).
"""

from __future__ import annotations

import ast
import dataclasses
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from wgpy.keys import key_to_base64
from wgpy.mesh.client import reconcile
from wgpy.mesh.client.netmap import PeerRecord, parse_node, parse_peer
from wgpy.mesh.client.reconcile import (
    AddPeer,
    Current,
    DevicePeer,
    Expire,
    ForgetPeer,
    Plan,
    RemovePeer,
    Resync,
    Revive,
    SendStaged,
    SetAddresses,
    SetAllowedIPs,
    SetEndpoint,
    SetIce,
    SetInboundFilter,
    SetSelf,
    SetVersion,
    Skipped,
    StorePeer,
    peer_ice,
)

ME = bytes([1]) * 32
NOW = 1_800_000_000.0  # wall-clock seconds (2027)


def key(i: int) -> bytes:
    return bytes([i]) * 32


def net(text: str) -> Any:
    return ipaddress.ip_network(text)


def entry(i: int, **fields: Any) -> dict[str, Any]:
    """A PEER object as the server sends it, for peer number ``i``."""
    return {
        "public_key": key_to_base64(key(i)),
        "hostname": f"n{i}",
        "user": "alice",
        "addresses": [f"100.64.0.{i}/32", f"fd7a:115c:a1e0::{i}/128"],
        "endpoints": [f"192.0.2.{i}:41641"],
        "tags": [],
        "online": True,
        "can_reach": True,
        "reachable_from": True,
        **fields,
    }


def record(i: int, **fields: Any) -> PeerRecord:
    return parse_peer(entry(i, **fields))


def self_json(**fields: Any) -> dict[str, Any]:
    return {
        "public_key": key_to_base64(ME),
        "hostname": "me",
        "ipv4": "100.64.0.1",
        "ipv6": "fd7a:115c:a1e0::1",
        "expires_at": None,
        "expired": False,
        **fields,
    }


def device_peer(peer: PeerRecord) -> DevicePeer:
    """The device's side of a peer the node applied as ``peer``."""
    return DevicePeer(frozenset(peer.allowed_ips), reply_only=not peer.reachable_from)


def state(*peers: PeerRecord, expired: bool = False) -> Current:
    """A node that has applied ``peers`` (the map and the device agree)."""
    return Current(
        public_key=ME,
        peers={p.public_key: p for p in peers},
        device={p.public_key: device_peer(p) for p in peers},
        expired=expired,
        now=NOW,
    )


def full(*entries: Any, **message: Any) -> dict[str, Any]:
    return {"type": "full", "version": 7, "self": self_json(), "peers": list(entries), **message}


def applied(current: Current, plan: Plan) -> Current:
    """``current`` after ``plan``, as the node would leave it (the device as dicts)."""
    peers = dict(current.peers)
    device = dict(current.device)
    expired = current.expired
    for op in plan.operations:
        if isinstance(op, AddPeer):
            assert op.public_key not in device, "added twice"
            device[op.public_key] = DevicePeer(frozenset(op.allowed_ips), reply_only=False)
        elif isinstance(op, RemovePeer):
            del device[op.public_key]
        elif isinstance(op, SetAllowedIPs):
            device[op.public_key] = dataclasses.replace(
                device[op.public_key], allowed_ips=frozenset(op.allowed_ips)
            )
        elif isinstance(op, SetInboundFilter):
            device[op.public_key] = dataclasses.replace(
                device[op.public_key], reply_only=op.reply_only
            )
        elif isinstance(op, StorePeer):
            peers[op.record.public_key] = op.record
        elif isinstance(op, ForgetPeer):
            del peers[op.public_key]
        elif isinstance(op, Expire):
            expired = True
        elif isinstance(op, Revive):
            expired = False
    return dataclasses.replace(current, peers=peers, device=device, expired=expired)


def kinds(plan: Plan) -> list[str]:
    return [type(op).__name__ for op in plan.operations]


def peer_ops(plan: Plan) -> list[Any]:
    """The operations about peers (leaving out this node's own: self, addresses, version)."""
    own = (SetSelf, SetAddresses, SetVersion)
    return [op for op in plan.operations if not isinstance(op, own)]


# ---------------------------------------------------------------------- full map


def test_a_full_map_onto_a_new_node_adds_every_peer_in_order() -> None:
    start = state()
    plan = reconcile.full_map(full(entry(2), entry(3, reachable_from=False)), start)
    b, c = record(2), record(3, reachable_from=False)
    node = parse_node(self_json())
    assert plan.skipped == ()
    assert plan.operations == (
        SetSelf(node),
        SetAddresses(tuple(node.addresses)),
        SetVersion(7),
        AddPeer(key(2), ("192.0.2.2", 41641), b.allowed_ips, "n2"),
        StorePeer(b),
        AddPeer(key(3), ("192.0.2.3", 41641), c.allowed_ips, "n3"),
        SetInboundFilter(key(3), reply_only=True),  # c may not start flows to us
        StorePeer(c),
    )
    # and the same map again changes no peer
    after = applied(start, plan)
    assert peer_ops(reconcile.full_map(full(entry(2), entry(3, reachable_from=False)), after)) == []


def test_a_full_map_is_applied_as_a_diff() -> None:
    b, c, d = record(2), record(3), record(4)
    start = state(b, c, d)
    message = full(entry(2), entry(4, endpoints=["203.0.113.4:1"]), entry(5))
    plan = reconcile.full_map(message, start)
    assert peer_ops(plan) == [
        ForgetPeer(key(3)),  # c is gone
        RemovePeer(key(3), "n3"),
        # b is unchanged: nothing
        SetEndpoint(key(4), ("203.0.113.4", 1)),  # d moved
        StorePeer(record(4, endpoints=["203.0.113.4:1"])),
        SendStaged(key(4)),
        AddPeer(key(5), ("192.0.2.5", 41641), record(5).allowed_ips, "n5"),  # e is new
        StorePeer(record(5)),
    ]
    after = applied(start, plan)
    assert set(after.device) == set(after.peers) == {key(2), key(4), key(5)}
    assert peer_ops(reconcile.full_map(message, after)) == []


def test_a_full_map_leaves_this_node_out_and_skips_what_the_parser_rejects() -> None:
    mine = {**entry(2), "public_key": key_to_base64(ME)}
    bad = [
        "not an object",
        {"addresses": []},  # no key
        {**entry(4), "public_key": "nope"},
        {**entry(5), "addresses": ["0.0.0.0/0"]},  # a default route: never from a map
        {**entry(6), "addresses": ["::/0"]},
        {**entry(7), "addresses": ["100.64.0.300/32"]},
        {**entry(8), "endpoints": [1]},
        {**entry(9), "reachable_from": "yes"},
    ]
    plan = reconcile.full_map(full(mine, *bad, entry(3)), state())
    assert [op.public_key for op in plan.operations if isinstance(op, AddPeer)] == [key(3)]
    assert len(plan.skipped) == len(bad)
    assert {s.event for s in plan.skipped} == {"unusable peer in the map: skipped"}
    assert all(s.level == "warning" and s.error for s in plan.skipped)


def test_a_full_map_with_duplicate_keys_keeps_the_last_entry() -> None:
    plan = reconcile.full_map(full(entry(2), entry(2, hostname="again")), state())
    assert [op for op in plan.operations if isinstance(op, AddPeer)] == [
        AddPeer(key(2), ("192.0.2.2", 41641), record(2).allowed_ips, "again")
    ]


def test_a_full_map_without_a_peer_list_has_no_peers() -> None:
    start = state(record(2))
    for peers in (None, "x", {"a": 1}):
        plan = reconcile.full_map(full(peers=peers), start)
        assert peer_ops(plan) == [ForgetPeer(key(2)), RemovePeer(key(2), "n2")]


def test_an_unusable_self_in_a_full_map_is_kept_as_it_was() -> None:
    plan = reconcile.full_map(full(entry(2), self={"ipv4": "fd00::1"}), state())
    assert plan.skipped == (
        Skipped(
            "the full map's self is unusable: kept as it was",
            "'ipv4' is not an IPv4 address",
            "error",
        ),
    )
    assert kinds(plan) == ["SetVersion", "AddPeer", "StorePeer"]


def test_a_full_map_that_says_the_node_expired_removes_every_peer_once() -> None:
    b, c = record(2), record(3)
    plan = reconcile.full_map(full(entry(2), entry(3), self=self_json(expired=True)), state(b, c))
    assert peer_ops(plan) == [
        Expire(
            "this node has expired at the coordination server",
            "the node's key has expired at the server",
            announce=True,
        ),
        ForgetPeer(key(2)),
        RemovePeer(key(2), "n2"),
        ForgetPeer(key(3)),
        RemovePeer(key(3), "n3"),
    ]
    # an expiry time in the past is an expiry too
    past = self_json(expires_at="2020-01-01T00:00:00.000Z")
    assert kinds(reconcile.full_map(full(entry(2), self=past), state()))[:2] == [
        "SetSelf",
        "Expire",
    ]
    # still expired, no peers left: said once, not again
    again = reconcile.full_map(full(entry(2), self=self_json(expired=True)), state(expired=True))
    (expire,) = [op for op in again.operations if isinstance(op, Expire)]
    assert expire.announce is False
    assert not [op for op in again.operations if isinstance(op, AddPeer)]


def test_a_full_map_that_says_the_node_is_valid_again_brings_the_peers_back() -> None:
    plan = reconcile.full_map(full(entry(2)), state(expired=True))
    assert kinds(plan) == [
        "SetSelf",
        "Revive",
        "SetAddresses",
        "SetVersion",
        "AddPeer",
        "StorePeer",
    ]  # no Resync: this is the fresh map


def test_an_expired_node_with_an_unusable_self_stays_without_peers() -> None:
    plan = reconcile.full_map(full(entry(2), self="x"), state(expired=True))
    assert peer_ops(plan) == []


# ---------------------------------------------------------------------- peer_upsert


def upsert(current: Current, **fields: Any) -> Plan:
    return reconcile.peer_upsert({"type": "peer_upsert", "peer": entry(2, **fields)}, current)


def test_an_unchanged_peer_gives_no_operation() -> None:
    assert upsert(state(record(2))) == Plan()
    assert upsert(state(record(2, reachable_from=False)), reachable_from=False) == Plan()


def test_a_new_peer_is_added() -> None:
    plan = upsert(state(record(3)))
    assert plan.operations == (
        AddPeer(key(2), ("192.0.2.2", 41641), record(2).allowed_ips, "n2"),
        StorePeer(record(2)),
    )


def test_a_new_endpoint_from_the_server_replaces_the_device_s() -> None:
    plan = upsert(state(record(2)), endpoints=["192.0.2.22:5555"])
    assert plan.operations == (
        SetEndpoint(key(2), ("192.0.2.22", 5555)),
        StorePeer(record(2, endpoints=["192.0.2.22:5555"])),
        SendStaged(key(2)),
    )


def test_a_roamed_peer_keeps_its_address_until_the_server_reports_another() -> None:
    """The device may hold another endpoint (WireGuard followed the peer's packets): as
    long as the server's view is the same, nothing is set; a change that is not about the
    endpoint does not set it either."""
    current = state(record(2))
    assert upsert(current) == Plan()
    plan = upsert(current, online=False, tags=["tag:x"])
    assert [type(op) for op in plan.operations] == [StorePeer, SendStaged]
    # the server stops reporting an endpoint: the device keeps the one it has...
    no_endpoint = upsert(current, endpoints=[])
    assert [type(op) for op in no_endpoint.operations] == [StorePeer, SendStaged]
    # ...and when it reports one again, that one is set
    after = applied(current, no_endpoint)
    assert upsert(after).operations[0] == SetEndpoint(key(2), ("192.0.2.2", 41641))


def test_the_first_numeric_endpoint_is_used() -> None:
    plan = upsert(state(), endpoints=["b.example:1", "not one", "[2001:db8::2]:41641"])
    assert plan.operations[0] == AddPeer(
        key(2), ("2001:db8::2", 41641), record(2).allowed_ips, "n2"
    )
    without = upsert(state(), endpoints=["b.example:1", "192.0.2.9:0"])
    assert without.operations[0] == AddPeer(key(2), None, record(2).allowed_ips, "n2")


def test_an_address_change_replaces_the_allowed_ips() -> None:
    plan = upsert(state(record(2)), addresses=["100.64.0.22/32", "10.1.0.0/16"])
    assert plan.operations[0] == SetAllowedIPs(key(2), (net("100.64.0.22/32"), net("10.1.0.0/16")))
    assert [type(op) for op in plan.operations] == [SetAllowedIPs, StorePeer, SendStaged]
    # the same networks in another order are the same allowed IPs
    reordered = upsert(state(record(2)), addresses=list(reversed(entry(2)["addresses"])))
    assert not [op for op in reordered.operations if isinstance(op, SetAllowedIPs)]


def test_policy_changes_reach_the_inbound_filter() -> None:
    # may no longer start flows to us: reply-only
    plan = upsert(state(record(2)), reachable_from=False)
    assert plan.operations[0] == SetInboundFilter(key(2), reply_only=True)
    # may again: the filter goes
    plan = upsert(state(record(2, reachable_from=False)), reachable_from=True)
    assert plan.operations[0] == SetInboundFilter(key(2), reply_only=False)
    # a filter already there is kept (with the flows it tracks) when only can_reach changes
    plan = upsert(state(record(2, reachable_from=False)), reachable_from=False, can_reach=False)
    assert [type(op) for op in plan.operations] == [StorePeer, SendStaged]


def test_a_peer_the_device_has_but_the_map_did_not_is_taken_over() -> None:
    """A peer added by hand (wg set) with the key the server now reports: updated, not
    added twice; the server's endpoint is set since none was applied."""
    current = Current(
        public_key=ME,
        peers={},
        device={key(2): DevicePeer(frozenset({net("10.9.0.0/24")}), reply_only=False)},
        now=NOW,
    )
    plan = upsert(current)
    assert plan.operations == (
        SetAllowedIPs(key(2), record(2).allowed_ips),
        SetEndpoint(key(2), ("192.0.2.2", 41641)),
        StorePeer(record(2)),
        SendStaged(key(2)),
    )


def test_upserts_are_ignored_while_expired_and_this_node_is_never_a_peer() -> None:
    assert upsert(state(expired=True)) == Plan()
    mine = {"type": "peer_upsert", "peer": {**entry(2), "public_key": key_to_base64(ME)}}
    assert reconcile.peer_upsert(mine, state()) == Plan()


@pytest.mark.parametrize(
    "peer",
    [
        None,
        [],
        "x",
        {"public_key": "nope", "addresses": []},
        {**entry(2), "addresses": ["0.0.0.0/0"]},
        {**entry(2), "addresses": ["x"]},
        {**entry(2), "addresses": "100.64.0.2/32"},
        {**entry(2), "endpoints": "192.0.2.2:1"},
        {**entry(2), "hostname": 5},
        {**entry(2), "can_reach": 1},
    ],
)
def test_a_peer_the_parser_rejects_stays_rejected(peer: Any) -> None:
    plan = reconcile.peer_upsert({"type": "peer_upsert", "peer": peer}, state(record(2)))
    assert plan.operations == ()
    (skipped,) = plan.skipped
    assert skipped.event == "unusable peer in the map: skipped" and skipped.error


# ---------------------------------------------------------------------- peer_remove, peer_online


def test_peer_remove() -> None:
    current = state(record(2), record(3))
    message = {"type": "peer_remove", "public_key": key_to_base64(key(2))}
    assert reconcile.peer_remove(message, current).operations == (
        ForgetPeer(key(2)),
        RemovePeer(key(2), "n2"),
    )
    unknown = {"type": "peer_remove", "public_key": key_to_base64(key(9))}
    assert reconcile.peer_remove(unknown, current) == Plan()
    for bad in (12, "nope", None, [key_to_base64(key(2))]):
        plan = reconcile.peer_remove({"type": "peer_remove", "public_key": bad}, current)
        assert plan == Plan(skipped=(Skipped("peer_remove without a valid public key: skipped"),))


def test_peer_online_changes_only_the_record() -> None:
    current = state(record(2, online=False))
    line = {"type": "peer_online", "public_key": key_to_base64(key(2)), "online": True}
    assert reconcile.peer_online(line, current).operations == (StorePeer(record(2, online=True)),)
    assert reconcile.peer_online({**line, "online": False}, current) == Plan()  # as it was
    for odd in (
        {**line, "online": "yes"},
        {**line, "online": 1},
        {**line, "public_key": "nope"},
        {**line, "public_key": key_to_base64(key(9))},  # not a peer
    ):
        assert reconcile.peer_online(odd, current) == Plan()


# ---------------------------------------------------------------------- self


def self_message(**fields: Any) -> dict[str, Any]:
    return {"type": "self", "self": self_json(**fields)}


def test_a_self_update_sets_the_node_and_its_addresses() -> None:
    plan = reconcile.self_update(self_message(ipv4="100.64.0.77", ipv6=None), state(record(2)))
    node = parse_node(self_json(ipv4="100.64.0.77", ipv6=None))
    assert plan.operations == (
        SetSelf(node),
        SetAddresses((ipaddress.IPv4Interface("100.64.0.77/32"),)),
    )
    bare = reconcile.self_update(self_message(ipv4=None, ipv6=None), state())
    assert kinds(bare) == ["SetSelf"]  # no address: the ones there are kept


def test_a_self_update_that_says_expired_tears_down() -> None:
    plan = reconcile.self_update(self_message(expired=True), state(record(2)))
    assert kinds(plan) == ["SetSelf", "Expire", "ForgetPeer", "RemovePeer", "SetAddresses"]
    after = applied(state(record(2)), plan)
    assert after.expired and not after.device and not after.peers
    # while expired, a valid self asks for a fresh full map before anything else
    revived = reconcile.self_update(self_message(), after)
    assert kinds(revived) == ["SetSelf", "Revive", "Resync"]
    assert revived.operations[-1] == Resync()


@pytest.mark.parametrize(
    "node",
    [None, "x", [], {"ipv4": "fd00::1"}, {"ipv6": "100.64.0.1"}, {"public_key": "nope"}],
)
def test_an_unusable_self_update_is_skipped(node: Any) -> None:
    plan = reconcile.self_update({"type": "self", "self": node}, state(record(2)))
    assert plan.operations == ()
    (skipped,) = plan.skipped
    assert skipped.event == "unusable self update: skipped" and skipped.error


# ---------------------------------------------------------------------- outside the stream


def test_tear_down_and_key_expiry() -> None:
    current = state(record(2))
    plan = reconcile.tear_down(current, "the server refused this node's token: no")
    assert plan.operations == (
        Expire("the server refused this node's token: no", None, announce=True),
        ForgetPeer(key(2)),
        RemovePeer(key(2), "n2"),
    )
    node = parse_node(self_json(expires_at=NOW - 1))
    assert reconcile.key_expired(node, current).operations[0] == Expire(
        "this node's key has expired", "the node's key has expired", announce=True
    )
    assert reconcile.key_expired(None, current) == Plan()
    assert reconcile.key_expired(parse_node(self_json(expires_at=NOW + 60)), current) == Plan()
    assert reconcile.key_expired(node, state(expired=True)) == Plan()  # once


def test_route_changes_are_ordered_and_minimal() -> None:
    installed = {net("100.64.0.2/32"), net("100.64.0.3/32"), net("fd7a:115c:a1e0::2/128")}
    wanted = {
        net("100.64.0.2/32"),
        net("fd7a:115c:a1e0::2/128"),
        net("10.0.0.0/8"),
        net("fd00::/64"),
        net("100.64.0.4/32"),
    }
    changes = reconcile.route_changes(wanted, installed)
    assert changes.add == (net("100.64.0.4/32"), net("10.0.0.0/8"), net("fd00::/64"))
    assert changes.remove == (net("100.64.0.3/32"),)
    assert not reconcile.route_changes(wanted, wanted)


# ---------------------------------------------------------------------- no I/O


ALLOWED_IMPORTS = {"__future__", "dataclasses", "collections", "typing"}


def test_reconcile_does_no_io() -> None:
    """The module imports only data-shaped modules and wgpy's own parsers."""
    path = Path(reconcile.__file__)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # wgpy's own: netmap, keys, allowedips
                assert node.module in {"keys", "protocol.allowedips", "netmap"}, node.module
                continue
            names = [node.module or ""]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in ALLOWED_IMPORTS, f"reconcile imports {name}"


def test_the_current_state_is_only_read() -> None:
    peers = {key(2): record(2)}
    device = {key(2): device_peer(record(2)), key(3): device_peer(record(3))}
    current = Current(ME, peers, device, now=NOW)
    frozen: Mapping[bytes, Any] = dict(device)
    reconcile.full_map(full(entry(4)), current)
    reconcile.peer_remove({"public_key": key_to_base64(key(2))}, current)
    reconcile.self_update(self_message(expired=True), current)
    assert peers == {key(2): record(2)} and device == frozen


# ---------------------------------------------------------------------- ICE fields


ICE = {
    "ice_ufrag": "uf02",
    "candidates": ["1 1 udp 2130706431 192.0.2.2 41641 typ host"],
}


def ice_of(**fields: Any) -> SetIce:
    """The SetIce that the peer record with these fields asks for (as the netmap read it)."""
    peer = record(2, **fields)
    return SetIce(key(2), peer.ice_ufrag, peer.candidates)


def test_a_new_peer_with_candidates_gets_its_ice() -> None:
    plan = upsert(state(), **ICE)
    assert plan.operations[-1] == ice_of(**ICE)
    assert ice_of(**ICE).ufrag == "uf02" and len(ice_of(**ICE).candidates) == 1
    assert upsert(state()).operations[-1] == StorePeer(record(2))  # none: no SetIce


def test_ice_is_set_again_only_when_its_fields_change() -> None:
    current = state(record(2, **ICE))
    assert upsert(current, **ICE) == Plan()
    moved = {**ICE, "candidates": ["1 1 udp 2130706431 192.0.2.2 41642 typ host"]}
    plan = upsert(current, **moved)
    assert plan.operations[-1] == ice_of(**moved) != ice_of(**ICE)
    gone = upsert(current)  # the peer stopped reporting ICE: say so, all empty
    assert gone.operations[-1] == SetIce(key(2), "", ())


def test_peer_ice_compares_the_two_fields() -> None:
    before = record(2, **ICE)
    assert peer_ice(before, before) is None
    assert peer_ice(record(2), None) is None
    assert peer_ice(before, None) == ice_of(**ICE)
    changed = {**ICE, "ice_ufrag": "uf03"}  # the peer restarted: new keys for the checks
    assert peer_ice(record(2, **changed), before) == ice_of(**changed)
    assert ice_of(**changed).ufrag == "uf03"


def test_a_peer_without_ice_fields_has_them_empty() -> None:
    assert (record(2).ice_ufrag, record(2).candidates) == ("", ())


# ---------------------------------------------------------------------- subnet routes


def test_a_peer_s_routes_are_in_its_allowed_ips_unless_the_node_refuses_routes() -> None:
    lan = entry(2, addresses=[*entry(2)["addresses"], "192.168.1.0/24"], routes=["192.168.1.0/24"])
    plan = reconcile.full_map(full(lan), state())
    (add,) = [op for op in plan.operations if isinstance(op, AddPeer)]
    assert net("192.168.1.0/24") in add.allowed_ips
    refusing = dataclasses.replace(state(), accept_routes=False)
    plan = reconcile.full_map(full(lan), refusing)
    (add,) = [op for op in plan.operations if isinstance(op, AddPeer)]
    assert add.allowed_ips == (net("100.64.0.2/32"), net("fd7a:115c:a1e0::2/128"))
    # the route moves to the standby: the peer that had it keeps its own addresses only
    after = applied(state(), reconcile.full_map(full(lan), state()))
    plan = reconcile.peer_upsert({"peer": entry(2)}, after)
    assert [op for op in plan.operations if isinstance(op, SetAllowedIPs)] == [
        SetAllowedIPs(key(2), (net("100.64.0.2/32"), net("fd7a:115c:a1e0::2/128")))
    ]
    plan = reconcile.peer_upsert({"peer": lan}, refusing)
    (add,) = [op for op in plan.operations if isinstance(op, AddPeer)]
    assert net("192.168.1.0/24") not in add.allowed_ips


def test_routes_and_exit_node_are_read_and_a_default_route_refused() -> None:
    peer = parse_peer(entry(2, routes=["192.168.1.0/24"], exit_node=True))
    assert peer.routes == (net("192.168.1.0/24"),) and peer.exit_node
    assert parse_peer(entry(2)).routes == () and not parse_peer(entry(2)).exit_node
    with pytest.raises(ValueError, match="default route"):
        parse_peer(entry(2, routes=["0.0.0.0/0"]))
    with pytest.raises(ValueError, match="wrong type"):
        parse_peer(entry(2, exit_node="yes"))


def test_a_router_keeps_its_own_subnets_out_of_its_peers_allowed_ips() -> None:
    routes = ["192.168.1.0/24", "10.9.0.0/16"]
    other = entry(2, addresses=[*entry(2)["addresses"], *routes], routes=routes)
    router = dataclasses.replace(state(), own_routes=frozenset({net("192.168.0.0/16")}))
    (add,) = [
        op for op in reconcile.full_map(full(other), router).operations if isinstance(op, AddPeer)
    ]
    # the LAN it routes itself stays on its own link; the other subnet goes through the peer
    assert net("192.168.1.0/24") not in add.allowed_ips
    assert net("10.9.0.0/16") in add.allowed_ips
