"""The reply-only inbound filter: a peer that policy lets us reach, but not reach us."""

from __future__ import annotations

import struct

from support import ipv4_packet, ipv6_packet, pair

from wgpy.protocol.errors import DropReason
from wgpy.protocol.flows import FLOW_TIMEOUT, ReplyOnlyFilter


def icmp(kind: int, ident: int) -> bytes:
    return struct.pack("!BBHHH", kind, 0, 0, ident, 1) + b"ping"


def ports(sport: int, dport: int) -> bytes:
    return struct.pack("!HH", sport, dport) + bytes(16)


def test_only_replies_to_our_flows_pass() -> None:
    f = ReplyOnlyFilter()
    a, b = "10.0.0.1", "10.0.0.2"
    # nothing started: the peer's new flows are refused
    assert not f.inbound(ipv4_packet(b, a, ports(40000, 22), proto=6), 0.0)
    assert not f.inbound(ipv4_packet(b, a, icmp(8, 7), proto=1), 0.0)
    # we start TCP, UDP and ping; the replies pass, other ports and ids do not
    f.outbound(ipv4_packet(a, b, ports(50000, 443), proto=6), 1.0)
    f.outbound(ipv4_packet(a, b, ports(50001, 53), proto=17), 1.0)
    f.outbound(ipv4_packet(a, b, icmp(8, 99), proto=1), 1.0)
    assert f.inbound(ipv4_packet(b, a, ports(443, 50000), proto=6), 2.0)
    assert f.inbound(ipv4_packet(b, a, ports(53, 50001), proto=17), 2.0)
    assert f.inbound(ipv4_packet(b, a, icmp(0, 99), proto=1), 2.0)
    assert not f.inbound(ipv4_packet(b, a, ports(443, 50002), proto=6), 2.0)
    assert not f.inbound(ipv4_packet(b, a, icmp(0, 98), proto=1), 2.0)
    assert not f.inbound(ipv4_packet(b, a, icmp(8, 99), proto=1), 2.0)  # a request, not a reply
    assert not f.inbound(ipv4_packet(b, a, ports(443, 50000), proto=6), 1.0 + FLOW_TIMEOUT + 1)
    assert not f.inbound(b"\x45", 0.0) and not f.inbound(b"", 0.0)


def test_ipv6_flows() -> None:
    f = ReplyOnlyFilter()
    a, b = "fd00::1", "fd00::2"
    f.outbound(ipv6_packet(a, b, icmp(128, 5), next_header=58), 0.0)
    assert f.inbound(ipv6_packet(b, a, icmp(129, 5), next_header=58), 0.5)
    assert not f.inbound(ipv6_packet(b, a, icmp(128, 5), next_header=58), 0.5)


def test_device_drops_new_inbound_flows_from_a_reply_only_peer() -> None:
    wire, a, b, _ = pair()
    b.device.peers[a.public].inbound_filter = ReplyOnlyFilter()
    # a starts a ping to b: b refuses it (policy), counted
    wire.send(a, [ipv4_packet(a.inner, b.inner, icmp(8, 1), proto=1)], 0.0)
    wire.run(0.0)
    assert b.received == []
    assert b.device.drops[DropReason.POLICY_DENIED] == 1
    # b starts a ping to a: a answers, and the answer reaches b
    wire.send(b, [ipv4_packet(b.inner, a.inner, icmp(8, 2), proto=1)], 1.0)
    wire.run(1.0)
    assert a.received[-1] == ipv4_packet(b.inner, a.inner, icmp(8, 2), proto=1)
    wire.send(a, [ipv4_packet(a.inner, b.inner, icmp(0, 2), proto=1)], 1.1)
    wire.run(1.1)
    assert b.received == [ipv4_packet(a.inner, b.inner, icmp(0, 2), proto=1)]
