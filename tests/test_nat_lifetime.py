"""Binding lifetime discovery (wgpy.nat.lifetime, RFC 5780 section 4.6): the keepalive chosen
from probe results, the answer parser on hostile input, and whole measurements over loopback
against the server's real STUN responder, behind a NAT that the server plays (it forgets a
port's mapping after a set idle time), an older server that ignores RESPONSE-PORT and one that
answers nothing."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stun_fakes import UdpStunServer

from wgpy.endpoint import Endpoint
from wgpy.mesh.server.stun import StunResponder
from wgpy.nat.lifetime import (
    MIN_KEEPALIVE,
    Lifetime,
    LifetimeWatch,
    binding_request,
    keepalive_for,
    measure,
    open_probe,
    outcome,
    parse_answer,
)
from wgpy.nat.relay import SO_MARK

T = TypeVar("T")
TXID = bytes(range(12))


def run(scenario: Callable[[], Awaitable[T]], limit: float = 20) -> T:
    return asyncio.run(asyncio.wait_for(scenario(), limit))  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the choice


@pytest.mark.parametrize(
    ("survived", "keepalive"),
    [
        (None, 25.0),  # not measured: the default
        (35.0, 25.0),  # never above the default
        (28.0, 22.4),
        (12.0, 9.6),
        (4.0, 3.2),
        (0.0, MIN_KEEPALIVE),  # even the shortest probe died: never below ~1 s
        (1.0, MIN_KEEPALIVE),
    ],
)
def test_the_keepalive_is_a_safe_share_of_the_longest_idle_time_survived(
    survived: float | None, keepalive: float
) -> None:
    assert keepalive_for(survived) == keepalive
    assert keepalive_for(survived, default=10.0) == min(keepalive, 10.0)


def test_the_outcome_is_the_longest_survivor_below_the_shortest_death() -> None:
    assert outcome({2: True, 4: True, 6: False}) == (4, 6)
    assert outcome({2: True, 4: True, 6: True}) == (6, None)
    assert outcome({2: False}) == (0.0, 2)
    # a lost answer at 4 s: the figure gets shorter, never longer
    assert outcome({2: True, 4: False, 6: True}) == (2, 4)
    assert outcome({}) == (None, None)


# ---------------------------------------------------------------------- the messages


def answer(txid: bytes, port: int, attrs: bytes = b"") -> bytes:
    value = struct.pack("!BBHI", 0, 1, port ^ 0x2112, 0xC0000201 ^ 0x2112A442)
    body = attrs + struct.pack("!HH", 0x0020, 8) + value
    return struct.pack("!HHI", 0x0101, len(body), 0x2112A442) + txid + body


def test_requests_carry_response_port_as_rfc_5780_writes_it() -> None:
    assert binding_request(TXID) == bytes.fromhex("0001 0000 2112a442") + TXID
    assert binding_request(TXID, 40001) == (
        bytes.fromhex("0001 0008 2112a442") + TXID + bytes.fromhex("0027 0004 9c41 0000")
    )


def test_answers_are_read_with_their_mapped_port() -> None:
    assert parse_answer(answer(TXID, 32853)) == (TXID, 32853)
    software = struct.pack("!HH", 0x8022, 3) + b"abc\x00"
    assert parse_answer(answer(TXID, 9, software)) == (TXID, 9)
    data = bytearray(answer(TXID, 9))
    data[1] = 0x11  # an error response
    assert parse_answer(bytes(data)) is None
    assert parse_answer(answer(TXID, 9)[:-1]) is None
    assert parse_answer(binding_request(TXID)) is None


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_are_no_answer_and_raise_nothing(data: bytes) -> None:
    parsed = parse_answer(data)
    assert parsed is None or (len(parsed[0]) == 12 and 0 < parsed[1] < 65536)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=24)), max_size=8))
def test_stun_shaped_answers_with_any_attributes_raise_nothing(
    attrs: list[tuple[int, bytes]],
) -> None:
    body = b"".join(
        struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) % 4)
        for kind, value in attrs
    )
    parse_answer(struct.pack("!HHI", 0x0101, len(body), 0x2112A442) + TXID + body)


# ---------------------------------------------------------------------- whole measurements


class ForgetfulServer(asyncio.DatagramProtocol):
    """The server's real STUN responder on loopback, with a NAT in front of it as the server
    would see one: an answer goes out only to a port that sent something within the last
    ``lifetime`` seconds (a port that sent nothing yet has no mapping either)."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self.responder = StunResponder(rate=1000, burst=1000)
        self.last_sent: dict[int, float] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = asyncio.get_running_loop().time()
        self.last_sent[addr[1]] = now
        reply = self.responder.respond(data, (addr[0], addr[1]))
        if reply is None or self.transport is None:
            return
        if now - self.last_sent.get(reply[1], float("-inf")) > self.lifetime:
            return  # the NAT forgot that port's mapping: the answer is dropped there
        self.last_sent[reply[1]] = now  # the answer refreshes the mapping on its way in
        self.transport.sendto(reply[0], (addr[0], reply[1]))


async def forgetful(lifetime: float) -> tuple[ForgetfulServer, Endpoint]:
    loop = asyncio.get_running_loop()
    transport, server = await loop.create_datagram_endpoint(
        lambda: ForgetfulServer(lifetime), local_addr=("127.0.0.1", 0)
    )
    return server, Endpoint("127.0.0.1", transport.get_extra_info("sockname")[1])


TIMES = (0.2, 0.4, 0.6, 0.9, 1.3)


def test_a_mapping_that_lives_half_a_second_is_measured_and_the_rest_not_waited_for() -> None:
    async def scenario() -> Lifetime:
        server, address = await forgetful(0.5)
        try:
            return await measure(address, times=TIMES, default=25.0)
        finally:
            assert server.transport is not None
            server.transport.close()

    result = run(scenario)
    assert result.error is None
    assert (result.survived, result.died) == (0.4, 0.6)
    assert result.keepalive == MIN_KEEPALIVE  # 0.8 x 0.4 s, but never below ~1 s
    assert result.took < 0.6 + 1.0 + 0.5  # the probes at 0.9 and 1.3 s were not waited for


def test_a_mapping_that_outlives_every_probe_keeps_the_default() -> None:
    async def scenario() -> Lifetime:
        server, address = await forgetful(60)
        try:
            return await measure(address, times=TIMES, default=0.9)
        finally:
            assert server.transport is not None
            server.transport.close()

    result = run(scenario)
    assert (result.survived, result.died, result.error) == (1.3, None, None)
    assert result.keepalive == 0.9  # never above the default


def test_an_older_server_that_answers_the_sender_is_given_up_on_quietly() -> None:
    """A server without RESPONSE-PORT walks over the attribute and answers the sender."""

    async def scenario() -> Lifetime:
        server = await UdpStunServer.start()
        try:
            return await measure(Endpoint(*server.key), times=TIMES, default=25.0)
        finally:
            server.close()

    result = run(scenario)
    assert result.survived is None and result.keepalive == 25.0
    assert result.error is not None and "ignores RESPONSE-PORT" in result.error


def test_a_server_that_answers_nothing_is_given_up_on_quietly() -> None:
    async def scenario() -> Lifetime:
        loop = asyncio.get_running_loop()
        silent, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        try:
            address = Endpoint("127.0.0.1", silent.get_extra_info("sockname")[1])
            return await measure(address, times=TIMES, default=25.0, timeout=0.5)
        finally:
            silent.close()

    result = run(scenario)
    assert result.survived is None and result.keepalive == 25.0
    assert result.error is not None and "did not answer" in result.error
    assert result.took < 1.0


def test_the_watch_measures_once_servers_are_known_and_again_when_the_network_changes() -> None:
    async def scenario() -> list[Lifetime]:
        server, address = await forgetful(0.5)
        servers: list[Endpoint] = []
        results: list[Lifetime] = []
        measured = asyncio.Event()

        async def quick(endpoint: Endpoint, **kwargs: Any) -> Lifetime:
            return await measure(endpoint, times=TIMES, **kwargs)

        def heard(result: Lifetime) -> None:
            results.append(result)
            measured.set()

        watch = LifetimeWatch(lambda: servers, heard, measure=quick)
        task = asyncio.ensure_future(watch.run())
        try:
            await asyncio.sleep(0.2)
            assert results == []  # no STUN server known yet
            servers.append(address)
            watch.changed()
            await asyncio.wait_for(measured.wait(), 5)
            measured.clear()
            watch.changed()  # a new network: measured again at once
            await asyncio.wait_for(measured.wait(), 5)
            assert watch.last is results[-1]
            return results
        finally:
            task.cancel()
            assert server.transport is not None
            server.transport.close()

    results = run(scenario)
    assert [(r.survived, r.died) for r in results] == [(0.4, 0.6), (0.4, 0.6)]


# ---------------------------------------------------------------------- the firewall mark


@pytest.mark.skipif(os.geteuid() != 0, reason="SO_MARK needs CAP_NET_ADMIN")
def test_the_probe_sockets_carry_the_wireguard_sockets_firewall_mark() -> None:
    async def scenario() -> tuple[int, int]:
        marks = []
        for fwmark in (0x5157, 0):
            probe = await open_probe(("127.0.0.1", 3478), socket.AF_INET, fwmark)
            assert probe.transport is not None
            try:
                sock = probe.transport.get_extra_info("socket")
                marks.append(sock.getsockopt(socket.SOL_SOCKET, SO_MARK))
            finally:
                probe.transport.close()
        return marks[0], marks[1]

    assert run(scenario) == (0x5157, 0)


def test_the_watch_measures_with_the_bind_s_mark_at_the_time() -> None:
    async def scenario() -> list[int]:
        server, address = await forgetful(0.5)
        mark = [0x11]
        seen: list[int] = []
        measured = asyncio.Event()

        async def recording(endpoint: Endpoint, **kwargs: Any) -> Lifetime:
            seen.append(kwargs["fwmark"])
            kwargs["fwmark"] = 0  # the real measurement, unmarked (no root needed)
            return await measure(endpoint, times=TIMES, **kwargs)

        watch = LifetimeWatch(
            lambda: [address], lambda _: measured.set(), measure=recording, fwmark=lambda: mark[0]
        )
        task = asyncio.ensure_future(watch.run())
        try:
            await asyncio.wait_for(measured.wait(), 5)
            measured.clear()
            mark[0] = 0x22  # the bind's mark changed: the next measurement carries it
            watch.changed()
            await asyncio.wait_for(measured.wait(), 5)
            return seen
        finally:
            task.cancel()
            assert server.transport is not None
            server.transport.close()

    assert run(scenario) == [0x11, 0x22]
