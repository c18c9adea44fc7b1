"""Persistent keepalive holds a NAT mapping open.

    inside (A) --lan-- router: masquerade, UDP conntrack timeout 5 s --wan-- outside (B)

B has no endpoint for A and no route to A's network: B can reach A only through the mapping
that A's own packets opened in the router. With a 2 s persistent keepalive the mapping lives
on and B reaches A after any quiet time; without it the mapping dies 5 s after A's last packet
and B's packets go nowhere.
"""

from __future__ import annotations

import time

import pytest

from .netns import (
    PAIRS,
    TUN4,
    TUN6,
    Lab,
    WgInterface,
    endpoint_str,
    make_nat,
    wait_for,
)

pytestmark = pytest.mark.root
CONNTRACK_UDP_TIMEOUT = 5
KEEPALIVE = 2


def rx_times(wg: WgInterface, peer: WgInterface, duration: float) -> list[float]:
    """Sample the peer's rx counter for `duration` s; return when it grew (s from start)."""
    start = time.monotonic()
    last = wg.peer(peer).rx
    grew = []
    for _ in range(int(duration / 0.2) + 1):
        now = time.monotonic() - start
        if now >= duration:
            break
        rx = wg.peer(peer).rx
        if rx != last:
            grew.append(now)
            last = rx
        time.sleep(0.2)
    return grew


@pytest.mark.slow
@pytest.mark.parametrize(("impl_a", "impl_b"), PAIRS)
def test_persistent_keepalive_holds_nat_mapping(lab: Lab, impl_a: str, impl_b: str) -> None:
    nat = make_nat(lab, udp_timeout=CONNTRACK_UDP_TIMEOUT)
    a = lab.wg(nat.inside, impl_a, listen_port=51820)
    b = lab.wg(nat.outside, impl_b, listen_port=51821)
    for i, me in enumerate((a, b)):
        me.add_address(f"{TUN4[i]}/32")
        me.add_address(f"{TUN6[i]}/128")
    b.add_peer(a, allowed_ips=[f"{TUN4[0]}/32", f"{TUN6[0]}/128"])
    # Turning keepalive on sends one at once: the handshake comes up without any data, so
    # neither side has a passive keepalive or a retransmission pending afterwards.
    a.add_peer(
        b,
        allowed_ips=[f"{TUN4[1]}/32", f"{TUN6[1]}/128"],
        endpoint=endpoint_str(nat.wan.b4, 51821),
        keepalive=KEEPALIVE,
    )
    b.wait_handshake(a, timeout=10)
    mapped = b.peer(a).endpoint
    assert mapped is not None and mapped.startswith(f"{nat.wan.a4}:"), mapped

    # 1. Keepalive off: A falls silent, the mapping expires, B cannot reach A.
    a.add_peer(b, keepalive=0)
    assert a.peer(b).keepalive is None
    quiet_for = CONNTRACK_UDP_TIMEOUT + 2.0
    state = {"rx": b.peer(a).rx, "since": time.monotonic()}

    def quiet() -> bool:
        rx = b.peer(a).rx
        if rx != state["rx"]:
            state["rx"], state["since"] = rx, time.monotonic()
        return time.monotonic() - state["since"] >= quiet_for

    wait_for(quiet, timeout=quiet_for + 3 * KEEPALIVE + 5, interval=0.2, what="A to fall silent")
    assert b.ns.ping(TUN4[0], count=3, wait=1, interval=0.3) == 0, "B reached A without a mapping"

    # 2. Keepalive every 2 s: the mapping holds through more than twice its timeout.
    a.add_peer(b, keepalive=KEEPALIVE)
    assert a.peer(b).keepalive == KEEPALIVE
    wait_for(lambda: b.peer(a).rx > state["rx"], timeout=KEEPALIVE + 3, what="a keepalive")
    observe = 2 * CONNTRACK_UDP_TIMEOUT + 1
    grew = rx_times(b, a, observe)
    gaps = [y - x for x, y in zip([0.0, *grew], [*grew, observe], strict=True)]
    assert max(gaps) < CONNTRACK_UDP_TIMEOUT - 0.5, f"keepalives arrived at {grew}"
    mapped = b.peer(a).endpoint
    assert mapped is not None and mapped.startswith(f"{nat.wan.a4}:"), mapped
    assert b.ns.ping(TUN4[0], count=3) == 3
    assert b.ns.ping(TUN6[0], count=3) == 3
