"""Configuration edge cases through the real `wg` tool, against each implementation alone."""

from __future__ import annotations

import base64
import os
import signal
from dataclasses import replace

import pytest

from .netns import (
    IMPLEMENTATIONS,
    Dump,
    Key,
    Lab,
    WgInterface,
    b64,
    clamp,
    unique_ifname,
    wait_for,
)

pytestmark = pytest.mark.root
impls = pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))

# Curve25519 points of small order (and non-canonical encodings of them): X25519 with any of
# them gives all zeros, so no handshake can be built with such a peer.
LOW_ORDER_POINTS = {
    "zero": "00" * 32,
    "one": "01" + "00" * 31,
    "order8a": "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "order8b": "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "p-1": "ec" + "ff" * 30 + "7f",
    "p": "ed" + "ff" * 30 + "7f",
    "p+1": "ee" + "ff" * 30 + "7f",
}


def single(lab: Lab, impl: str) -> WgInterface:
    return lab.wg(lab.namespace("a"), impl, listen_port=51820)


@impls
def test_own_private_key_of_a_peer_removes_that_peer(lab: Lab, impl: str) -> None:
    wg = single(lab, impl)
    k1, k2 = Key.generate(), Key.generate()
    wg.add_peer(k1, allowed_ips=["10.9.0.1/32"])
    wg.add_peer(k2, allowed_ips=["10.9.0.2/32"])
    assert set(wg.dump().peers) == {k1.public_b64, k2.public_b64}

    wg.set_private_key(k1)
    dump = wg.dump()
    assert dump.public_key == k1.public_b64
    assert set(dump.peers) == {k2.public_b64}


@pytest.mark.parametrize(
    "raw",
    [b"\xff" * 32, bytes(range(1, 33)), bytes.fromhex("07" + "00" * 30 + "ff")],
    ids=["all-ff", "counting", "low-bits-high-bit"],
)
@impls
def test_private_key_reads_back_clamped(lab: Lab, impl: str, raw: bytes) -> None:
    wg = single(lab, impl)
    wg.set_private_key(raw)
    dump = wg.dump()
    assert dump.private_key == b64(clamp(raw))
    assert dump.public_key == Key(clamp(raw)).public_b64


@impls
def test_zero_private_key_clears_it(lab: Lab, impl: str) -> None:
    wg = single(lab, impl)
    assert wg.dump().private_key is not None
    wg.set_private_key(bytes(32))
    dump = wg.dump()
    assert dump.private_key is None
    assert dump.public_key is None


@impls
def test_low_order_peer_keys_send_no_handshake(lab: Lab, impl: str) -> None:
    """Peers whose public key is a small-order point get no initiation; a normal one does."""
    wg = single(lab, impl)
    wg.add_address("10.9.0.1/32")
    low = {}
    for i, (name, hexkey) in enumerate(LOW_ORDER_POINTS.items(), start=10):
        pub = bytes.fromhex(hexkey)
        low[name] = wg.add_peer(pub, allowed_ips=[f"10.9.0.{i}/32"], endpoint="127.0.0.1:9")
    control = wg.add_peer(Key.generate(), allowed_ips=["10.9.0.2/32"], endpoint="127.0.0.1:9")
    peers = wg.dump().peers
    assert set(low.values()) | {control} == set(peers), "every peer was accepted"

    for i in range(10, 10 + len(low)):
        assert wg.ns.ping(f"10.9.0.{i}", count=1, wait=0.2) == 0
    assert wg.ns.ping("10.9.0.2", count=1, wait=0.2) == 0
    # The normal peer's initiation is counted (it goes to a closed loopback port) ...
    wait_for(lambda: wg.peer(control).tx > 0, timeout=5, what="an initiation to the control peer")
    # ... by then every packet to a low-order peer would have been counted too.
    sent = {name: wg.peer(pub).tx for name, pub in low.items()}
    assert sent == dict.fromkeys(low, 0)
    assert all(wg.peer(pub).latest_handshake == 0 for pub in low.values())
    assert wg.alive


def configuration(dump: Dump) -> Dump:
    """``dump`` as configured: the handshake time and byte counters zeroed."""
    peers = {key: replace(peer, latest_handshake=0, rx=0, tx=0) for key, peer in dump.peers.items()}
    return replace(dump, peers=peers)


@impls
def test_setconf_showconf_roundtrip(lab: Lab, impl: str) -> None:
    wg = single(lab, impl)
    iface, p1, p2 = Key.generate(), Key.generate(), Key.generate()
    psk = os.urandom(32)
    conf = f"""[Interface]
PrivateKey = {iface.private_b64}
ListenPort = 51999
FwMark = 0x2a

[Peer]
PublicKey = {p1.public_b64}
PresharedKey = {b64(psk)}
AllowedIPs = 10.9.1.0/24, 10.9.2.1/32, fd09:1::/64
Endpoint = 127.0.0.1:51001
PersistentKeepalive = 25

[Peer]
PublicKey = {p2.public_b64}
AllowedIPs = 0.0.0.0/0, ::/0
Endpoint = [::1]:51002
"""
    path = wg.workdir / "setconf.conf"
    path.write_text(conf)
    wg.wg("setconf", wg.name, str(path))
    wg.key = iface
    dump = wg.dump()
    assert dump.private_key == iface.private_b64
    assert dump.public_key == iface.public_b64
    assert dump.listen_port == 51999
    assert dump.fwmark == "0x2a"
    assert set(dump.peers) == {p1.public_b64, p2.public_b64}
    a, b = dump.peers[p1.public_b64], dump.peers[p2.public_b64]
    assert a.preshared_key == b64(psk) and b.preshared_key is None
    assert set(a.allowed_ips) == {"10.9.1.0/24", "10.9.2.1/32", "fd09:1::/64"}
    assert set(b.allowed_ips) == {"0.0.0.0/0", "::/0"}
    assert a.endpoint == "127.0.0.1:51001" and b.endpoint == "[::1]:51002"
    assert a.keepalive == 25 and b.keepalive is None

    # showconf feeds setconf: the same dump comes back.
    shown = wg.wg("showconf", wg.name).stdout
    path.write_text(shown)
    wg.wg("setconf", wg.name, str(path))
    # Compared without the traffic counters: a peer with a keepalive sends its first
    # handshake initiation at once, so tx moves between the two reads (wireguard-go: 1 in 8).
    assert configuration(wg.dump()) == configuration(dump)

    # setconf replaces: a config without p1 removes it; fwmark 0 (which `wg` sends) clears it.
    reduced = conf.split("[Peer]")
    path.write_text(reduced[0].replace("FwMark = 0x2a", "FwMark = 0") + "[Peer]" + reduced[2])
    wg.wg("setconf", wg.name, str(path))
    dump = wg.dump()
    assert set(dump.peers) == {p2.public_b64}
    assert dump.fwmark == "off"
    wg.set("fwmark", "0")


@impls
def test_wg_show_missing_interface_and_shutdown(lab: Lab, impl: str) -> None:
    ns = lab.namespace("a")
    missing = unique_ifname()
    assert ns.run(["wg", "show", missing], check=False).returncode != 0

    # SIGTERM: the daemon exits, its interface goes, `wg show` fails.
    wg = lab.wg(ns, impl)
    assert wg.wg("show", wg.name).returncode == 0
    assert wg.proc is not None
    wg.proc.signal(signal.SIGTERM)
    wg.proc.wait(timeout=10)
    wait_for(
        lambda: ns.ip("link", "show", wg.name, check=False).returncode != 0,
        timeout=5,
        what=f"{wg.name} to disappear",
    )
    assert wg.wg("show", wg.name, check=False).returncode != 0
    assert wg.name not in ns.run(["wg", "show", "interfaces"]).stdout.split()

    # `ip link del` (what wg-quick down does for a userspace interface) stops the daemon.
    wg2 = lab.wg(ns, impl)
    assert wg2.proc is not None
    ns.ip("link", "del", wg2.name)
    wg2.proc.wait(timeout=10)
    assert wg2.wg("show", wg2.name, check=False).returncode != 0


def test_low_order_points_are_low_order() -> None:
    """The table above really lists points whose X25519 result is all zeros."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )

    k = X25519PrivateKey.generate()
    for hexkey in LOW_ORDER_POINTS.values():
        with pytest.raises(ValueError):
            k.exchange(X25519PublicKey.from_public_bytes(bytes.fromhex(hexkey)))
    assert base64.b64encode(bytes(32)).decode() == "A" * 43 + "="
