"""The Bind seam: two whole Interfaces talk over MemoryBind (no sockets, no root), and the
demultiplexer that lets another protocol (STUN, for NAT traversal) share the WireGuard port,
on the memory bind and on the real UdpBind over loopback."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable

import pytest
from support import PipeTun, ipv4_packet

from wgpy.device.bind import Bind, is_wireguard
from wgpy.device.interface import Interface
from wgpy.device.memorybind import MemoryBind, MemoryNetwork
from wgpy.device.udp import UdpBind
from wgpy.endpoint import EndpointKey
from wgpy.protocol.crypto import generate_private_key, public_key

STUN_BINDING_REQUEST = bytes.fromhex("0001 0000 2112a442") + bytes(12)
STUN_SUCCESS = bytes.fromhex("0101 0000 2112a442") + bytes(12)
CHANNEL_DATA = bytes.fromhex("4000 0004 deadbeef")


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.001)


def test_memory_bind_is_a_bind() -> None:
    binds: list[Bind] = [MemoryBind(MemoryNetwork(), "192.0.2.1"), UdpBind(0)]
    for bind in binds:
        assert bind.port != 0
        bind.close()


def test_two_interfaces_handshake_and_exchange_data_in_memory() -> None:
    async def scenario() -> None:
        net = MemoryNetwork()
        key_a, key_b = generate_private_key(os.urandom), generate_private_key(os.urandom)
        tun_a, tun_b = PipeTun("mema"), PipeTun("memb")
        bind_a = MemoryBind(net, "192.0.2.1", 51820)
        bind_b = MemoryBind(net, "192.0.2.2", 51821)
        a = Interface("mema", private_key=key_a, tun=tun_a, bind=bind_a)  # type: ignore[arg-type]
        b = Interface("memb", private_key=key_b, tun=tun_b, bind=bind_b)  # type: ignore[arg-type]
        try:
            assert (a.listen_port, b.listen_port) == (51820, 51821)
            a.device.add_peer(
                public_key(key_b), endpoint=("192.0.2.2", 51821), allowed_ips=["10.0.0.2/32"]
            )
            b.device.add_peer(public_key(key_a), allowed_ips=["10.0.0.1/32"])  # learns a's
            ping = ipv4_packet("10.0.0.1", "10.0.0.2", b"ping")
            tun_a.push([ping])
            await until(lambda: tun_b.written == [ping])  # handshake, then the staged packet
            pong = ipv4_packet("10.0.0.2", "10.0.0.1", b"pong")
            tun_b.push([pong])
            await until(lambda: tun_a.written == [pong])
            assert b.device.peers[public_key(key_a)].endpoint == ("192.0.2.1", 51820)

            # a moves to another port (wg set listen-port): b follows its next packet
            a.set_listen_port(0)
            assert a.listen_port not in (0, 51820) and bind_a.port == a.listen_port
            tun_a.push([ping] * 3)
            await until(lambda: len(tun_b.written) == 4)
            assert b.device.peers[public_key(key_a)].endpoint == ("192.0.2.1", a.listen_port)
            assert net.lost == 0
        finally:
            a.close()
            b.close()
        assert not net.binds  # both ports released
        assert tun_a.fileno() < 0 and tun_b.fileno() < 0

    asyncio.run(scenario())


def test_memory_bind_demux_takes_what_is_not_wireguard() -> None:
    net = MemoryNetwork()
    bind, other = MemoryBind(net, "192.0.2.1"), MemoryBind(net, "192.0.2.9", 3478)
    seen: list[tuple[bytes, EndpointKey]] = []
    bind.demux = lambda data, endpoint: seen.append((data, endpoint))
    transport = b"\x04\0\0\0" + bytes(28)
    other.send_batch(
        [(STUN_SUCCESS, ("192.0.2.1", bind.port)), (transport, ("192.0.2.1", bind.port))]
    )
    other.send_batch([(CHANNEL_DATA, ("192.0.2.1", bind.port))])
    assert bind.read_batch(bind, 128) == [(transport, ("192.0.2.9", 3478))]
    assert seen == [(STUN_SUCCESS, ("192.0.2.9", 3478)), (CHANNEL_DATA, ("192.0.2.9", 3478))]
    other.send_batch([(b"x", ("192.0.2.77", 1))])  # nobody there
    assert net.lost == 1


@pytest.mark.parametrize(
    ("data", "wireguard"),
    [
        (b"\x01\0\0\0" + bytes(144), True),
        (b"\x02\0\0\0" + bytes(88), True),
        (b"\x03\0\0\0" + bytes(60), True),
        (b"\x04\0\0\0" + bytes(28), True),
        (b"\x05\0\0\0" + bytes(28), False),
        (b"\x01\0\0", False),
        (b"", False),
        (STUN_BINDING_REQUEST, False),
        (STUN_SUCCESS, False),
        (bytes.fromhex("0111 0000 2112a442") + bytes(12), False),  # an error response
        (CHANNEL_DATA, False),
    ],
)
def test_is_wireguard(data: bytes, wireguard: bool) -> None:
    assert is_wireguard(data) is wireguard


def test_udp_bind_demux_over_loopback() -> None:
    bind = UdpBind(0)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.bind(("127.0.0.1", 0))
        seen: list[tuple[bytes, EndpointKey]] = []
        transport = b"\x04\0\0\0" + bytes(28)
        sender.sendto(STUN_BINDING_REQUEST, ("127.0.0.1", bind.port))
        sender.sendto(transport, ("127.0.0.1", bind.port))
        assert bind.v4 is not None
        got = read(bind, bind.v4, 2)  # no demux: everything is WireGuard's
        assert [d for d, _ in got] == [STUN_BINDING_REQUEST, transport]
        bind.demux = lambda data, endpoint: seen.append((data, endpoint))
        sender.sendto(STUN_BINDING_REQUEST, ("127.0.0.1", bind.port))
        sender.sendto(transport, ("127.0.0.1", bind.port))
        got = read(bind, bind.v4, 1)
        assert [d for d, _ in got] == [transport]
        assert [d for d, _ in seen] == [STUN_BINDING_REQUEST]
        assert seen[0][1][:2] == sender.getsockname()  # with the sticky source, as WireGuard's
        # the answer goes out of the WireGuard socket
        bind.send_batch([(STUN_SUCCESS, seen[0][1])])
        sender.settimeout(2)
        assert sender.recvfrom(100) == (STUN_SUCCESS, ("127.0.0.1", bind.port))
    finally:
        sender.close()
        bind.close()


def read(bind: UdpBind, sock: socket.socket, count: int) -> list[tuple[bytes, EndpointKey]]:
    """Read until ``count`` datagrams reached WireGuard (loopback delivers at once; bounded)."""
    out: list[tuple[bytes, EndpointKey]] = []
    for _ in range(200):
        out += bind.read_batch(sock, 128)
        if len(out) >= count:
            break
        time.sleep(0.005)
    return out
