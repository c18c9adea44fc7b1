"""Hostile input at a listen port: the interface stays up and real traffic goes on."""

from __future__ import annotations

import json
import re

import pytest

from .netns import PAIRS, TUN4, TUN6, Key, Lab, make_pair

pytestmark = pytest.mark.root

# wgpy as B counts itself "under load" during the flood (>= 128 handshake messages in 1/8 s),
# so the fresh handshake at the end may go through a cookie reply and A's retry after
# REKEY_TIMEOUT: about 5 s more (13-14 s in all; with wireguard-go as B, about 8 s).
FLOOD_PAIRS = [
    pytest.param(a, b, marks=pytest.mark.slow) if b == "wgpy" else pytest.param(a, b)
    for a, b in PAIRS
]


@pytest.mark.parametrize(("impl_a", "impl_b"), FLOOD_PAIRS)
def test_flood_of_hostile_datagrams(lab: Lab, impl_a: str, impl_b: str) -> None:
    """A third namespace floods B's listen port (20,000 datagrams over IPv4, then 5,000 over
    IPv6: junk, every message type at right and wrong sizes, initiations with a valid MAC1,
    genuine initiations from a peer B knows and from strangers, replays, bit flips) while A
    pings B; afterwards B still works, A's endpoint is untouched, a new handshake succeeds."""
    pair = make_pair(lab, impl_a, impl_b)
    a, b = pair.a, pair.b
    evil = lab.namespace("evil")
    evil_link = lab.veth(evil, b.ns)
    known = Key.generate()  # a peer of B whose private key the attacker holds
    b.add_peer(known, allowed_ips=["10.77.0.3/32"])

    assert a.ns.ping(TUN4[1], count=1, wait=5) == 1
    b.wait_handshake(a, timeout=5)
    a_endpoint = b.peer(a).endpoint
    assert b.listen_port is not None

    for target, count, duration in ((evil_link.b4, 20_000, 3.0), (evil_link.b6, 5_000, 1.5)):
        pinger = a.ns.spawn(
            ["ping", "-n", "-q", "-c", str(int(duration / 0.2)), "-i", "0.2", "-W", "1", TUN4[1]],
            log="ping-during-flood",
        )
        flood = lab.spawn_python(
            evil,
            "flood",
            "--to",
            target,
            "--port",
            str(b.listen_port),
            "--count",
            str(count),
            "--duration",
            str(duration),
            "--peer-key",
            b.key.public_b64,
            "--as-key",
            known.private_b64,
            log="flood",
        )
        assert flood.wait(timeout=duration + 60) == 0, flood.output()
        summary = json.loads(flood.output().splitlines()[-1])
        assert summary["sent"] >= count * 0.9, summary
        pinger.wait(timeout=30)
        m = re.search(r"(\d+) received", pinger.output())
        assert m is not None, pinger.output()
        assert int(m.group(1)) > 0, f"no ping got through during the flood at {target}"

        assert b.alive, f"{b} died:\n{b.log()}"
        assert a.alive
        assert b.peer(a).endpoint == a_endpoint
        assert b.peer(known).allowed_ips == ["10.77.0.3/32"]
        assert a.ns.ping(TUN4[1], count=3) == 3
        assert a.ns.ping(TUN6[1], count=2) == 2
        assert b.ns.ping(TUN4[0], count=2) == 2

    # B still completes a fresh handshake (A forgets its session by re-adding the peer); if
    # B is still "under load" A gets a cookie and retries after REKEY_TIMEOUT.
    hs = b.peer(a).latest_handshake
    a.remove_peer(b)
    a.add_peer(b, allowed_ips=[f"{TUN4[1]}/32", f"{TUN6[1]}/128"], endpoint=pair.endpoint("b"))
    assert a.ns.ping(TUN4[1], count=1, wait=12) == 1
    b.wait_handshake(a, timeout=5, newer_than=hs)
    assert b.ns.ping(TUN6[0], count=3) == 3
