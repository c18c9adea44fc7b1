"""What callers change on a peer goes through the device: endpoint, allowed IPs, inbound
filter; the device keeps its table and the peer's state consistent."""

from __future__ import annotations

import ipaddress

import pytest
from support import ipv4_packet, pair

from wgpy.protocol.errors import DropReason, LocalProtocolError
from wgpy.protocol.flows import ReplyOnlyFilter


def test_set_endpoint_sends_there_and_forgets_a_learned_source() -> None:
    _, a, b, _ = pair()
    peer = a.device.peers[b.public]
    peer.endpoint = (*b.address, "learned source")  # type: ignore[misc]
    a.device.set_endpoint(peer, ("203.0.113.9", 4000))
    assert peer.endpoint == ("203.0.113.9", 4000)
    a.device.send_packets([ipv4_packet(a.inner, b.inner)], 0.0)
    assert [to for _, to in a.device.datagrams_to_send()] == [("203.0.113.9", 4000)]


def test_set_endpoint_none_stages_until_an_endpoint_comes() -> None:
    _, a, b, _ = pair()
    peer = a.device.peers[b.public]
    a.device.set_endpoint(peer, None)
    a.device.send_packets([ipv4_packet(a.inner, b.inner)], 0.0)
    assert a.device.datagrams_to_send() == []
    assert a.device.drops[DropReason.NO_ENDPOINT] == 1 and len(peer.staged) == 1
    a.device.set_endpoint(peer, b.address)
    a.device.send_staged(peer, 0.0)
    assert [to for _, to in a.device.datagrams_to_send()] == [b.address]


def test_set_allowed_ips_replaces_them_all_and_takes_prefixes_from_other_peers() -> None:
    _, a, b, _ = pair()
    peer = a.device.peers[b.public]
    other = a.device.add_peer(bytes(range(32)), allowed_ips=["10.9.0.0/16"])
    a.device.set_allowed_ips(peer, ["10.9.0.0/16", ipaddress.ip_network("fd00::/64")])
    table = a.device.allowed_ips
    assert set(table.prefixes(peer)) == {
        ipaddress.ip_network("10.9.0.0/16"),
        ipaddress.ip_network("fd00::/64"),
    }
    assert table.prefixes(other) == []
    assert table.lookup_ip(b.inner) is None  # the old /32 is gone
    a.device.set_allowed_ips(peer, ())
    assert table.prefixes(peer) == [] and len(table) == 0


def test_add_and_remove_one_allowed_ip() -> None:
    _, a, b, _ = pair()
    peer = a.device.peers[b.public]
    a.device.add_allowed_ip(peer, "10.1.2.3/24")  # host bits masked off, as the kernel does
    assert a.device.allowed_ips.lookup_ip("10.1.2.200") is peer
    assert a.device.remove_allowed_ip(peer, "10.1.2.0/24") is True
    assert a.device.remove_allowed_ip(peer, "10.1.2.0/24") is False
    assert a.device.allowed_ips.lookup_ip("10.1.2.200") is None
    with pytest.raises(ValueError):
        a.device.add_allowed_ip(peer, "10.1.2.0/33")


def test_set_inbound_filter_lets_in_only_replies() -> None:
    wire, a, b, _ = pair()
    peer = b.device.peers[a.public]
    b.device.set_inbound_filter(peer, ReplyOnlyFilter())
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"unsolicited")], 0.0)
    wire.run(0.0)
    assert b.received == [] and b.device.drops[DropReason.POLICY_DENIED] == 1
    b.device.set_inbound_filter(peer, None)
    wire.send(a, [ipv4_packet(a.inner, b.inner, b"now allowed")], 1.0)
    wire.run(1.0)
    assert len(b.received) == 1


def test_a_removed_peer_cannot_be_changed() -> None:
    _, a, b, _ = pair()
    peer = a.device.peers[b.public]
    a.device.remove_peer(b.public)
    for change in (
        lambda: a.device.set_endpoint(peer, b.address),
        lambda: a.device.set_allowed_ips(peer, ["10.0.0.0/8"]),
        lambda: a.device.add_allowed_ip(peer, "10.0.0.0/8"),
        lambda: a.device.remove_allowed_ip(peer, "10.0.0.0/8"),
        lambda: a.device.set_inbound_filter(peer, None),
    ):
        with pytest.raises(LocalProtocolError, match="add it again with add_peer"):
            change()
    assert len(a.device.allowed_ips) == 0  # nothing routes to the removed peer
