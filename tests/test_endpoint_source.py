"""The local source of an endpoint, in the core: answers go back to the endpoint (source
included) that the peer's last authenticated packet arrived at, and the source is dropped where
the kernel drops it (handshake retransmits, a new handshake after silence, a send that failed,
`wg set ... endpoint`, a new listen port or fwmark).

The shell's endpoints are ``(host, port)`` or ``(host, port, source)``; the core never looks
inside ``source``, so strings stand in for the shell's control messages here.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import pytest
from support import Node, ipv4_packet, pair

from wgpy.device.interface import Interface
from wgpy.protocol.constants import MESSAGE_INITIATION_TYPE
from wgpy.protocol.device import Datagram, Device
from wgpy.protocol.peer import without_source
from wgpy.uapi.protocol import apply_set


def initiations(out: list[Datagram]) -> list[object]:
    return [endpoint for data, endpoint in out if data[0] == MESSAGE_INITIATION_TYPE]


def with_source(node: Node, source: str) -> tuple[object, ...]:
    return (*node.address, source)  # type: ignore[misc]


def test_answers_go_where_the_last_packet_arrived() -> None:
    _, a, b, _ = pair()
    a.device.send_packets([ipv4_packet(a.inner, b.inner, b"hi")], 0.0)
    [(initiation, _)] = a.device.datagrams_to_send()
    first = with_source(a, "b's address 1")
    b.device.receive_datagrams([(initiation, first)], 0.0)
    [(response, to)] = b.device.datagrams_to_send()
    assert to == first  # the response leaves from where the initiation arrived
    assert b.device.peers[a.public].endpoint == first

    a.device.receive_datagrams([(response, b.address)], 0.0)
    data = a.device.datagrams_to_send()  # the staged packet, now encrypted
    second = with_source(a, "b's address 2")
    b.device.receive_datagrams([(d, second) for d, _ in data], 0.1)
    assert b.device.peers[a.public].endpoint == second  # roaming moves the source too
    b.device.send_packets([ipv4_packet(b.inner, a.inner, b"reply")] * 3, 0.2)
    assert [to for _, to in b.device.datagrams_to_send()] == [second] * 3


def test_forget_source_touches_only_peers_at_that_endpoint() -> None:
    _, a, b, _ = pair()
    peer = b.device.peers[a.public]
    here = with_source(a, "gone")
    peer.endpoint = here
    b.device.forget_source(with_source(a, "another"))
    b.device.forget_source(a.address)  # no source: nothing to forget
    assert peer.endpoint == here
    b.device.forget_source(here)
    assert peer.endpoint == a.address
    assert without_source(a.address) is a.address


def test_a_handshake_retransmit_drops_the_source() -> None:
    _, a, b, _ = pair()
    peer = b.device.peers[a.public]
    peer.endpoint = with_source(a, "stale")
    b.device.send_packets([ipv4_packet(b.inner, a.inner)], 0.0)
    assert initiations(b.device.datagrams_to_send()) == [with_source(a, "stale")]
    deadline = b.device.get_timer()
    assert deadline is not None
    b.device.handle_timer(deadline)  # no response came: the retransmit
    assert initiations(b.device.datagrams_to_send()) == [a.address]
    assert peer.endpoint == a.address


def test_a_new_handshake_after_silence_drops_the_source() -> None:
    wire, a, b, _ = pair()
    wire.send(a, [ipv4_packet(a.inner, b.inner)], 0.0)
    wire.run(0.0)
    wire.advance(30.0)  # the first exchange's timers play out
    peer = b.device.peers[a.public]
    peer.endpoint = with_source(a, "stale")
    b.device.send_packets([ipv4_packet(b.inner, a.inner, b"unanswered")], 31.0)
    assert [to for _, to in b.device.datagrams_to_send()] == [with_source(a, "stale")]
    found: list[object] = []
    for _ in range(20):  # nothing comes back: KEEPALIVE_TIMEOUT + REKEY_TIMEOUT later
        deadline = b.device.get_timer()
        assert deadline is not None and deadline < 60
        b.device.handle_timer(deadline)
        found = initiations(b.device.datagrams_to_send())
        if found:
            break
    assert found == [a.address]


@dataclass
class Target:
    """Just enough of an interface for the control protocol to configure ``device``."""

    device: Device
    listen_port: int = 0
    fwmark: int = 0

    def set_listen_port(self, port: int) -> None:
        self.listen_port = port

    def set_fwmark(self, mark: int) -> None:
        self.fwmark = mark

    def now(self) -> float:
        return 0.0

    def flush(self) -> None:
        pass


def test_wg_set_endpoint_drops_the_source_even_for_the_same_address() -> None:
    _, a, b, _ = pair()
    peer = b.device.peers[a.public]
    peer.endpoint = with_source(a, "learned")
    host, port = a.address  # type: ignore[misc]
    line = f"endpoint={host}:{port}"
    assert apply_set(Target(b.device), ["public_key=" + a.public.hex(), line]) == 0
    assert peer.endpoint == (host, port)  # a new endpoint from configuration has no source


class IdleTun:
    """A TUN stand-in that never has a packet: the interface needs only its descriptor."""

    name = "idle0"
    mtu = 1420

    def __init__(self) -> None:
        self._r, self._w = os.pipe()

    def fileno(self) -> int:
        return self._r

    def read_batch(self, limit: int) -> list[bytes]:
        return []

    def write_batch(self, packets: object) -> None:
        pass

    def close(self) -> None:
        os.close(self._r)
        os.close(self._w)
        self._r = -1


WITH_SOURCE = ("192.0.2.1", 51820, "src")


def sources_after(change: str) -> list[object]:
    """A peer's endpoint (with a source) after each of: the same setting again, a new one."""

    async def scenario() -> list[object]:
        iface = Interface("idle0", tun=IdleTun())  # type: ignore[arg-type]
        peer = iface.device.add_peer(os.urandom(32), endpoint=WITH_SOURCE)
        seen = []
        try:
            for value in (0, 7) if change == "fwmark" else (iface.listen_port, 0):
                peer.endpoint = WITH_SOURCE
                if change == "fwmark":
                    iface.set_fwmark(value)
                else:
                    iface.set_listen_port(value)
                seen.append(peer.endpoint)
        finally:
            iface.close()
        return seen

    return asyncio.run(scenario())


def test_a_new_listen_port_drops_every_source() -> None:
    assert sources_after("listen_port") == [WITH_SOURCE, WITH_SOURCE[:2]]


@pytest.mark.skipif(os.geteuid() != 0, reason="a socket mark needs CAP_NET_ADMIN")
def test_a_new_fwmark_drops_every_source() -> None:
    assert sources_after("fwmark") == [WITH_SOURCE, WITH_SOURCE[:2]]
