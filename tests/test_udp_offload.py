"""UDP segmentation offloads on loopback: runs go out as one GSO send, glued runs come back
apart, order and content are kept, and a socket whose GSO fails falls back to one at a time.
Answers leave from the local address a datagram arrived at (all of 127/8 is local on lo), and
from the routing table's choice once that address is not local any more."""

from __future__ import annotations

import errno
import os
import socket
import time

import pytest

from wgpy.device.udp import GSO_MAX_SEGMENTS, UdpBind, sticky_source


def receiver(address: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, 0))
    sock.settimeout(2)
    return sock


def drain(sock: socket.socket, count: int) -> list[bytes]:
    return [sock.recv(65535) for _ in range(count)]


def test_a_run_to_one_endpoint_arrives_as_separate_datagrams_in_order() -> None:
    bind, sink = UdpBind(0), receiver()
    try:
        to = ("127.0.0.1", sink.getsockname()[1])
        run = [os.urandom(1452) for _ in range(GSO_MAX_SEGMENTS + 6)] + [os.urandom(96)]
        bind.send_batch([(d, to) for d in run])
        assert drain(sink, len(run)) == run
        assert bind.send_errors == 0 and not bind.gso_off
    finally:
        bind.close()
        sink.close()


def test_mixed_sizes_and_endpoints_keep_their_order() -> None:
    bind, one, two = UdpBind(0), receiver(), receiver()
    try:
        to1 = ("127.0.0.1", one.getsockname()[1])
        to2 = ("127.0.0.1", two.getsockname()[1])
        sizes = [1452, 1452, 96, 1452, 1452, 1452, 200, 300, 300, 64]
        sent = [(os.urandom(n), to1 if i % 4 != 3 else to2) for i, n in enumerate(sizes)]
        bind.send_batch(sent)
        for sock, to in ((one, to1), (two, to2)):
            want = [d for d, ep in sent if ep == to]
            assert drain(sock, len(want)) == want
    finally:
        bind.close()
        one.close()
        two.close()


def test_a_glued_run_is_read_back_apart_in_one_call() -> None:
    sender, bind = UdpBind(0), UdpBind(0)
    try:
        run = [os.urandom(1452) for _ in range(20)] + [os.urandom(700)]
        assert bind.v4 is not None
        sender.send_batch([(d, ("127.0.0.1", bind.port)) for d in run])
        got: list[bytes] = []
        sources: set[tuple[str, int]] = set()
        deadline = time.monotonic() + 2
        calls = 0
        while len(got) < len(run) and time.monotonic() < deadline:
            batch = bind.read_batch(bind.v4, limit=1)
            if batch:
                calls += 1
            got += [d for d, _ in batch]
            sources |= {ep for _, ep in batch}
        assert got == run
        # every part carries the sender and the address it arrived at
        assert sources == {("127.0.0.1", sender.port, sticky_source("127.0.0.1"))}
        # loopback hands a GSO send to a GRO socket whole: one receive call held the run
        assert calls == 1
    finally:
        sender.close()
        bind.close()


class RefusesGso:
    """A socket whose GSO send fails as on a device that cannot segment."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.sent: list[bytes] = []

    def sendmsg(self, *args: object) -> int:
        raise OSError(self.code, os.strerror(self.code))

    def sendto(self, data: bytes, address: object) -> int:
        self.sent.append(data)
        return len(data)


@pytest.mark.parametrize("code", [errno.EIO, errno.EMSGSIZE, errno.EINVAL])
def test_gso_refused_means_one_at_a_time_from_then_on(code: int) -> None:
    bind = UdpBind(0)
    real = bind.v4
    try:
        fake = RefusesGso(code)
        bind.v4 = fake  # type: ignore[assignment]
        run = [os.urandom(1452) for _ in range(5)]
        bind.send_batch([(d, ("127.0.0.1", 9)) for d in run])
        assert fake.sent == run and bind.send_errors == 0
        assert fake in bind.gso_off  # type: ignore[comparison-overlap]
        bind.send_batch([(d, ("127.0.0.1", 9)) for d in run])  # no second GSO attempt
        assert fake.sent == run + run
    finally:
        bind.v4 = real
        bind.close()


def test_other_gso_errors_count_every_datagram_lost() -> None:
    bind = UdpBind(0)
    real = bind.v4
    try:
        fake = RefusesGso(errno.ENOBUFS)  # a full queue: lossy, not a missing feature
        bind.v4 = fake  # type: ignore[assignment]
        bind.send_batch([(os.urandom(1452), ("127.0.0.1", 9)) for _ in range(5)])
        assert fake.sent == [] and bind.send_errors == 5 and not bind.gso_off
    finally:
        bind.v4 = real
        bind.close()


@pytest.mark.parametrize(
    ("peer_address", "locals_"),
    [("127.0.0.1", ("127.0.0.2", "127.0.0.3")), ("::1", ("::1",))],
    ids=["ipv4", "ipv6"],
)
def test_answers_leave_from_the_address_the_datagram_arrived_at(
    peer_address: str, locals_: tuple[str, ...]
) -> None:
    bind, peer = UdpBind(0), receiver(peer_address)
    try:
        sock = bind.v6 if ":" in peer_address else bind.v4
        if sock is None:
            pytest.skip("no IPv6 on this host")
        for local in locals_:
            peer.sendto(b"hello", (local, bind.port))
            [(data, endpoint)] = read_all(bind, 1, sock)
            assert data == b"hello"
            assert endpoint == (peer_address, peer.getsockname()[1], sticky_source(local))
            # one datagram, and a run that goes as one GSO send (the source control message
            # beside UDP_SEGMENT): both from `local`, neither sent twice
            run = [os.urandom(1000) for _ in range(5)] + [os.urandom(10)]
            assert bind.send_batch([(b"one", endpoint)]) == ()
            assert bind.send_batch([(d, endpoint) for d in run]) == ()
            for want in [b"one", *run]:
                got, source = peer.recvfrom(65535)
                assert (got, source[:2]) == (want, (local, bind.port))
        assert bind.send_errors == 0 and not bind.gso_off
    finally:
        bind.close()
        peer.close()


@pytest.mark.parametrize("count", [1, 6], ids=["one", "gso-run"])
@pytest.mark.parametrize(
    ("address", "foreign"), [("127.0.0.1", "192.0.2.1"), ("::1", "2001:db8::1")], ids=["v4", "v6"]
)
def test_a_source_that_is_gone_is_reported_and_sent_around(
    count: int, address: str, foreign: str
) -> None:
    bind, peer = UdpBind(0), receiver(address)
    try:
        if ":" in address and bind.v6 is None:
            pytest.skip("no IPv6 on this host")
        to = (address, peer.getsockname()[1])
        gone = (*to, sticky_source(foreign))  # not an address of this host
        # `count` datagrams (one send, or one GSO run), then one more that starts a new run
        sent = [os.urandom(1000) for _ in range(count)] + [os.urandom(1200)]
        assert bind.send_batch([(d, gone) for d in sent]) == [gone]
        for want in sent:
            got, source = peer.recvfrom(65535)
            assert (got, source[:2]) == (want, (address, bind.port))
        assert bind.send_errors == 0 and not bind.gso_off  # EINVAL here was not about GSO
    finally:
        bind.close()
        peer.close()


class NoRoute:
    """A socket on a host that lost its route to the peer: every send fails alike."""

    def __init__(self) -> None:
        self.tries = 0

    def sendmsg(self, *args: object) -> int:
        self.tries += 1
        raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))

    def sendto(self, data: bytes, address: object) -> int:
        return self.sendmsg()


@pytest.mark.parametrize("count", [1, 6], ids=["one", "gso-run"])
def test_a_route_outage_keeps_the_source(count: int) -> None:
    """ENETUNREACH with a source and without it: the route is down, not the source, so
    the source is kept for when it comes back; the datagrams count as send errors."""
    bind = UdpBind(0)
    real = bind.v4
    try:
        fake = NoRoute()
        bind.v4 = fake  # type: ignore[assignment]
        endpoint = ("127.0.0.1", 9, sticky_source("127.0.0.1"))
        assert bind.send_batch([(os.urandom(1000), endpoint) for _ in range(count)]) == ()
        assert fake.tries == 2 and bind.send_errors == count and not bind.gso_off
    finally:
        bind.v4 = real
        bind.close()


def read_all(bind: UdpBind, count: int, sock: socket.socket) -> list[tuple[bytes, object]]:
    got: list[tuple[bytes, object]] = []
    deadline = time.monotonic() + 2
    while len(got) < count and time.monotonic() < deadline:
        got += bind.read_batch(sock)
    return got
