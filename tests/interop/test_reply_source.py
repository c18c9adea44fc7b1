"""Replies leave from the address the peer sent to ("sticky sockets", as in the kernel and
wireguard-go), and stop doing so once that address is gone.

Side A has two addresses of each family on its underlay link; B sends to the one A's routing
table would NOT pick to reach B. If A answered from the routing table's choice, B would see
A's packets come from the other address and roam there: `wg show` on B tells. Every pair of
implementations runs, with A's and B's roles both ways.
"""

from __future__ import annotations

import re

import pytest

from .netns import (
    LISTEN_PORTS,
    PAIRS,
    TUN4,
    TUN6,
    Lab,
    Namespace,
    WgInterface,
    endpoint_str,
    wait_for,
)

pytestmark = pytest.mark.root


def route_source(ns: Namespace, destination: str) -> str:
    """The source address ``ns``'s routing table picks to reach ``destination``."""
    out = ns.ip("route", "get", destination).stdout
    m = re.search(r"\bsrc (\S+)", out)
    assert m is not None, f"no source in `ip route get {destination}`: {out!r}"
    return m.group(1)


def ping_ok(ns: Namespace, address: str, timeout: float = 10) -> None:
    """A ping through the tunnel is answered (the first may wait for a handshake)."""
    wait_for(
        lambda: ns.ping(address, count=1, wait=1) == 1,
        timeout=timeout,
        interval=0.1,
        what=f"a reply from {address} through the tunnel",
    )


def endpoint_of(me: WgInterface, other: WgInterface) -> str | None:
    return me.peer(other).endpoint


@pytest.mark.parametrize("underlay", [4, 6], ids=["underlay4", "underlay6"])
@pytest.mark.parametrize(("impl_a", "impl_b"), PAIRS)
def test_replies_come_from_the_address_the_peer_sent_to(
    lab: Lab, impl_a: str, impl_b: str, underlay: int
) -> None:
    ns_a, ns_b = lab.namespace("a"), lab.namespace("b")
    link = lab.veth(ns_a, ns_b)
    b_addr = link.addr("b", underlay)
    first = link.addr("a", underlay)
    if underlay == 4:
        second, plen, extra = first.rsplit(".", 1)[0] + ".11", link.prefix4, []
    else:
        second, plen, extra = first.rsplit(":", 1)[0] + ":11", link.prefix6, ["nodad"]
    # deleting a primary IPv4 address would take its secondaries along otherwise
    ns_a.sysctl(f"net.ipv4.conf.{link.a_dev}.promote_secondaries", 1)
    ns_a.ip("addr", "add", f"{second}/{plen}", "dev", link.a_dev, *extra)
    wait_for(
        lambda: ns_b.ping(second, count=1, wait=1) == 1, timeout=10, what=f"{second} reachable"
    )
    chosen = route_source(ns_a, b_addr)
    assert chosen in (first, second)
    other = second if chosen == first else first  # where a reply's source matters

    a = lab.wg(ns_a, impl_a, listen_port=LISTEN_PORTS[0])
    b = lab.wg(ns_b, impl_b, listen_port=LISTEN_PORTS[1])
    a.add_address(f"{TUN4[0]}/32")
    a.add_address(f"{TUN6[0]}/128")
    b.add_address(f"{TUN4[1]}/32")
    b.add_address(f"{TUN6[1]}/128")
    # A knows no endpoint for B: it answers B's handshake wherever B's packets came from
    a.add_peer(b, allowed_ips=[f"{TUN4[1]}/32", f"{TUN6[1]}/128"])
    b_endpoint = endpoint_str(b_addr, LISTEN_PORTS[1])

    def sent_to(address: str) -> None:
        """B sends to A at ``address``; A's answers come back from it, both ways of traffic."""
        want = endpoint_str(address, LISTEN_PORTS[0])
        b.add_peer(a, allowed_ips=[f"{TUN4[0]}/32", f"{TUN6[0]}/128"], endpoint=want)
        ping_ok(ns_b, TUN4[0])
        assert endpoint_of(b, a) == want, f"B sent to {address}; A answered from elsewhere"
        assert endpoint_of(a, b) == b_endpoint
        ping_ok(ns_a, TUN6[1])  # A starts this exchange: its data goes out from there too
        assert endpoint_of(b, a) == want, "A's own traffic left from another address"

    sent_to(other)
    sent_to(chosen)  # the source follows B's packets to the other address
    sent_to(other)

    # `wg set` on A, even with the endpoint A has, drops the address A answered from: A's
    # next packets leave from the routing table's choice, and B follows them there.
    a.add_peer(b, endpoint=b_endpoint)
    ping_ok(ns_a, TUN4[1])
    assert endpoint_of(b, a) == endpoint_str(chosen, LISTEN_PORTS[0])
    sent_to(other)

    # The address A answers from goes away: A's traffic falls back to the routing table's
    # choice (now the only address left), and B follows A there. wgpy retries a send that
    # failed for its source at once; wireguard-go 0.0.20220316 keeps sending from the gone
    # IPv4 address until its handshake timers drop the source (measured: 15.5 s).
    ns_a.ip("addr", "del", f"{other}/{plen}", "dev", link.a_dev)
    ping_ok(ns_a, TUN4[1], timeout=3 if impl_a == "wgpy" else 25)
    assert endpoint_of(b, a) == endpoint_str(chosen, LISTEN_PORTS[0])
    ping_ok(ns_b, TUN6[0])
