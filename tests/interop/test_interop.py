"""Two WireGuard implementations talk through a veth link between two namespaces.

Every test runs for each pair (side A, side B) of implementations in PAIRS; the pair
("wireguard-go", "wireguard-go") is the harness's control (`-m control`).
"""

from __future__ import annotations

import json
import os

import pytest

from .netns import (
    PAIRS,
    PYTHON,
    TRAFFIC,
    TUN4,
    TUN6,
    Key,
    Lab,
    b64,
    endpoint_str,
    iperf3_json,
    make_pair,
    wait_for,
)

pytestmark = pytest.mark.root
pairs = pytest.mark.parametrize(("impl_a", "impl_b"), PAIRS)


@pytest.mark.parametrize("initiator", ["a", "b"], ids=["a-initiates", "b-initiates"])
@pytest.mark.parametrize("underlay", [4, 6], ids=["underlay4", "underlay6"])
@pairs
def test_handshake_and_ping(
    lab: Lab, impl_a: str, impl_b: str, underlay: int, initiator: str
) -> None:
    """Only the initiator knows an endpoint; the responder learns it from the handshake."""
    responder = "b" if initiator == "a" else "a"
    pair = make_pair(
        lab,
        impl_a,
        impl_b,
        underlay=underlay,
        a_knows_b=initiator == "a",
        b_knows_a=initiator == "b",
    )
    ini, resp = pair.side(initiator), pair.side(responder)
    i, r = (0, 1) if initiator == "a" else (1, 0)

    assert ini.peer(resp).latest_handshake == 0
    assert resp.peer(ini).latest_handshake == 0
    assert resp.peer(ini).endpoint is None

    # The first packet is staged while the handshake runs, then delivered.
    assert ini.ns.ping(TUN4[r], count=1, wait=5) == 1
    ini.wait_handshake(resp, timeout=5)
    resp.wait_handshake(ini, timeout=5)
    assert resp.peer(ini).endpoint == pair.endpoint(initiator)
    assert ini.peer(resp).endpoint == pair.endpoint(responder)

    for dst in (TUN4[r], TUN6[r]):
        assert ini.ns.ping(dst, count=3) == 3, f"{initiator} -> {dst}"
    for dst in (TUN4[i], TUN6[i]):
        assert resp.ns.ping(dst, count=3) == 3, f"{responder} -> {dst}"

    for me, other in ((ini, resp), (resp, ini)):
        info = me.peer(other)
        assert info.rx > 0 and info.tx > 0, f"{me}: {info}"


@pairs
@pytest.mark.parametrize("inner", ["ipv4", "ipv6"])
def test_tcp_transfer_50mb(lab: Lab, impl_a: str, impl_b: str, inner: str) -> None:
    """50 MiB over TCP from A to B through the tunnel arrive intact (sha256 on both ends),
    over IPv4 and IPv6 inside: a wgpy receiver writes them as coalesced super-packets."""
    to = TUN4[1] if inner == "ipv4" else TUN6[1]
    pair = make_pair(lab, impl_a, impl_b)
    size, port = 50 * 2**20, 5001
    assert pair.a.ns.ping(TUN4[1], count=1, wait=5) == 1
    wait_for(lambda: pair.a.ns.ping(TUN6[1], count=1, wait=2) == 1, timeout=10, what="IPv6")

    receiver = lab.spawn_python(pair.b.ns, "recv", "--bind", to, "--port", str(port), log="recv")
    wait_for(lambda: pair.b.ns.tcp_listening(port), timeout=10, what="the receiver to listen")
    result = pair.a.ns.run(
        [PYTHON, str(TRAFFIC), "send", "--to", to, "--port", str(port), "--bytes", str(size)],
        timeout=120,
    )
    sent = json.loads(result.stdout.splitlines()[-1])
    assert receiver.wait(timeout=30) == 0, receiver.output()
    received = json.loads(receiver.output().splitlines()[-1])
    assert received == sent
    assert received["bytes"] == size


@pairs
def test_iperf3_parallel_streams(lab: Lab, impl_a: str, impl_b: str) -> None:
    """iperf3 -P 4 -t 3 from A to B completes without error (no throughput assertion)."""
    pair = make_pair(lab, impl_a, impl_b)
    port = 5201
    assert pair.a.ns.ping(TUN4[1], count=1, wait=5) == 1
    server = pair.b.ns.spawn(
        ["iperf3", "-s", "-1", "-B", TUN4[1], "-p", str(port)], log="iperf3-server"
    )
    wait_for(lambda: pair.b.ns.tcp_listening(port), timeout=10, what="iperf3 -s to listen")
    result = pair.a.ns.run(
        [
            "iperf3",
            "-c",
            TUN4[1],
            "-p",
            str(port),
            "-P",
            "4",
            "-t",
            "3",
            "-J",
            "--connect-timeout",
            "5000",
        ],
        check=False,
        timeout=60,
    )
    data = iperf3_json(result)
    assert result.returncode == 0 and "error" not in data, data.get("error", result.stderr)
    assert len(data["end"]["streams"]) == 4
    assert data["end"]["sum_received"]["bytes"] > 0
    assert server.wait(timeout=15) == 0, server.output()


@pytest.mark.parametrize("underlay", [4, 6], ids=["underlay4", "underlay6"])
@pairs
def test_roaming(lab: Lab, impl_a: str, impl_b: str, underlay: int) -> None:
    """A changes its underlay address and listen port; B follows A's authenticated packets."""
    pair = make_pair(lab, impl_a, impl_b, underlay=underlay)
    a, b, link = pair.a, pair.b, pair.link
    assert a.ns.ping(TUN4[1], count=1, wait=5) == 1
    b.wait_handshake(a, timeout=5)
    assert b.peer(a).endpoint == pair.endpoint("a")

    if underlay == 4:
        old, new, plen, extra = link.a4, link.a4.rsplit(".", 1)[0] + ".3", link.prefix4, []
    else:
        old, new, plen, extra = link.a6, link.a6[:-1] + "3", link.prefix6, ["nodad"]
    # Delete first: deleting a primary IPv4 address also deletes its secondaries.
    a.ns.ip("addr", "del", f"{old}/{plen}", "dev", link.a_dev)
    a.ns.ip("addr", "add", f"{new}/{plen}", "dev", link.a_dev, *extra)
    a.set_listen_port(51830)
    assert a.dump().listen_port == 51830
    new_endpoint = endpoint_str(new, 51830)

    wait_for(
        lambda: a.ns.ping(TUN4[1], count=1, wait=1) == 1,
        timeout=15,
        interval=0.2,
        what="traffic from A after it moved",
    )
    assert b.peer(a).endpoint == new_endpoint
    for dst in (TUN4[0], TUN6[0]):
        assert b.ns.ping(dst, count=3) == 3, f"B -> {dst} at A's new endpoint"


@pairs
def test_allowed_ips_filter_inner_source(lab: Lab, impl_a: str, impl_b: str) -> None:
    """A sends with a third peer's address as inner source: B drops it, the rest goes on."""
    pair = make_pair(lab, impl_a, impl_b)
    a, b = pair.a, pair.b
    third = Key.generate()
    spoof4, spoof6 = "10.77.0.3", "fd77::3"
    b.add_peer(third, allowed_ips=[f"{spoof4}/32", f"{spoof6}/128"])
    a.add_address(f"{spoof4}/32")
    a.add_address(f"{spoof6}/128")

    # A now has two addresses of each family on its tunnel: pick the source explicitly.
    assert a.ns.ping(TUN4[1], count=3, source=TUN4[0]) == 3
    b.wait_handshake(a, timeout=5)
    for src, real, dst in ((spoof4, TUN4[0], TUN4[1]), (spoof6, TUN6[0], TUN6[1])):
        tx_before = a.peer(b).tx
        assert a.ns.ping(dst, count=3, wait=1, source=src) == 0, f"B answered {src}"
        assert a.peer(b).tx > tx_before, "A did not even send the spoofed packets"
        assert b.peer(third).rx == 0 and b.peer(third).latest_handshake == 0
        assert a.ns.ping(dst, count=3, source=real) == 3, "normal traffic after spoofed packets"

    # Control: once B allows those addresses for A (taking them from the third peer), the
    # very same pings are answered.
    b.add_peer(
        a,
        allowed_ips=[f"{TUN4[0]}/32", f"{TUN6[0]}/128", f"{spoof4}/32", f"{spoof6}/128"],
    )
    assert b.peer(third).allowed_ips == []
    assert a.ns.ping(TUN4[1], count=3, source=spoof4) == 3
    assert a.ns.ping(TUN6[1], count=3, source=spoof6) == 3


@pairs
def test_preshared_key(lab: Lab, impl_a: str, impl_b: str) -> None:
    """Mismatched preshared keys: initiations arrive but no session; matching ones: works."""
    psk_a, psk_b = os.urandom(32), os.urandom(32)
    pair = make_pair(lab, impl_a, impl_b, psk_a=psk_a, psk_b=psk_b)
    a, b = pair.a, pair.b
    assert a.peer(b).preshared_key == b64(psk_a)
    assert b.peer(a).preshared_key == b64(psk_b)

    assert a.ns.ping(TUN4[1], count=1, wait=1) == 0
    # The initiation reached B (and B answered it; psk enters only with the response).
    wait_for(lambda: b.peer(a).rx > 0, timeout=5, what="B to count A's initiation")
    assert a.ns.ping(TUN4[1], count=2, wait=1) == 0
    assert a.peer(b).latest_handshake == 0
    assert b.peer(a).latest_handshake == 0

    # Matching keys. Re-adding the peer on A resets its handshake state: it initiates at once.
    a.remove_peer(b)
    a.add_peer(
        b, allowed_ips=[f"{TUN4[1]}/32", f"{TUN6[1]}/128"], endpoint=pair.endpoint("b"), psk=psk_b
    )
    assert a.ns.ping(TUN4[1], count=1, wait=5) == 1
    a.wait_handshake(b, timeout=5)
    b.wait_handshake(a, timeout=5)
    assert b.ns.ping(TUN6[0], count=3) == 3
